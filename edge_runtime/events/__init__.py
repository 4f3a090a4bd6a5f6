"""Events for a fleet: verdicts, jobs, model promotions and device status to MQTT and/or a
webhook, through an on-disk outbox so nothing is lost while the broker is away."""

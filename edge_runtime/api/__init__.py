"""HTTP API: endpoints -> services -> repositories -> SQLite."""

"""Business logic of the daemon, between the HTTP endpoints and the repositories."""

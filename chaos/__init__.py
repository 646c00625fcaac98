"""The chaos harness: workers killed and PostgreSQL restarted under load (see README.md)."""

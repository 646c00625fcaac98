"""The pgflow pytest plugin: fixtures ``pg_server``, ``pgflow_template``, ``db``, ``conn``."""

pytest_plugins = ["pgflow.testing"]

"""Shared pytest configuration: database fixtures come from pgflow.testing."""

from __future__ import annotations

pytest_plugins = ["pgflow.testing"]

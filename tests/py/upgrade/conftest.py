"""Fixtures of the upgrade tests (see upgrade_helpers)."""

from __future__ import annotations

from upgrade_helpers import new_db

__all__ = ["new_db"]

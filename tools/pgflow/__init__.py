"""pgflow: durable DAG workflows inside PostgreSQL (Python tools)."""

from __future__ import annotations

from pgflow.dsl import Flow

__version__ = "0.2.0"

__all__ = ["Flow", "__version__"]

"""Handlers of the example flows (plain functions: JSON in, JSON out)."""

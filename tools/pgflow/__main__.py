"""``python -m pgflow``: the ``pgflow`` command."""

from __future__ import annotations

from pgflow.cli import main

if __name__ == "__main__":  # pragma: no cover
    main(prog_name="pgflow")

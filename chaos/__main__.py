"""`python -m chaos [--short]`: see chaos/README.md."""

from __future__ import annotations

import sys

from chaos.harness import main

if __name__ == "__main__":
    sys.exit(main())

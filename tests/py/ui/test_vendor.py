"""The vendored Mermaid is the file VENDOR.md names: same sha256, same version, its licence."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

STATIC = Path(__file__).resolve().parents[3] / "tools" / "pgflow" / "ui" / "static"


def test_vendored_mermaid_matches_vendor_md() -> None:
    vendor = (STATIC / "VENDOR.md").read_text(encoding="utf-8")
    row = re.search(
        r"^\| `mermaid\.min\.js` \|[^|]*\| (?P<version>[0-9.]+) \|[^|]*"
        r"\| `(?P<sha>[0-9a-f]{64})` \|$",
        vendor,
        re.M,
    )
    assert row is not None, "VENDOR.md has no row for mermaid.min.js"
    data = (STATIC / "mermaid.min.js").read_bytes()
    assert hashlib.sha256(data).hexdigest() == row["sha"]
    assert f'"{row["version"]}"'.encode() in data, (
        "the file does not carry the version VENDOR.md names"
    )
    licence = (STATIC / "mermaid.LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in licence or "Permission is hereby granted" in licence

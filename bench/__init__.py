"""`make bench`: the pgflow benchmark harness (see bench/README.md)."""

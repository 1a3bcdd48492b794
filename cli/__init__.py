"""The `morphgen` command line (installed as the package morphgen.cli)."""

"""Data files: the embedded default model (installed as the package morphgen.assets)."""

"""The `morphgen` console script. The command line's modules (numpy, click, the commands)
are imported inside it, so that a Ctrl-C during their 0.2 s of imports ends in the one
line that a Ctrl-C later gives, not in a traceback of the import."""
from __future__ import annotations

import sys


def main() -> None:
    try:
        from .main import cli
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    cli(prog_name="morphgen")

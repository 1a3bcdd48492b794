"""The `morphgen` console script. The command line's modules (numpy, click, the commands)
are imported inside it, so that a Ctrl-C during their 0.2 s of imports ends in the one
line that a Ctrl-C later gives, not in a traceback of the import."""
from __future__ import annotations

import gc
import sys


def main() -> None:
    try:
        from .main import cli
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    try:
        cli(prog_name="morphgen")
    finally:
        # The command is over: its objects stay out of the interpreter's last garbage
        # collection, which numba's many type objects make cost 0.1-0.2 s of every exit.
        # Outputs are closed by now (the commands close what they write); only a
        # reference cycle's __del__ is skipped, which Python never promises at exit.
        gc.freeze()

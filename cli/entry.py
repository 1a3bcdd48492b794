"""The `morphgen` console script. The command line's modules (numpy, click, the commands)
are imported inside it, so that a Ctrl-C during their 0.2 s of imports ends in the one
line that a Ctrl-C later gives, not in a traceback of the import."""
from __future__ import annotations

import gc
import os
import sys
import warnings


def main() -> None:
    # numpy asks the kernel to back its large arrays with 2 MB pages (madvise). On a VM
    # that hands free memory back to its host (virtio free page reporting, which reports
    # exactly such 2 MB blocks), a fresh 2 MB page must first be backed by the host again:
    # on the 2-core VM a command's first 100 MB cost 0.5-0.7 s as often as not, 0.055 s in
    # plain 4 kB pages. That was up to a second of a Basel model's set-up (its bases, their
    # level-of-detail rows, the decoder's scaled copies). Most commands load a model, so
    # every command sets it, before numpy is imported; the processes it starts inherit it,
    # and a user's own setting wins. Once running, renders reuse their memory and take the
    # same time either way; a kernel whose huge pages are "always" on ignores the request.
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
    try:
        from morphgen.errors import ONE_LINE_WARNINGS, one_line_warning

        warnings.formatwarning = one_line_warning  # forked workers inherit it; spawned ones read the variable
        os.environ[ONE_LINE_WARNINGS] = "1"
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

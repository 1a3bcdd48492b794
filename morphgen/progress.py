"""Progress bars with rate and ETA (tqdm) that stay readable in log files: on a terminal
they refresh every second; when stderr is redirected (a log file, `nohup`, CI) they
print a line every 30 seconds instead of hundreds of carriage-return updates."""
from __future__ import annotations

import sys


def progress_bar(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 enabled: bool = True, leave: bool = False):
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, leave=leave,
                mininterval=1.0 if tty else 30.0, dynamic_ncols=tty)

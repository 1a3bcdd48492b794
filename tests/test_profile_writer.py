"""benchmarks/profile_writer.py runs against the current writer and render kernel: it
unpacks `fused_render`'s arguments by position, so a change of that signature fails here,
not in the next engineer's profiling session."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_profile_writer_prints_the_phases_and_the_kernel_steps(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "profile_writer.py"), "--size", "32",
                           "--per-id", "2", "--chunks", "1", "--reps", "2", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for line in ("render (numba kernel)", "decode", "PNG encode", "params file", "the rest",
                 "whole kernel, per image", "raster", "contour search", "edge blend"):
        assert line in out, (line, out)
    assert list(tmp_path.iterdir()) == []  # its temporary dataset removed

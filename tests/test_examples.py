"""Every script in examples/ runs (at tiny sizes) and prints what it shows, so none rots."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

RUNS = {
    "pose_sweep.py": (["--size", "32", "--step", "45"], r"identity 0, 5 views of 32 px .*\n.*yaw.*\n\s+-90\s+\d+/\d+"),
    "fit_photo.py": (["--size", "32", "--steps", "3"], r"step    2: pixels 0\.\d+, five points .* px, yaw .*\ntruth:"),
    "train_online.py": (["--ids", "8", "--steps", "3", "--batch-p", "4", "--batch-k", "2", "--size", "32",
                         "--workers", "1", "--every", "1"], r"step     2: loss \d+\.\d+, batch accuracy"),
    "arcface_loop.py": (["--ids", "8", "--steps", "2", "--batch-p", "4", "--batch-k", "2", "--input-size", "32",
                         "--workers", "0", "--frequent", "1"], r"step 2: loss \d+\.\d+, lr 0\.0000, 8 images"),
}


def test_every_example_is_tested():
    assert sorted(p.name for p in (REPO / "examples").glob("*.py")) == sorted(RUNS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_example_runs(name, tmp_path):
    args, pattern = RUNS[name]
    r = subprocess.run([sys.executable, str(REPO / "examples" / name), *args], capture_output=True, text=True,
                       cwd=tmp_path, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.search(pattern, r.stdout), r.stdout

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


BAD = {  # an option the API refuses: one line naming it, exit 2 (morphgen.one_line_errors)
    "pose_sweep.py": (["--size", "8"], "Error: --size 8 is out of range"),
    "fit_photo.py": (["--size", "8"], "Error: --size 8 is out of range"),
    "train_online.py": (["--ids", "0", "--workers", "0"], "Error: --ids must be >= 1, got 0"),
    "arcface_loop.py": (["--network", "foo", "--workers", "0"], "Error: unknown arch 'foo'"),
}


def test_every_example_is_tested_with_a_bad_option():
    assert sorted(BAD) == sorted(RUNS)


@pytest.mark.parametrize("name", sorted(BAD))
def test_example_bad_option_is_one_line(name, tmp_path):
    args, message = BAD[name]
    r = subprocess.run([sys.executable, str(REPO / "examples" / name), *args], check=False, capture_output=True, text=True,
                       cwd=tmp_path, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2
    assert r.stderr.strip().startswith(message) and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_fit_photo_unreadable_or_faceless_photo(tmp_path):
    import cv2
    import numpy as np

    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((64, 64, 3), 128, np.uint8))
    for photo, message in ((tmp_path / "missing.png", "not a readable image"), (grey, "MTCNN finds no face")):
        r = subprocess.run([sys.executable, str(REPO / "examples" / "fit_photo.py"), "--photo", str(photo),
                            "--size", "32"], check=False, capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert r.returncode == 2 and message in r.stderr.splitlines()[-1] and "Traceback" not in r.stderr

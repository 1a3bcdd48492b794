"""benchmarks/profile_command.py times a real `morphgen render` by wrapping the set-up steps
of `morphgen.dataset.run` and the workers' chunk tasks by name: a renamed step fails here,
not in the next engineer's profiling session."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_profile_command_times_each_setup_step_and_every_workers_chunks(tmp_path):
    out = tmp_path / "ds"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "profile_command.py"), "--ids", "6",
                           "--per-id", "2", "--size", "32", "--workers", "2", "--chunk-ids", "2", "--out", str(out),
                           "--quiet"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    for line in ("options checked, model loaded", "renderer: level of detail", "first render", "worker pool forked",
                 "workers: 12 images", "waited at the end", "the command took"):
        assert line in text, (line, text)
    table = text.split("waited at the end\n")[1].split("end, from")[0].splitlines()
    assert len(table) == 2 and sum(int(row.split()[3]) for row in table) == 1 + 2 * 2  # 3 chunks, the last 2 in 2 parts each
    assert (out / "manifest.json").is_file()


def test_profile_command_passes_a_bad_option_s_one_line_error_and_exit_code_through(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "profile_command.py"), "--ids", "0",
                           "--out", str(tmp_path / "ds")], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "--ids" in done.stderr


def test_profile_command_times_the_main_process_s_chunks_with_one_worker(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "profile_command.py"), "--ids", "2",
                           "--per-id", "2", "--size", "32", "--workers", "1", "--chunk-ids", "1",
                           "--out", str(tmp_path / "ds"), "--quiet"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    table = done.stdout.split("waited at the end\n")[1].split("end, from")[0].splitlines()
    assert len(table) == 1 and int(table[0].split()[3]) == 2  # one process, its 2 chunks

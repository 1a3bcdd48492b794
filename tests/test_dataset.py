"""`morphgen render` end to end: layout, determinism across workers, kill + resume, shards,
and the one-line errors for bad input."""
from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import make_tiny_model
from morphgen.cli.main import cli

# JSON Lines params: this module checks their lines (tests/test_params_parquet.py the Parquet form)
COMMON = ["--ids", "6", "--per-id", "3", "--chunk-ids", "2", "--size", "48", "--antialias", "1", "--quiet",
          "--params-format", "jsonl"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("model") / "tiny.npz"
    make_tiny_model(20, 24).save_npz(path)
    return str(path)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def python(code: str, *args: str, **kw) -> subprocess.CompletedProcess:
    """``python -c code args`` in a fresh process (no torch: the command may fork), its output captured."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          check=False, **kw)


def command_with(patch: str, *args: str, **kw) -> subprocess.CompletedProcess:
    """`morphgen ARGS` in a fresh process (:func:`python`) after ``patch``, the Python that
    puts a test's fault or probe into the command, run with os, signal, sys and time
    imported and the dataset package as ``d``, its chunks as ``c`` and its workers as ``w``."""
    prelude = ("import os, signal, sys, time\n"
               "import morphgen.dataset as d, morphgen.dataset.chunks as c, morphgen.dataset.workers as w\n"
               "from morphgen.cli.main import cli\n")
    return python(prelude + patch + "cli(sys.argv[1:])", *args, **kw)


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under images/ and params/ (what must be byte-identical)."""
    out = {}
    for sub in ("images", "params", "wds"):
        for p in sorted((root / sub).rglob("*")) if (root / sub).exists() else []:
            if p.is_file():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, model_file) -> Path:
    """One worker, every background texture drawn where it is used (no PoolPrefill)."""
    from morphgen.dataset import workers

    out = tmp_path_factory.mktemp("ref") / "ds"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(workers, "fork_pool_is_safe", lambda: False)
        r = invoke("render", "--model", model_file, *COMMON, "--out", out, "--workers", 1, "--outputs", "depth")
    assert r.exit_code == 0, r.output
    return out


def test_layout_manifest_and_params(reference):
    imgs = sorted((reference / "images").rglob("*.png"))
    rgb = [p for p in imgs if "_depth" not in p.name]
    assert len(rgb) == 18 and (reference / "images/000005/000005_0002.png").exists()
    assert (reference / "images/000005/000005_0002_depth.png").exists()
    m = json.loads((reference / "manifest.json").read_text())
    assert m["complete"] and m["counts"]["images"] == 18 and m["counts"]["chunks_done"] == 3
    assert len(m["model_sha256"]) == 64 and m["seed"] == 0
    def unique_keys(pairs):  # a params line is joined from two records: no key may appear twice
        assert len({k for k, _ in pairs}) == len(pairs), [k for k, _ in pairs]
        return dict(pairs)

    lines = [line for p in sorted((reference / "params").glob("*.jsonl")) for line in p.read_text().splitlines()]
    recs = [json.loads(line, object_pairs_hook=unique_keys) for line in lines]
    assert len(recs) == 18 and lines[0] == json.dumps(recs[0])
    r = recs[0]
    for key in ("identity", "sample", "shape", "color", "expression", "yaw", "pitch", "roll", "sh", "image",
                "landmarks5", "landmarks5_visible", "landmarks", "soft_label", "background_seed"):
        assert key in r
    assert len(r["landmarks5"]) == 5 and (reference / r["image"]).exists()
    assert not (reference / ".partial").exists()


def test_extend_json_joins_two_objects():
    from morphgen.dataset.chunks import _extend_json

    assert _extend_json(json.dumps({"a": [1.5, "x"]}), {"b": {"c": None}}) == json.dumps({"a": [1.5, "x"], "b": {"c": None}})
    for obj, more in (("{}", {"b": 1}), ('{"a": 1}', {})):
        with pytest.raises(ValueError):
            _extend_json(obj, more)


def test_workers_do_not_change_bytes(reference, tmp_path, model_file, monkeypatch):
    """Spawned workers (here, in a process that may hold torch) build their own renderer."""
    from morphgen import dataset

    monkeypatch.setattr(dataset, "fork_pool_is_safe", lambda: False)
    out = tmp_path / "ds2"
    r = invoke("render", "--model", model_file, *COMMON, "--out", out, "--workers", 2, "--outputs", "depth")
    assert r.exit_code == 0, r.output
    assert tree_hashes(out) == tree_hashes(reference)


def test_forked_workers_inherit_the_renderer_and_write_the_same_bytes(reference, tmp_path, model_file):
    """A command in a fresh process (no torch) forks its workers, which render with the
    main process's renderer: none builds its own (the spawned workers' set-up, made to fail
    here, is never called), and the bytes are those of one worker. The process has used
    OpenCV's thread pool first, which hangs a forked child that resizes it. Every
    background texture here comes from the PoolPrefill helper (made to finish: the whole
    pool) or the main process's warm-up render, none drawn by a worker, and the bytes are
    those of textures drawn in place."""
    out = tmp_path / "ds5"
    code = ("import cv2, numpy as np\n"
            "from morphgen.render.backgrounds import ProceduralBackgrounds as P\n"
            "cv2.setNumThreads(2); cv2.GaussianBlur(np.ones((2000, 2000), np.float32), (31, 31), 5)\n"
            "def no(*a, **k): raise SystemExit('a forked worker built its own renderer')\n"
            "w.worker_init = no\n"
            "def forks(job, workers, renderer=None):\n"
            "    assert renderer is not None and w.fork_pool_is_safe(), 'the pool would be spawned'\n"
            "    return w.local_pool(job, workers, renderer)\n"
            "d.local_pool = forks\n"
            "w._spare_core = lambda: True\n"
            "adopt = w.PoolPrefill.adopt\n"
            "def whole(self, wait=False):\n"
            "    n = adopt(self, wait=True)\n"
            "    missing = sum(t is None for pool in P._POOLS.values() for t in pool)\n"
            "    print(f'{n} textures prefilled, {missing} missing', file=sys.stderr)\n"
            "    P.draw_pool_texture = no\n"
            "    return n\n"
            "w.PoolPrefill.adopt = whole\n")
    args = ["render", "--model", model_file, *COMMON, "--out", str(out), "--workers", "2", "--outputs", "depth"]
    done = command_with(code, *args)
    assert done.returncode == 0, done.stderr
    assert "textures prefilled, 0 missing" in done.stderr and " 0 textures" not in done.stderr
    assert tree_hashes(out) == tree_hashes(reference)


def test_pool_prefill_draws_the_textures_drawn_in_place(monkeypatch):
    """The helper's textures (two pools: --backgrounds mixed) are those each pool draws
    itself, handed in read-only; one stopped early hands in what it finished."""
    from morphgen.dataset import workers
    from morphgen.render.backgrounds import ProceduralBackgrounds, texture_pools
    from morphgen.render.scene_backgrounds import SceneBackgrounds

    monkeypatch.setattr(workers, "fork_pool_is_safe", lambda: True)
    monkeypatch.setattr(workers, "_spare_core", lambda: True)  # also where the tests run on one core
    monkeypatch.setattr(ProceduralBackgrounds, "_POOLS", {})
    monkeypatch.setattr(SceneBackgrounds, "_POOLS", {})
    assert [type(p) for p in texture_pools("mixed")] == [ProceduralBackgrounds, SceneBackgrounds]
    assert texture_pools("plain") == [] and texture_pools("/no/such/folder") == []
    pools = [ProceduralBackgrounds(pool_size=12), SceneBackgrounds(pool_size=5)]
    prefill = workers.PoolPrefill(pools, 40)
    assert prefill.adopt(wait=True) == 17 and prefill.adopt() == 0
    for p in pools:
        for j in range(p.pool_size):
            tex = p.pool_texture(40, j)
            assert not tex.flags.writeable and np.array_equal(tex, p.draw_pool_texture(40, j))
    monkeypatch.setattr(ProceduralBackgrounds, "_POOLS", {})
    late = workers.PoolPrefill([ProceduralBackgrounds(pool_size=4000)], 128)
    drawn = late._parts[0][3]
    deadline = time.time() + 60
    while not drawn[:2].all() and time.time() < deadline:  # stopped once it has two, long before 4,000
        time.sleep(0.001)
    n = late.adopt()
    assert 2 <= n < 4000
    pool = ProceduralBackgrounds(pool_size=4000)._pool(128)
    assert pool[n] is None and np.array_equal(pool[n - 1], ProceduralBackgrounds().draw_pool_texture(128, n - 1))


def test_a_forked_workers_setup_error_reaches_the_user_as_one_line(tmp_path, model_file):
    """An error in a forked worker's own set-up (its thread limits) is raised by its tasks
    as the command's one-line message, as a spawned worker's is."""
    code = ("from morphgen.errors import ConfigError\n"
            "def boom(n): raise ConfigError('no threads for you')\n"
            "w.limit_threads = boom\n")
    args = ["render", "--model", model_file, *COMMON, "--out", str(tmp_path / "o"), "--workers", "2"]
    done = command_with(code, *args)
    assert done.returncode == 2, done.stderr
    assert "no threads for you" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_ctrl_c_reaches_the_workers_only_in_a_chunk(reference, tmp_path, model_file):
    """Ctrl-C goes to the whole process group. A forked worker that meets it as it starts
    (or idle) ignores it: no traceback of its own, and here (the main process untouched)
    the run completes with the same bytes. One that meets it in a chunk stops: the command
    says its one line and exits 130, the chunk discarded."""
    start = ("limit = w.limit_threads\n"
             "def ctrl_c(n): os.kill(os.getpid(), signal.SIGINT); limit(n)\n"
             "w.limit_threads = ctrl_c\n")
    out = tmp_path / "started"
    args = ["render", "--model", model_file, *COMMON, "--out", str(out), "--workers", "2", "--outputs", "depth"]
    done = command_with(start, *args)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert tree_hashes(out) == tree_hashes(reference)
    in_chunk = ("def ctrl_c(out, job, r, c): os.kill(os.getpid(), signal.SIGINT); signal.pause()\n"
                "w.render_chunk = ctrl_c\n")
    out = tmp_path / "stopped"
    args = ["render", "--model", model_file, *COMMON, "--out", str(out), "--workers", "2"]
    done = command_with(in_chunk, *args)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().startswith("interrupted:") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not list(out.glob("params/*")) and not list((out / ".partial").glob("*"))


def test_ctrl_c_stops_the_chunks_queued_to_the_workers(tmp_path, model_file):
    """After a Ctrl-C each worker went on to render the chunk queued to it, whole (the pool's
    shutdown runs its call queue): a SYN-1M command took seconds to stop, and chunks were
    finished after the user had asked to stop. Here each chunk waits a second first, and
    the main process is interrupted as they begin: none may finish."""
    patch = ("render = w.render_chunk\n"
             "def slow(out, job, r, c):\n"
             "    if c == 0: os.kill(os.getppid(), signal.SIGINT)\n"
             "    time.sleep(1.0)\n"
             "    return render(out, job, r, c)\n"
             "w.render_chunk = slow\n")
    out = tmp_path / "stopped"
    done = command_with(patch, "render", "--model", model_file, *COMMON, "--out", str(out), "--workers", "2")
    assert done.returncode == 130 and done.stderr.strip().startswith("interrupted:"), done.stderr
    assert not list(out.glob("params/*")), sorted(p.name for p in out.glob("params/*"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to see a worker's signal handlers")
def test_ctrl_c_while_spawned_workers_start_is_one_line(tmp_path, model_file):
    """Spawned workers (made so here: where a fork is unsafe) spend a second or more in
    their imports; a Ctrl-C to the process group meanwhile gives the command's one line,
    not a traceback from each worker (they start with it held, then ignore it). The
    Ctrl-C is sent once both workers' Python catches it (its start-up installed the
    handler) and before either ignores it (their initializer, after the imports)."""
    code = ("d.fork_pool_is_safe = lambda: False\n"
            "submit, pools = d.submit_held, []\n"
            "def caught(pid):\n"
            "    status = open(f'/proc/{pid}/status').read()\n"
            "    return int(status.split('SigCgt:')[1].split()[0], 16) >> (signal.SIGINT - 1) & 1\n"
            "def ctrl_c_in_the_imports(pool, *a):\n"
            "    pools.append(pool)\n"
            "    job = submit(pool, *a)\n"
            "    if len(pools) == 2:\n"
            "        while not all(caught(pid) for pid in pool._processes): time.sleep(0.001)\n"
            "        os.killpg(0, signal.SIGINT)\n"
            "    return job\n"
            "d.submit_held = ctrl_c_in_the_imports\n")
    args = ["render", "--model", model_file, *COMMON, "--out", str(tmp_path / "o"), "--workers", "2"]
    done = command_with(code, *args, start_new_session=True)
    assert done.returncode == 130, done.stderr
    assert done.stderr.startswith("interrupted:") and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_swallowed_ctrl_c_still_stops_the_command_with_one_line(tmp_path, model_file):
    """A Ctrl-C that Python cannot raise where it lands (here in a ``__del__``; a numba
    compile's ctypes callback is another) used to print "Exception ignored ...
    KeyboardInterrupt" and let the command run to its end. The main process remembers it
    and stops after the chunk; a worker's says nothing (the main process says the line)."""
    swallowed = ("class CtrlCInDel:\n"
                 "    def __del__(self): os.{kill}\n"
                 "def chunk(*a, render=w.render_chunk):\n"
                 "    if a[-1] == 0: CtrlCInDel()  # one Ctrl-C, in the first chunk\n"
                 "    return render(*a)\n"
                 "d.render_chunk = w.render_chunk = chunk\n")
    for workers, kill in (("1", "kill(os.getpid(), signal.SIGINT)"), ("2", "killpg(0, signal.SIGINT)")):
        out = tmp_path / f"w{workers}"
        args = ["render", "--model", model_file, *COMMON, "--out", str(out), "--workers", workers]
        done = command_with(swallowed.format(kill=kill), *args, start_new_session=True)
        assert done.returncode == 130, (workers, done.stderr)
        assert done.stderr.startswith("interrupted:") and len(done.stderr.strip().splitlines()) == 1, done.stderr
        if workers == "1":  # (the pool's three chunks all start at once, and finish)
            assert len(list(out.glob("params/*"))) == 1  # stopped after the chunk, not run to the end


def test_the_last_chunks_are_split_so_that_every_worker_ends_busy():
    """`tail_split`: the last `workers` chunks become `workers` parts each (fewer for a
    chunk of fewer identities), contiguous runs of its identities in order, of about equal
    numbers of images; one worker and webdataset shards keep whole chunks."""
    from morphgen.dataset import DatasetJob, OutputConfig, tail_split
    from morphgen.dataset.chunks import part_identities
    from morphgen.sampling import SamplingConfig
    from morphgen.scene import SceneConfig

    job = DatasetJob(SceneConfig(sampling=SamplingConfig(n_identities=23)), 2, OutputConfig(chunk_ids=5))
    assert tail_split([0, 1, 2, 3, 4], job, 2) == [(0, None), (1, None), (2, None), (3, (0, 2)), (3, (1, 2)),
                                                  (4, (0, 2)), (4, (1, 2))]
    assert tail_split([1, 4], job, 4) == [(1, (k, 4)) for k in range(4)] + [(4, (k, 3)) for k in range(3)]
    assert tail_split([0, 1, 2], job, 1) == [(0, None), (1, None), (2, None)]
    wds = DatasetJob(job.scene, 2, OutputConfig(chunk_ids=5, container="wds"))
    assert tail_split([0, 1, 2], wds, 2) == [(0, None), (1, None), (2, None)]
    assert [part_identities(job, 3, k, 4) for k in range(4)] == [[15, 16], [17], [18], [19]]
    assert [part_identities(job, 4, k, 3) for k in range(3)] == [[20], [21], [22]]
    with pytest.raises(ValueError):
        part_identities(job, 4, 0, 4)  # more parts than identities

    class Uneven(DatasetJob):  # recorded params (ParamsJob) may hold more images of one identity
        def slots(self, chunk):
            return [(i, s) for i in self.chunk_identities(chunk) for s in range(10 if i == 15 else 1)]

    uneven = Uneven(job.scene, 2, job.output)
    assert [part_identities(uneven, 3, k, 2) for k in range(2)] == [[15], [16, 17, 18, 19]]
    assert [part_identities(uneven, 3, k, 5) for k in range(5)] == [[15], [16], [17], [18], [19]]


def test_recorded_params_of_uneven_identities_split_to_the_same_bytes(tmp_path, model_file):
    """`--from-params` records with 5 images of one identity and 1 of others: on 2 workers
    the last chunks are split by their images, and the bytes are those of one worker."""
    src = tmp_path / "src"
    r = invoke("render", "--model", model_file, "--ids", 6, "--per-id", 5, "--size", 32, "--quiet",
               "--params-format", "jsonl", "--workers", 1, "--out", src)
    assert r.exit_code == 0, r.output
    kept = [line for p in sorted((src / "params").glob("*.jsonl")) for line in p.read_text().splitlines()
            if json.loads(line)["identity"] in (2, 4) or json.loads(line)["sample"] == 0]
    (tmp_path / "uneven.jsonl").write_text("\n".join(kept) + "\n")
    outs = {}
    for workers in (1, 2):
        outs[workers] = tmp_path / f"w{workers}"
        r = invoke("render", "--model", model_file, "--from-params", tmp_path / "uneven.jsonl", "--size", 32,
                   "--chunk-ids", 3, "--quiet", "--params-format", "jsonl", "--workers", workers, "--out", outs[workers])
        assert r.exit_code == 0, r.output
    assert len(list((outs[2] / "images").rglob("*.png"))) == 14
    assert tree_hashes(outs[2]) == tree_hashes(outs[1])


def test_a_failed_part_discards_its_whole_chunk_and_resume_completes_it(reference, tmp_path, model_file):
    """With 2 workers the last two chunks are rendered in two parts each. A part that fails
    takes its whole chunk with it: the other part's images, moved into place after the
    failure, are removed and no params file is written; the error is one line, and --resume renders
    the same bytes as one worker."""
    code = ("part = w.render_chunk_part\n"
            "def second_part_fails(out, job, r, c, k, n):\n"
            "    if k == 1: raise OSError(28, 'No space left on device')\n"
            "    time.sleep(1.0)  # still rendering when the other part fails, and moved into place after\n"
            "    return part(out, job, r, c, k, n)\n"
            "w.render_chunk_part = second_part_fails\n")
    out = tmp_path / "split"
    args = ["render", "--model", model_file, *COMMON, "--out", str(out), "--workers", "2", "--outputs", "depth"]
    done = command_with(code, *args)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "No space left on device" in done.stderr, done.stderr
    assert sorted(p.name for p in (out / "params").iterdir()) == ["chunk_000000.jsonl"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000", "000001"]  # chunk 0's, whole
    assert not list((out / ".partial").glob("*"))
    r = invoke(*args[:-2], "--outputs", "depth", "--resume")
    assert r.exit_code == 0, r.output
    assert tree_hashes(out) == tree_hashes(reference)


def test_a_run_killed_before_its_manifest_resumes(reference, tmp_path, model_file):
    """A run killed after making its folders and before writing its manifest leaves only
    empty images/, params/ and .partial/: --resume (and a plain rerun) renders the dataset
    there; it was refused as a folder holding no morphgen dataset."""
    for flag in ("--resume", None):
        out = tmp_path / f"killed{flag}"
        for sub in ("images", "params", ".partial"):
            (out / sub).mkdir(parents=True)
        r = invoke("render", "--model", model_file, *COMMON, "--out", out, "--workers", 1, "--outputs", "depth",
                   *([flag] if flag else []))
        assert r.exit_code == 0, r.output
        assert tree_hashes(out) == tree_hashes(reference)
    foreign = tmp_path / "foreign"  # the same folders holding anything are still not ours to write into
    (foreign / "images").mkdir(parents=True)
    (foreign / "images" / "notes.txt").write_text("mine")
    r = invoke("render", "--model", model_file, *COMMON, "--out", foreign, "--workers", 1, "--resume")
    assert r.exit_code == 2 and "holds no morphgen dataset" in r.output, r.output


def test_shards_merge_to_the_single_run(reference, tmp_path, model_file):
    out = tmp_path / "ds3"
    for k in ("1/2", "2/2"):
        r = invoke("render", "--model", model_file, *COMMON, "--out", out, "--workers", 1, "--outputs", "depth", "--shard", k)
        assert r.exit_code == 0, r.output
    assert tree_hashes(out) == tree_hashes(reference)
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] and set(m["shards"]) == {"1/2", "2/2"}


def test_kill_then_resume_equals_uninterrupted(reference, tmp_path, model_file):
    """kill -9 at the worst moment of a chunk (its images moved into place, its params
    marker not yet) leaves a folder that --resume completes to the same images. The kill
    is made by the command itself at that moment, not timed from outside (a fast run
    would finish first)."""
    out = tmp_path / "ds4"
    args = ["render", "--model", model_file, *COMMON, "--out", str(out), "--outputs", "depth", "--chunk-ids", "1"]
    code = ("class KilledAtTheMarker:\n"
            "    def __getattr__(self, name): return getattr(os, name)\n"
            "    def replace(self, a, b):\n"
            "        if str(b).endswith('.jsonl'): os.kill(os.getpid(), signal.SIGKILL)\n"
            "        os.replace(a, b)\n"
            "write, calls = c.write_chunk, []\n"
            "def third_is_killed(*a):\n"
            "    calls.append(1)\n"
            "    if len(calls) == 3: c.os = KilledAtTheMarker()\n"
            "    return write(*a)\n"
            "c.write_chunk = third_is_killed\n")
    done = command_with(code, *args, "--workers", "1")
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert len(list((out / "params").glob("*.jsonl"))) == 2
    assert len(list((out / "images").iterdir())) == 3  # the third chunk's identity moved in, unmarked
    # without --resume the folder is refused
    r = invoke(*args)
    assert r.exit_code == 2 and "--resume" in r.output
    r = invoke(*args, "--resume")
    assert r.exit_code == 0, r.output
    ref = {k: v for k, v in tree_hashes(reference).items() if k.startswith("images/")}
    got = {k: v for k, v in tree_hashes(out).items() if k.startswith("images/")}
    assert got == ref  # params files differ only in chunking; images are byte-identical
    assert not (out / ".partial").exists()


def test_wds_shards(tmp_path, model_file):
    import tarfile

    out = tmp_path / "wds"
    r = invoke("render", "--model", model_file, *COMMON, "--out", out, "--format", "wds", "--workers", 1)
    assert r.exit_code == 0, r.output
    tars = sorted((out / "wds").glob("*.tar"))
    assert len(tars) == 3
    names = tarfile.open(tars[0]).getnames()
    assert "000000_0000.png" in names and "000000_0000.json" in names and "000000_0000.cls" in names


def test_refuses_other_config_and_foreign_folder(reference, tmp_path, model_file):
    r = invoke("render", "--model", model_file, *COMMON, "--out", reference, "--seed", 5)
    assert r.exit_code == 2 and "different config" in r.output
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    r = invoke("render", "--model", model_file, *COMMON, "--out", foreign, "--overwrite")
    assert r.exit_code == 2 and "not a morphgen dataset" in r.output and (foreign / "notes.txt").exists()


@pytest.mark.parametrize("args,msg", [
    (["--ids", "-3"], "--ids must be >= 1"),
    (["--per-id", "0"], "--per-id must be >= 1"),
    (["--pose", "sideways"], "unknown pose preset"),
    (["--size", "5"], "--size 5 is out of range"),
    (["--shape-dist", "cauchy"], "unknown distribution"),
    (["--grid", "yaw=-200:90:15"], "beyond"),
    (["--outputs", "xray"], "unknown output"),
    (["--backgrounds", "/nonexistent/dtd"], "/nonexistent/dtd"),
    (["--illumination", "bip-gaussian"], "needs --bip"),
    (["--shard", "3/2"], "--shard"),
    (["--shard", "2/2"], "the dataset has only 1 chunk(s)"),  # 2 ids, 10 to a chunk: shard 2 gets none
    (["--model", "/nonexistent/model2017-1_bfm_nomouth.h5"], "does not exist"),
    (["--resume", "--overwrite"], "contradict"),
    (["--mixup-fraction", "0.3"], "--mixup-fraction only acts with --identity-mixup"),
    (["--jpg-quality", "50"], "--jpg-quality only acts with --image-format jpg"),
    (["--no-expressions", "--expression-components", "5"], "--expression-components only acts with expressions"),
    (["--grid", "yaw=-90:90:nan"], "grid step must be a finite number > 0"),
    (["--grid", "yaw=-90:90:inf"], "grid step must be a finite number > 0"),
    (["--grid", "yaw=-90:90:1e-9"], "more than 10,000"),   # counted, not listed: no terabyte array first
    (["--grid", "yaw=-90:90:45,yaw=0:0:1"], "gives yaw twice"),
    (["--photo", "realistic,grey=0.3,grey=0.9"], "gives grey twice"),
    (["--backgrounds", ""], "--backgrounds is empty"),
    (["--outputs", "depth,depth"], "names an output twice"),
    (["--energy", "1e300"], "--energy"),
    (["--energy", "0"], "--energy"),
])
def test_bad_values_stop_before_work(tmp_path, model_file, args, msg):
    out = tmp_path / "bad"
    base = ["render", "--model", model_file, "--ids", "2", "--per-id", "1", "--size", "32", "--quiet", "--out", out]
    r = invoke(*base, *args)
    assert r.exit_code == 2, r.output
    assert msg in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (out / "images").exists() or not any((out / "images").iterdir())


def test_yaw_beyond_180_in_a_pose_file(tmp_path, model_file):
    f = tmp_path / "pose.yaml"
    f.write_text("yaw: uniform(-190, 0)\n")
    r = invoke("render", "--model", model_file, "--ids", 1, "--per-id", 1, "--pose", f, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "yaw distribution" in r.output


def test_config_file_and_unknown_key(tmp_path, model_file):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"model: {model_file}\nids: 2\nper-id: 2\nsize: 32\nantialias: 1\npose: frontal\nquiet: true\n")
    out = tmp_path / "o"
    r = invoke("render", "--config", cfg, "--out", out, "--workers", 1)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["scene"]["pose"]["yaw"] == "uniform(-35, 35)" and m["counts"]["images"] == 4
    cfg.write_text("idz: 3\n")
    r = invoke("render", "--config", cfg, "--out", tmp_path / "o2")
    assert r.exit_code == 2 and "unknown key 'idz'" in r.output


def test_stats_plots_a_dataset(reference, tmp_path):
    out = tmp_path / "stats.png"
    r = invoke("stats", reference, "--out", out)
    assert r.exit_code == 0, r.output
    assert out.stat().st_size > 10_000 and '"images": 18' in r.output


def test_stats_says_when_the_dataset_is_unfinished(reference, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(reference, out)
    (out / "params" / "chunk_000001.jsonl").unlink()
    r = invoke("stats", out, "--out", tmp_path / "s.png")
    assert r.exit_code == 0 and "unfinished (12 of 18 images)" in r.output, r.output
    r = invoke("stats", reference, "--out", tmp_path / "s.png")
    assert r.exit_code == 0 and "unfinished" not in r.output
    man = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**man, "counts": [1]}))  # damaged: was an AttributeError
    r = invoke("stats", out, "--out", tmp_path / "s2.png")
    assert r.exit_code == 0 and "unfinished" not in r.output, r.output


def test_stats_on_empty_folder(tmp_path):
    r = invoke("stats", tmp_path)
    assert r.exit_code == 2 and "no params" in r.output


def test_dask_local_cluster_equals_local_run(reference, tmp_path, model_file):
    pytest.importorskip("distributed", reason="the Dask path needs the 'distributed' package (test extra)")
    out = tmp_path / "dask"
    r = invoke("render", "--model", model_file, *COMMON, "--out", out, "--outputs", "depth", "--workers", 2, "--dask", "local")
    assert r.exit_code == 0, r.output
    assert tree_hashes(out) == tree_hashes(reference)


def test_batched_render_then_pooled_writes(reference, tmp_path, model_file):
    """The GPU path's pipeline (big render batches in the main process, encoding and writing
    in a process pool), exercised with the CPU renderer so it runs without a GPU."""
    from morphgen import dataset
    from morphgen.dataset.gpu import run_gpu
    from morphgen.dataset.job import job_from_dict

    job = job_from_dict(json.loads((reference / "manifest.json").read_text())["config"])
    out = tmp_path / "pooled"
    dataset.prepare_output(out, job, resume=False, overwrite=False)
    counts = []
    run_gpu(out, job, list(range(job.n_chunks)), workers=2, done=counts.append)
    assert sum(c[1] for c in counts) == 18
    ref = {k: v for k, v in tree_hashes(reference).items() if k.startswith("images/")}
    got = {k: v for k, v in tree_hashes(out).items() if k.startswith("images/")}
    assert got.keys() == ref.keys()


def test_cuda_without_gpu_is_a_clear_error(tmp_path, model_file):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the no-GPU message cannot be triggered")
    r = invoke("render", "--model", model_file, "--ids", 1, "--per-id", 1, "--device", "cuda", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "no CUDA device" in r.output


def test_ctrl_c_says_how_to_resume(tmp_path, model_file, monkeypatch):
    import morphgen.dataset

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(morphgen.dataset, "run", interrupted)
    r = invoke("render", "--model", model_file, *COMMON, "--out", tmp_path / "ds")
    assert r.exit_code == 130
    assert "--resume" in r.output and "Traceback" not in r.output


def test_cpu_render_path_does_not_import_torch():
    """Every spawned worker of `morphgen render` imports the dataset module and renders with
    numba; importing torch there would cost each of them 2 s for nothing."""
    code = (
        "import sys, morphgen.dataset, morphgen.scene, morphgen.render.renderer\n"
        "from morphgen.scene import SceneConfig, SceneRenderer\n"
        "from morphgen.sampling import SamplingConfig\n"
        "r = SceneRenderer(SceneConfig(sampling=SamplingConfig(n_identities=2), antialias=1))\n"
        "r.render([r.sampler.image_params(0, 0)])\n"
        "assert 'torch' not in sys.modules, 'the CPU render path imported torch'\n"
    )
    r = python(code)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("user", [None, "1"])
def test_the_console_script_turns_numpy_huge_pages_off_unless_the_user_set_them(user):
    """`morphgen` sets NUMPY_MADVISE_HUGEPAGE=0 before numpy is imported (fresh 2 MB pages
    are slow on VMs with free page reporting; see cli/entry.py), so its numpy and the
    processes it spawns allocate in small pages; a value the user set is kept."""
    import os

    code = ("import os, sys\n"
            "from morphgen.cli.entry import main\n"
            "sys.argv = ['morphgen', '--version']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "import numpy\n"
            "core = getattr(numpy, '_core', None) or numpy.core  # numpy 2 / 1\n"
            "print(os.environ['NUMPY_MADVISE_HUGEPAGE'], core.multiarray._get_madvise_hugepage())")
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if user is not None:
        env["NUMPY_MADVISE_HUGEPAGE"] = user
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2:] == (["1", "True"] if user else ["0", "False"]), r.stdout


def test_end_workers_does_not_wait_for_the_queued_tasks():
    """After a Ctrl-C (or an error) `fit` and the landmark finder end their workers at once
    (ctrl_c.end_workers): shutdown alone lets each worker finish the tasks already in the
    pool's call queue (a 2-worker fit took 14 s to end after a Ctrl-C; the landmark finder,
    which submits every chunk at once, 48 s on CFP)."""
    import multiprocessing as mp
    import time
    from concurrent.futures import ProcessPoolExecutor

    from morphgen.dataset.ctrl_c import end_workers

    pool = ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"))
    try:
        tasks = [pool.submit(time.sleep, 60) for _ in range(5)]   # two running, the rest queued
        deadline = time.monotonic() + 60
        while sum(t.running() for t in tasks) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        start = time.monotonic()
        end_workers(pool)
        pool.shutdown(wait=True)
        assert time.monotonic() - start < 20   # not the 60 s of a running task, nor 120 of the queued
    finally:
        for proc in list((pool._processes or {}).values()):   # a failed assertion leaves no sleeper behind
            proc.kill()


def test_rendering_in_process_keeps_the_setup_out_of_the_collector_until_the_run_ends(tmp_path, model_file,
                                                                                         monkeypatch):
    """`--workers 1` renders in the command's process: its objects are frozen out of Python's
    collections meanwhile (a full collection walked them all, a tenth of a small image's time),
    as a forked worker's are, and thawed when the run ends, however it ends."""
    import gc

    from morphgen import dataset

    seen, chunk = [], dataset.render_chunk

    def probe(*args):
        seen.append(gc.get_freeze_count())
        return chunk(*args)

    monkeypatch.setattr(dataset, "render_chunk", probe)
    before = gc.get_freeze_count()
    r = invoke("render", "--model", model_file, *COMMON, "--out", tmp_path / "ds", "--workers", 1)
    assert r.exit_code == 0, r.output
    assert len(seen) == 3 and min(seen) > before + 1000
    assert gc.get_freeze_count() == before

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(dataset, "render_chunk", fail)
    r = invoke("render", "--model", model_file, *COMMON, "--out", tmp_path / "ds2", "--workers", 1)
    assert r.exit_code != 0 and "disk full" in r.output
    assert gc.get_freeze_count() == before


def test_a_spawned_worker_keeps_its_setup_out_of_its_collections(model_file):
    """Our own spawned pool's workers (`pool_worker_init`) freeze their set-up as forked ones
    inherit it frozen (`local_pool`)."""
    done = python("import gc, sys\n"
                  "from morphgen.dataset import DatasetJob, OutputConfig\n"
                  "from morphgen.dataset.workers import WORKER, pool_worker_init\n"
                  "from morphgen.options import scene_config\n"
                  "job = DatasetJob(scene_config(overrides={'model': sys.argv[1], 'ids': 2, 'size': 32}), 2, OutputConfig())\n"
                  "before = gc.get_freeze_count()\n"
                  "pool_worker_init(job.to_dict())\n"
                  "assert 'init_error' not in WORKER, WORKER.get('init_error')\n"
                  "print(before, gc.get_freeze_count())\n", model_file)
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = map(int, done.stdout.split())
    assert before == 0 and after > 1000


def test_overwrite_deletes_the_old_dataset_only_after_every_check(reference, tmp_path, model_file):
    """--overwrite with an input that fails a check (here the disk space for a huge --ids,
    and an output the model cannot give) is refused with the old dataset untouched: the
    folder was deleted before the checks, so a typo cost the user's data."""
    out = tmp_path / "old"
    shutil.copytree(reference, out)
    before = tree_hashes(out)
    r = invoke("render", "--model", model_file, *COMMON, "--out", out, "--overwrite", "--ids", 10**14)
    assert r.exit_code == 2 and "GB free" in r.output and "--overwrite replaces as free" in r.output, r.output
    r = invoke("render", "--model", model_file, *COMMON, "--out", out, "--overwrite", "--outputs", "regions")
    assert r.exit_code == 2 and "needs a model with region labels" in r.output, r.output
    assert tree_hashes(out) == before and (out / "manifest.json").exists()


def test_overwrite_counts_the_replaced_dataset_as_free_space(reference, tmp_path, model_file, monkeypatch):
    """On a disk the old dataset nearly fills, --overwrite still replaces it: the space its
    deletion frees counts (the check, now made before the deletion, refused it)."""
    import shutil as sh
    from collections import namedtuple

    from morphgen import dataset
    from morphgen.dataset.job import estimate_bytes, job_from_dict

    out = tmp_path / "old"
    sh.copytree(reference, out)
    needed = estimate_bytes(job_from_dict(json.loads((out / "manifest.json").read_text())["config"]))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(dataset.shutil, "disk_usage", lambda p: usage(needed, needed, needed // 10))
    r = invoke("render", "--model", model_file, *COMMON, "--out", out, "--overwrite", "--outputs", "depth")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_resume_renders_damaged_chunks_again(tmp_path, model_file, fmt):
    """A finished chunk whose params file was cut short, or whose images or identity folder
    went missing after the run, is rendered again by --resume (it said "complete"), and the
    dataset comes out byte-identical to the unbroken one."""
    args = ["render", "--model", model_file, *COMMON, "--params-format", fmt, "--workers", 1, "--outputs", "depth",
            "--out", tmp_path / "ds"]
    assert invoke(*args).exit_code == 0
    whole = tree_hashes(tmp_path / "ds")
    marker = tmp_path / "ds" / "params" / f"chunk_000000.{fmt}"
    data = marker.read_bytes()  # JSON Lines cut at a line's end, Parquet anywhere
    marker.write_bytes(data[: data.rindex(b"\n", 0, -1) + 1] if fmt == "jsonl" else data[: len(data) // 2])
    (tmp_path / "ds" / "images" / "000002" / "000002_0001_depth.png").unlink()
    shutil.rmtree(tmp_path / "ds" / "images" / "000005")
    with pytest.warns(UserWarning, match="rendering 3 damaged chunk.s. again: chunk 0: its params file chunk_000000"):
        r = invoke(*args, "--resume")
    assert r.exit_code == 0, r.output
    assert tree_hashes(tmp_path / "ds") == whole
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing damaged now: no warning
        r = invoke(*args, "--resume")
    assert r.exit_code == 0 and "rendered 0 images" in r.output, r.output


def test_resume_renders_a_cut_webdataset_shard_again(tmp_path, model_file):
    args = ["render", "--model", model_file, *COMMON, "--format", "wds", "--workers", 1, "--out", tmp_path / "ds"]
    assert invoke(*args).exit_code == 0
    whole = tree_hashes(tmp_path / "ds")
    shard = tmp_path / "ds" / "wds" / "chunk_000001.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    with pytest.warns(UserWarning, match="chunk 1: its shard chunk_000001.tar is cut short"):
        assert invoke(*args, "--resume").exit_code == 0
    assert tree_hashes(tmp_path / "ds") == whole


def test_an_unreadable_manifest_is_one_line(reference, tmp_path, model_file):
    out = tmp_path / "ds"
    shutil.copytree(reference, out)
    (out / "manifest.json").write_text("[]")
    r = invoke("render", "--model", model_file, *COMMON, "--out", out, "--outputs", "depth", "--resume")
    assert r.exit_code == 2 and "manifest.json is unreadable" in r.output and "Traceback" not in r.output, r.output


def test_from_params_with_malformed_photo_or_appearance_stops_before_output(tmp_path, model_file):
    """Recorded photo effects or appearance that a render cannot read (an edited record:
    a key missing, a string for a number, an unknown effect or occluder, a value out of its
    range, in any record, not only the first of its layout) are refused with
    one line before the output exists; they failed inside a worker, after it did."""
    src = tmp_path / "src"
    r = invoke("render", "--model", model_file, "--ids", 2, "--per-id", 2, "--size", 32, "--photo", "occlusion=1",
               "--params-format", "jsonl", "--workers", 1, "--quiet", "--out", src)
    assert r.exit_code == 0, r.output
    rec = json.loads((src / "params" / "chunk_000000.jsonl").read_text().splitlines()[0])
    occ = rec["photo"]["occlusion"]
    cases = [({"occlusion": {k: v for k, v in occ.items() if k != "cx"}}, "occlusion lacks 'cx'"),
             ({"occlusion": occ | {"rx": "big"}}, "malformed 'photo'"),
             ({"occlusion": occ | {"shape": "triangle"}}, "neither 'ellipse' nor 'box'"),
             ({"blurr": 2.0}, "unknown effect 'blurr'"),
             ("x", "a str, not an object"),
             # values: each effect's range bounds its cost (a 100,000 px streak was a 40 GB kernel)
             ({"motion": {"length": 1e5, "angle": 0}}, "motion length 100000.0 is out of range: use 0 to 64"),
             ({"blur": 0}, "blur 0 is out of range: use above 0 to 16"),
             ({"jpeg": 50.5}, "jpeg 50.5 is not a whole number"),
             ({"noise": {"sigma": float("nan"), "seed": 1}}, "noise sigma nan is not a number"),
             ({"grey": False}, "grey False is not true"),
             ({"jpeg": 10**400}, "jpeg 1000000000000000000000000000000000000... is not a number"),  # one short line
             ({"crop": {"top": 0.6, "bottom": 0.5, "left": 0, "right": 1, "black": False}}, "top < bottom")]
    later = rec | {"sample": rec["sample"] + 1, "photo": {"occlusion": occ | {"rx": 1e9}}}
    for photo, match, more in [(p, m, []) for p, m in cases] + [(rec["photo"], "occlusion rx", [later])]:
        # the last: a later record of the same layout as the first, only its value wrong
        path = tmp_path / "edited.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in [rec | {"photo": photo}, *more]))
        out = tmp_path / "out"
        r = invoke("render", "--model", model_file, "--from-params", path, "--size", 32, "--photo", "occlusion=1",
                   "--workers", 1, "--quiet", "--out", out)
        assert r.exit_code == 2 and match in r.output and len(r.output.strip().splitlines()) == 1, r.output
        assert not out.exists()
    r = invoke("render", "--model", model_file, "--from-params", path, "--grid", "yaw=0:10:10", "--out", tmp_path / "out")
    assert r.exit_code == 2 and "do not apply" in r.output and not (tmp_path / "out").exists(), r.output
    path.write_text(json.dumps(rec) + "\n")  # the record as written renders
    r = invoke("render", "--model", model_file, "--from-params", path, "--size", 32, "--photo", "occlusion=1",
               "--workers", 1, "--quiet", "--out", tmp_path / "ok")
    assert r.exit_code == 0, r.output


def test_from_params_checks_every_records_appearance(tmp_path):
    """Recorded appearance is read as the render reads it in every record, not only in the
    first of its layout (a later record's spot index beyond the model's spots failed in a
    worker, after the output existed), and a number that is not finite is refused (a NaN
    hair length rendered no hair, silently)."""
    src = tmp_path / "src"
    r = invoke("render", "--ids", 1, "--per-id", 2, "--size", 32, "--appearance", "full", "--params-format", "jsonl",
               "--workers", 1, "--quiet", "--out", src)
    assert r.exit_code == 0, r.output
    first, second = (json.loads(line) for line in (src / "params" / "chunk_000000.jsonl").read_text().splitlines())
    look = second["appearance"]
    for bad, match in ((look | {"skin": look["skin"] | {"spots": [[10**9, 0.5]]}}, "out of bounds"),
                       (look | {"hair": (look["hair"] or {"length": 1.0}) | {"length": float("nan")}},
                        "hair length is nan: not a finite number")):
        path = tmp_path / "edited.jsonl"
        path.write_text(json.dumps(first) + "\n" + json.dumps(second | {"appearance": bad}) + "\n")
        out = tmp_path / "out"
        r = invoke("render", "--from-params", path, "--size", 32, "--appearance", "full", "--workers", 1, "--quiet",
                   "--out", out)
        assert r.exit_code == 2 and match in r.output and "sample 1" in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and not out.exists()


def test_from_params_renders_the_recorded_appearance_without_the_option(tmp_path):
    """A dataset rendered with --appearance comes back byte-identical from its own params
    at the default --appearance off (the recorded hair, eyewear... were dropped: images up
    to 246 grey levels off, while the params still listed them); malformed appearance is
    refused whatever the option (it passed with off)."""
    src = tmp_path / "src"
    r = invoke("render", "--ids", 3, "--per-id", 2, "--size", 32, "--appearance", "full", "--params-format", "jsonl",
               "--workers", 1, "--quiet", "--out", src)
    assert r.exit_code == 0, r.output
    again = tmp_path / "again"
    r = invoke("render", "--from-params", src, "--size", 32, "--appearance", "off", "--params-format", "jsonl",
               "--workers", 1, "--quiet", "--out", again)   # off: not the source's full, which would build the parts
    assert r.exit_code == 0, r.output
    images = {k: v for k, v in tree_hashes(again).items() if k.startswith("images/")}
    assert images and images == {k: v for k, v in tree_hashes(src).items() if k.startswith("images/")}
    rows = (src / "params" / "chunk_000000.jsonl").read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(json.loads(rows[0]) | {"appearance": "xx"}) + "\n")
    r = invoke("render", "--from-params", bad, "--size", 32, "--workers", 1, "--quiet", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "malformed 'appearance'" in r.output and not (tmp_path / "o").exists(), r.output


def test_from_params_of_a_dataset_draws_as_that_dataset_did(tmp_path, model_file):
    """Re-rendering a dataset's records needs none of its options again: size, backgrounds,
    outputs, anti-aliasing and the model come from its manifest (it came back at 128 px on
    procedural backgrounds without them); a flag still wins."""
    src = tmp_path / "src"
    r = invoke("render", "--model", model_file, "--ids", 2, "--per-id", 2, "--size", 40, "--backgrounds", "plain",
               "--outputs", "mask", "--antialias", 1, "--params-format", "jsonl", "--workers", 1, "--quiet", "--out", src)
    assert r.exit_code == 0, r.output
    again = tmp_path / "again"
    r = invoke("render", "--from-params", src / "params", "--params-format", "jsonl", "--workers", 1, "--out", again)
    assert r.exit_code == 0 and "drawing as the source dataset did" in r.output and "--size 40" in r.output, r.output
    images = {k: v for k, v in tree_hashes(again).items() if k.startswith("images/")}
    assert images == {k: v for k, v in tree_hashes(src).items() if k.startswith("images/")}
    assert any(k.endswith("_mask.png") for k in images)
    bigger = tmp_path / "bigger"
    r = invoke("render", "--from-params", src, "--size", 48, "--workers", 1, "--quiet", "--out", bigger)
    assert r.exit_code == 0, r.output
    scene = json.loads((bigger / "manifest.json").read_text())["config"]["scene"]
    assert scene["size"] == 48 and scene["backgrounds"] == "plain" and scene["model"] == str(Path(model_file).resolve())


def test_resume_refuses_a_model_file_changed_in_place(tmp_path):
    """The same --model path with other contents: a resume rendered the missing chunks from
    the new model beside the old model's and rewrote the manifest's digest to the new one."""
    model = tmp_path / "m.npz"
    make_tiny_model(20, 24).save_npz(model)
    out = tmp_path / "o"
    args = ["render", "--model", model, "--ids", 4, "--per-id", 1, "--chunk-ids", 2, "--size", 32, "--workers", 1,
            "--quiet", "--params-format", "jsonl", "--out", out]
    assert invoke(*args).exit_code == 0
    before = json.loads((out / "manifest.json").read_text())["model_sha256"]
    make_tiny_model(20, 26).save_npz(model)   # another mesh at the same path
    (out / "params" / "chunk_000001.jsonl").unlink()
    r = invoke(*args, "--resume")
    assert r.exit_code == 2 and "another version of" in r.output, r.output
    assert json.loads((out / "manifest.json").read_text())["model_sha256"] == before


def test_from_params_keeps_the_level_of_detail_a_close_up_pose_gave(tmp_path):
    """The level of detail follows the pose's scale (a close-up renders finer): the source's
    pose comes with its look, or the re-render decimated the embedded model to 3,138
    vertices where the source had all 6,429 (images up to 135 grey levels off)."""
    pose = tmp_path / "close.yaml"
    pose.write_text("yaw: uniform(-30, 30)\nscale: uniform(1.5, 2)\n")
    src = tmp_path / "src"
    r = invoke("render", "--ids", 2, "--per-id", 2, "--size", 40, "--pose", pose, "--params-format", "jsonl",
               "--workers", 1, "--quiet", "--out", src)
    assert r.exit_code == 0, r.output
    again = tmp_path / "again"
    r = invoke("render", "--from-params", src, "--params-format", "jsonl", "--workers", 1, "--out", again)
    assert r.exit_code == 0 and "--pose (its own)" in r.output, r.output
    for a in sorted(src.glob("images/*/*.png")):   # records keep 6 decimals: within a grey level
        d = np.abs(cv2.imread(str(a)).astype(int) - cv2.imread(str(again / a.relative_to(src))))
        assert d.mean() < 0.05 and d.max() <= 8, (a.name, d.mean(), d.max())


def test_the_manifest_records_numbers_exactly(tmp_path, model_file):
    """Grid steps, distributions and effect probabilities are recorded as given, not to 6
    digits (33.3333333 came back as 33.3333: workers rebuilding the job from the manifest
    drew other yaws, and two configs that differ in the 7th digit hashed alike)."""
    out = tmp_path / "o"
    r = invoke("render", "--model", model_file, "--ids", 1, "--size", 32, "--grid", "yaw=-90:90:33.3333333",
               "--shape-dist", "gaussian(0, 1.23456789)", "--photo", "grey=0.123456789", "--workers", 1, "--quiet",
               "--out", out)
    assert r.exit_code == 0, r.output
    scene = json.loads((out / "manifest.json").read_text())["config"]["scene"]
    text = json.dumps(scene)
    assert "-90:90:33.3333333" in text and "1.23456789" in text and "grey=0.123456789" in text
    from morphgen.dataset.job import job_from_dict

    job = job_from_dict(json.loads((out / "manifest.json").read_text())["config"])
    assert job.scene.sampling.grid.yaw.step == 33.3333333


def test_jpg_datasets_keep_their_modalities_lossless(tmp_path, model_file):
    out = tmp_path / "o"
    r = invoke("render", "--model", model_file, "--ids", 1, "--per-id", 1, "--size", 32, "--image-format", "jpg",
               "--outputs", "mask,depth", "--workers", 1, "--quiet", "--out", out)
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (out / "images" / "000000").iterdir())
    assert names == ["000000_0000.jpg", "000000_0000_depth.png", "000000_0000_mask.png"]
    mask = cv2.imread(str(out / "images" / "000000" / "000000_0000_mask.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(mask)) <= {0, 255}
    r = invoke("render", "--model", model_file, "--ids", 1, "--per-id", 1, "--size", 32, "--image-format", "jpg",
               "--outputs", "mask,depth", "--workers", 1, "--quiet", "--resume", "--out", out)
    assert r.exit_code == 0 and "damaged" not in r.output, r.output


def test_dask_address_that_is_not_one(tmp_path, model_file):
    pytest.importorskip("distributed", reason="the Dask path needs the 'distributed' package (test extra)")
    r = invoke("render", "--model", model_file, "--ids", 1, "--per-id", 1, "--size", 32, "--dask", "foo",
               "--out", tmp_path / "o")
    assert r.exit_code == 2 and "not a scheduler address" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_preview_config_sets_rows_and_cols(tmp_path, model_file):
    """`preview --config` reads its own rows and cols besides the render options (they
    were refused as unknown keys); flags still win."""
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"model: {model_file}\nsize: 32\nrows: 2\ncols: 3\n")
    r = invoke("preview", "--config", cfg, "--out", tmp_path / "s.png")
    assert r.exit_code == 0 and "(2 identities x 3 samples" in r.output, r.output
    r = invoke("preview", "--config", cfg, "--rows", 1, "--out", tmp_path / "s.png")
    assert r.exit_code == 0 and "(1 identities x 3 samples" in r.output, r.output
    cfg.write_text("rows: many\n")
    r = invoke("preview", "--config", cfg, "--out", tmp_path / "s.png")
    assert r.exit_code == 2 and "whole numbers 1..64" in r.output, r.output


def test_preview_with_identity_mixup_shows_what_render_draws(tmp_path, model_file):
    """The preview's pool was its rows, so mixup partners came from the rows shown (and
    --rows 1 was refused): its tiles now equal the render's images, partners and all."""
    import cv2

    mix = ["--model", model_file, "--size", 32, "--identity-mixup", "--mixup-fraction", 1]
    r = invoke("preview", *mix, "--rows", 2, "--cols", 2, "--out", tmp_path / "s.png")
    assert r.exit_code == 0, r.output
    r = invoke("render", *mix, "--ids", 100, "--per-id", 2, "--workers", 1, "--quiet", "--out", tmp_path / "ds")
    assert r.exit_code == 0, r.output
    sheet = cv2.imread(str(tmp_path / "s.png"))
    for i in range(2):
        for n in range(2):
            tile = sheet[32 * i:32 * (i + 1), 32 * n:32 * (n + 1)]
            assert np.array_equal(tile, cv2.imread(str(tmp_path / "ds" / "images" / f"{i:06d}" / f"{i:06d}_{n:04d}.png")))
    r = invoke("preview", *mix, "--rows", 1, "--cols", 2, "--out", tmp_path / "one.png")
    assert r.exit_code == 0, r.output


def test_warnings_are_one_line_each(tmp_path, model_file):
    """The console script prints a warning (here: an unreadable background image, skipped)
    as one `warning:` line, without Python's file, line and source echo."""
    bg = tmp_path / "bg"
    bg.mkdir()
    (bg / "bad.png").write_bytes(b"not a png")
    import cv2

    cv2.imwrite(str(bg / "ok.png"), np.full((40, 40, 3), 90, np.uint8))
    r = python("import sys; from morphgen.cli.entry import main; sys.argv[0] = 'morphgen'; main()",
               "render", "--model", model_file, "--ids", "2", "--per-id", "2", "--size", "32", "--backgrounds", str(bg),
               "--workers", "1", "--quiet", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("warning: background image") for ln in lines), r.stderr


def test_spawned_workers_of_the_console_script_print_one_line_warnings(monkeypatch):
    """A spawned worker does not inherit the console script's warning format; it takes it
    from the environment the script sets (experiment renders and GPU runs spawn)."""
    import warnings as w

    from morphgen.dataset import workers
    from morphgen.errors import ONE_LINE_WARNINGS, one_line_warning

    monkeypatch.setattr(w, "formatwarning", w.formatwarning)
    monkeypatch.setenv(ONE_LINE_WARNINGS, "1")
    monkeypatch.setattr(workers, "exit_with_parent", lambda: None)
    monkeypatch.setattr(workers, "ignore_ctrl_c", lambda: None)
    monkeypatch.setattr(workers, "worker_init", lambda job: None)
    monkeypatch.setattr(workers.gc, "freeze", lambda: None)
    workers.pool_worker_init({})
    assert w.formatwarning is one_line_warning


def test_preview_captions_say_each_tiles_pose_and_effects(tmp_path, model_file):
    import cv2
    from morphgen.cli.render_cmd import caption_lines

    from morphgen.render.photo import PhotoConfig
    from morphgen.sampling import SamplingConfig
    from morphgen.scene import SceneConfig, SceneRenderer

    plain, cap = tmp_path / "plain.png", tmp_path / "cap.png"
    for out, extra in ((plain, []), (cap, ["--captions"])):
        r = invoke("preview", "--model", model_file, "--size", 32, "--rows", 2, "--cols", 3, "--photo", "realistic",
                   "--out", out, *extra)
        assert r.exit_code == 0, r.output
    a, b = cv2.imread(str(plain)), cv2.imread(str(cap))
    assert b.shape[1] == a.shape[1] and b.shape[0] > a.shape[0] and (b.shape[0] - a.shape[0]) % 2 == 0
    assert np.array_equal(b[:32, :32], a[:32, :32])                       # the tile itself is unchanged
    sampler = SceneRenderer(SceneConfig(sampling=SamplingConfig(photo=PhotoConfig.parse("realistic")),
                                        model=str(model_file), size=32)).sampler
    lines = [caption_lines(sampler.image_params(0, n)) for n in range(40)]
    assert all(line[0].startswith("yaw ") and " pitch " in line[0] for line in lines)
    assert any("crop (black)" in line[1] or "crop (edge)" in line[1] for line in lines)
    assert any(line[1] == "no effects" for line in lines) or all(line[1] for line in lines)


def test_a_wds_dataset_of_more_shards_than_open_files_reads(tmp_path, model_file):
    """Each tar read stayed open: 1,000 shards (SYN-1M's) ran out of the usual 1,024 file
    handles, and the failed opens were reported as missing images."""
    import os
    import resource

    import morphgen

    out = tmp_path / "wm"
    r = invoke("render", "--model", model_file, "--ids", 40, "--per-id", 1, "--size", 16, "--chunk-ids", 1,
               "--format", "wds", "--workers", 1, "--quiet", "--out", out)
    assert r.exit_code == 0, r.output
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ds = morphgen.open_dataset(out)
    opened = len(os.listdir("/proc/self/fd"))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (opened + 20, hard))   # fewer handles than shards
        items = [ds[i]["identity"] for i in range(len(ds))]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert sorted(items) == list(range(40))


def test_the_free_space_check_counts_what_this_run_writes_on_its_disk(tmp_path, model_file, monkeypatch):
    """A shard or a resume was checked for room for the whole dataset (a SYN-1M shard of
    40 MB was refused for 32 GB), the disk checked was the working folder's where --out's
    parent did not exist yet, and a small figure read "0.0 GB"."""
    from collections import namedtuple

    from morphgen import dataset

    huge = ["--model", model_file, "--ids", 10**12, "--per-id", 1, "--size", 16, "--quiet"]
    r = invoke("render", *huge, "--out", tmp_path / "a" / "b" / "whole")
    assert r.exit_code == 2 and f"but {tmp_path} has" in r.output, r.output       # the nearest folder that exists
    r = invoke("render", *huge, "--shard", f"1/{10**11}", "--out", tmp_path / "shard")
    assert r.exit_code == 0 and len(list((tmp_path / "shard" / "images").iterdir())) == 10, r.output
    # a resume with room for what is left, not for the whole dataset
    args = ["--model", model_file, "--ids", 8, "--per-id", 2, "--size", 32, "--chunk-ids", 2, "--quiet",
            "--out", tmp_path / "part"]
    assert invoke("render", *args, "--shard", "1/2").exit_code == 0           # chunks 0 and 2 of 4
    job = dataset.job_from_dict(json.loads((tmp_path / "part" / "manifest.json").read_text())["config"])
    half = dataset.estimate_bytes(job, 8)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(dataset.shutil, "disk_usage", lambda p: usage(10**12, 0, half + 1))
    r = invoke("render", *args, "--resume")
    assert r.exit_code == 0 and "dataset complete" in r.output, r.output
    monkeypatch.setattr(dataset.shutil, "disk_usage", lambda p: usage(10**12, 0, 1000))
    r = invoke("render", *args[:-1], tmp_path / "tiny")
    assert r.exit_code == 2 and "MB but" in r.output and "0.0 GB" not in r.output, r.output


def test_a_full_disk_says_the_runs_own_line(tmp_path, model_file):
    """With the disk still full, the manifest written on the way out failed too, and its
    traceback buried the chunk's one-line error."""
    patch = ("import errno\n"
             "def full(out, job, r, ch): raise OSError(errno.ENOSPC, 'No space left on device', str(out))\n"
             "d.render_chunk = full\n"
             "write = d.write_manifest\n"
             "calls = []\n"
             "def manifest(*a, **k):\n"
             "    calls.append(1)\n"
             "    if len(calls) > 1: raise OSError(errno.ENOSPC, 'No space left on device')  # (a write's: no file named)\n"
             "    return write(*a, **k)\n"
             "d.write_manifest = manifest\n")
    done = command_with(patch, "render", "--model", model_file, *COMMON, "--out", str(tmp_path / "o"), "--workers", "1")
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "No space left" in done.stderr, done.stderr


def test_a_dataset_of_another_render_revision_is_not_resumed(tmp_path, model_file):
    """A resume (or a shard joining the folder) with a morphgen that draws other pixels
    mixed two renderers' images in one dataset: the manifest said nothing of it."""
    args = ["render", "--model", model_file, *COMMON, "--out", tmp_path / "d", "--workers", 1]
    assert invoke(*args, "--shard", "1/2").exit_code == 0
    manifest = tmp_path / "d" / "manifest.json"
    m = json.loads(manifest.read_text())
    assert m["render_revision"]
    del m["render_revision"]                                 # as written before revisions were recorded
    manifest.write_text(json.dumps(m))
    r = invoke(*args, "--resume")
    assert r.exit_code == 2 and "draws other pixels (render revision before 2026-12-08" in r.output, r.output
    r = invoke(*args, "--overwrite")
    assert r.exit_code == 0, r.output


def test_a_damaged_wds_shard_is_named_as_such(tmp_path, model_file):
    """A shard that cannot be read was taken for missing images, one per member (and
    parsed again for each)."""
    import morphgen
    from morphgen.errors import DataError
    from recognition.data import decode_ref

    out = tmp_path / "wm"
    r = invoke("render", "--model", model_file, "--ids", 2, "--per-id", 2, "--size", 16, "--chunk-ids", 1,
               "--format", "wds", "--workers", 1, "--quiet", "--out", out)
    assert r.exit_code == 0, r.output
    (out / "wds" / "chunk_000000.tar").write_bytes(b"\x00garbage" * 100)
    ds = morphgen.open_dataset(out)
    with pytest.raises(DataError, match="chunk_000000.tar: cannot be read as a shard"):
        ds[0]
    with pytest.raises(DataError, match="cannot be read as a shard"):
        decode_ref(out, "morphgen", ds._tars, ds.images[0])

"""The GPU path's pipeline (workers plan chunks, the main process renders the plans, the
same workers encode and write), run with a CPU device renderer so it needs no GPU."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_model
from test_dataset import tree_hashes

from morphgen import dataset
from morphgen.dataset import gpu
from morphgen.dataset.chunks import encode_image
from morphgen.layout import image_stem
from morphgen.sampling import SamplingConfig
from morphgen.scene import SceneConfig, SceneRenderer


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("model") / "tiny.npz"
    make_tiny_model(20, 24).save_npz(path)
    return str(path)


def tiny_job(model: str, device: str) -> dataset.DatasetJob:
    # One identity a chunk and per_id <= 32: the CPU path then plans and renders each chunk in
    # one call too, so both paths do the very same float arithmetic (numpy's matmul rounding
    # depends on the batch size).
    scene = SceneConfig(sampling=SamplingConfig(n_identities=4), model=model, size=40, antialias=1,
                        outputs=("depth",), device=device)
    return dataset.DatasetJob(scene, per_id=3, output=dataset.OutputConfig(chunk_ids=1))


def test_gpu_pipeline_writes_the_cpu_paths_bytes(tmp_path, model_file, monkeypatch):
    ref = dataset.run(tmp_path / "cpu", tiny_job(model_file, "cpu"), workers=1, progress=False)
    assert ref["complete"]

    # run() takes the GPU path for a "cuda" job; its device renderer is made a numba one here.
    monkeypatch.setattr(dataset, "SceneRenderer",
                        lambda config, batch_size, **kw: SceneRenderer(replace(config, device="cpu"), batch_size, **kw))
    out = tmp_path / "gpu"
    got = dataset.run(out, tiny_job(model_file, "cuda"), workers=2, progress=False)
    assert got["complete"] and got["images"] == 12 and got["bytes"] == ref["bytes"]
    assert json.loads((out / "manifest.json").read_text())["complete"]
    assert not (out / ".partial").exists()
    hashes = tree_hashes(out)
    assert len([k for k in hashes if k.startswith("images/")]) == 24  # rgb + depth
    assert hashes == tree_hashes(tmp_path / "cpu")


_GPU_PATH_SCRIPT = """
import sys
from dataclasses import replace
from pathlib import Path

if __name__ == "__main__":  # (spawned workers import this file as well)
    from morphgen import dataset
    from morphgen.scene import SceneRenderer
    from test_dataset_gpu_pipeline import tiny_job

    dataset.SceneRenderer = lambda config, batch_size, **kw: SceneRenderer(replace(config, device="cpu"), batch_size, **kw)
    job = tiny_job(sys.argv[1], "cuda")
    job = replace(job, scene=replace(job.scene, sampling=replace(job.scene.sampling, n_identities=40)))
    dataset.run(Path(sys.argv[2]), job, workers=2, resume=True, progress=False)
"""


def _processes_with(env_entry: str) -> list[int]:
    """Live processes whose environment holds env_entry (Linux /proc)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            if (d.name.isdigit() and env_entry.encode() in (d / "environ").read_bytes().split(b"\0")
                    and (d / "stat").read_text().split(") ")[-1][0] != "Z"):  # zombies are already dead
                found.append(int(d.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc to find the workers")
def test_gpu_pipeline_killed_then_resumed(tmp_path, model_file):
    """kill -9 of the GPU path's main process mid-run leaves no ring behind and no file that
    looks finished; a resumed run completes the same bytes as a run without interruption."""
    script = tmp_path / "gpu_run.py"
    script.write_text(_GPU_PATH_SCRIPT)
    mark = f"MORPHGEN_TEST_RUN={uuid.uuid4().hex}"  # inherited by the spawned workers
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
           "MORPHGEN_TEST_RUN": mark.split("=")[1]}
    ref, out = tmp_path / "ref", tmp_path / "killed"
    subprocess.run([sys.executable, str(script), model_file, str(ref)], env=env, check=True, timeout=300)
    proc = subprocess.Popen([sys.executable, str(script), model_file, str(out)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(out.glob("params/*.jsonl"))) < 2:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((out / "params").glob("*.jsonl")))
    assert 1 <= done < 40, "the kill should land mid-run"
    deadline = time.time() + 20
    while _processes_with(mark) and time.time() < deadline:
        time.sleep(0.1)
    assert not _processes_with(mark), "pool workers outlived their killed main process"
    subprocess.run([sys.executable, str(script), model_file, str(out)], env=env, check=True, timeout=300)
    assert tree_hashes(out) == tree_hashes(ref)
    assert not (out / ".partial").exists()


def test_gpu_pipeline_uneven_chunks_several_batches(tmp_path, model_file, monkeypatch):
    """Chunks of 6, 6 and 3 images rendered in batches of 2, uint8 and uint16 outputs: every
    file is what rendering its chunk's plan batch by batch and encoding it gives."""
    scene = replace(tiny_job(model_file, "cpu").scene, sampling=SamplingConfig(n_identities=5),
                    outputs=("depth", "normals"))
    job = dataset.DatasetJob(scene, per_id=3, output=dataset.OutputConfig(chunk_ids=2))
    ref = SceneRenderer(scene)
    monkeypatch.setattr(dataset, "SceneRenderer", lambda config, batch_size, **kw: SceneRenderer(replace(config, device="cpu"), 2, **kw))
    out = tmp_path / "gpu"
    got = dataset.run(out, replace(job, scene=replace(scene, device="cuda")), workers=2, progress=False)
    assert got["complete"] and got["images"] == 15
    for chunk in range(job.n_chunks):
        params = [ref.sampler.image_params(i, s) for i in job.chunk_identities(chunk) for s in range(3)]
        plan = ref.plan(params)
        results = [r for i in range(0, len(plan), 2) for r in ref.render_plan(gpu.slice_plan(plan, i, i + 2))]
        for p, r in zip(params, results, strict=True):
            stem = out / "images" / f"{p.identity:06d}" / image_stem(p.identity, p.sample)
            assert stem.with_suffix(".png").read_bytes() == encode_image(r.rgb, "png", 95)
            for name in ("depth", "normals"):
                assert (stem.parent / f"{stem.name}_{name}.png").read_bytes() == encode_image(r.extras[name], "png", 95)


def test_slice_plan_and_pixel_ring_round_trip(model_file, tmp_path):
    renderer = SceneRenderer(tiny_job(model_file, "cpu").scene)
    plan = renderer.plan([renderer.sampler.image_params(0, s) for s in range(5)])
    part = gpu.slice_plan(plan, 2, 4)
    assert len(part) == 2 and part.params == plan.params[2:4]
    np.testing.assert_array_equal(part.backgrounds, plan.backgrounds[2:4])
    np.testing.assert_array_equal(part.translation, plan.translation[2:4])

    arrays = renderer.render_plan_arrays(plan)
    assert set(arrays) == {"rgb", "depth", "landmarks", "visible", "landmarks5", "landmarks5_visible"}
    ring = gpu.PixelRing(tmp_path, 2, gpu.row_specs(arrays), max_rows=8)
    try:
        views = ring.views(1, 5)
        for name, a in arrays.items():
            views[name][:] = a
        back = gpu.read_ring(ring.handle(1, 5))  # as a write worker sees it
        for name, a in arrays.items():
            assert back[name].dtype == a.dtype
            np.testing.assert_array_equal(back[name], a)
        one = renderer.results_from_arrays(back)[3]
        np.testing.assert_array_equal(one.extras["depth"], arrays["depth"][3])
        assert one.record() == renderer.render_plan(plan)[3].record()
    finally:
        ring.close()


def test_pixel_ring_without_memfd(model_file, tmp_path, monkeypatch):
    """Where os.memfd_create is missing the ring is a temporary file in the given folder."""
    monkeypatch.delattr(gpu.os, "memfd_create", raising=False)
    ring = gpu.PixelRing(tmp_path, 2, [("a", "<u2", (3, 4))], max_rows=5)
    assert [p.suffix for p in tmp_path.iterdir()] == [".ring"]
    ring.views(0, 5)["a"][:] = 7
    assert (gpu.read_ring(ring.handle(0, 5))["a"] == 7).all()
    ring.close()
    assert not list(tmp_path.iterdir())

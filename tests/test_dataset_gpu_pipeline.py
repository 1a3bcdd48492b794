"""The GPU path's pipeline (workers plan chunks, the main process renders the plans, the
same workers encode and write), run with a CPU device renderer so it needs no GPU."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from conftest import make_tiny_model
from test_dataset import tree_hashes

from morphgen import dataset
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
                        lambda config, batch_size: SceneRenderer(replace(config, device="cpu"), batch_size))
    out = tmp_path / "gpu"
    got = dataset.run(out, tiny_job(model_file, "cuda"), workers=2, progress=False)
    assert got["complete"] and got["images"] == 12 and got["bytes"] == ref["bytes"]
    assert json.loads((out / "manifest.json").read_text())["complete"]
    assert not (out / ".partial").exists()
    hashes = tree_hashes(out)
    assert len([k for k in hashes if k.startswith("images/")]) == 24  # rgb + depth
    assert hashes == tree_hashes(tmp_path / "cpu")


def test_slice_plan_and_pixel_ring_round_trip(model_file, tmp_path):
    renderer = SceneRenderer(tiny_job(model_file, "cpu").scene)
    plan = renderer.plan([renderer.sampler.image_params(0, s) for s in range(5)])
    part = dataset.slice_plan(plan, 2, 4)
    assert len(part) == 2 and part.params == plan.params[2:4]
    np.testing.assert_array_equal(part.backgrounds, plan.backgrounds[2:4])
    np.testing.assert_array_equal(part.translation, plan.translation[2:4])

    arrays = renderer.render_plan_arrays(plan)
    assert set(arrays) == {"rgb", "depth", "landmarks", "visible", "landmarks5", "landmarks5_visible"}
    ring = dataset.PixelRing(tmp_path, 2, dataset.row_specs(arrays), max_rows=8)
    try:
        views = ring.views(1, 5)
        for name, a in arrays.items():
            views[name][:] = a
        back = dataset.read_ring(ring.handle(1, 5))  # as a write worker sees it
        for name, a in arrays.items():
            assert back[name].dtype == a.dtype
            np.testing.assert_array_equal(back[name], a)
        one = renderer.results_from_arrays(back)[3]
        np.testing.assert_array_equal(one.extras["depth"], arrays["depth"][3])
        assert one.record() == renderer.render_plan(plan)[3].record()
    finally:
        ring.close()
    assert not list(tmp_path.iterdir())  # a memfd on Linux; a temporary file elsewhere, removed


def test_pixel_ring_without_memfd(model_file, tmp_path, monkeypatch):
    """Where os.memfd_create is missing the ring is a temporary file in the given folder."""
    monkeypatch.delattr(dataset.os, "memfd_create", raising=False)
    ring = dataset.PixelRing(tmp_path, 2, [("a", "<u2", (3, 4))], max_rows=5)
    assert [p.suffix for p in tmp_path.iterdir()] == [".ring"]
    ring.views(0, 5)["a"][:] = 7
    assert (dataset.read_ring(ring.handle(0, 5))["a"] == 7).all()
    ring.close()
    assert not list(tmp_path.iterdir())

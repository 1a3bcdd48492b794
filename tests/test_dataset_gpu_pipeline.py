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


def test_render_plan_batched_slices_a_plan(model_file):
    renderer = SceneRenderer(tiny_job(model_file, "cpu").scene, batch_size=2)
    plan = renderer.plan([renderer.sampler.image_params(0, s) for s in range(5)])
    part = dataset.slice_plan(plan, 2, 4)
    assert len(part) == 2 and part.params == plan.params[2:4]
    np.testing.assert_array_equal(part.backgrounds, plan.backgrounds[2:4])
    np.testing.assert_array_equal(part.translation, plan.translation[2:4])
    batched = dataset.render_plan_batched(renderer, plan)  # batches of 2, 2, 1
    whole = renderer.render_plan(plan)
    assert len(batched) == 5
    for a, b in zip(batched, whole):
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
        assert np.mean(a.rgb != b.rgb) < 1e-3  # equal up to float rounding of the decoded mesh

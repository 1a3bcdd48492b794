"""Level of detail (morphgen.lod, `--lod`): a dense mesh renders on a subset of its
vertices, with the landmarks, borders, topology and params of the whole one."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from fixtures import icosphere, write_bfm2017_fixture
from morphgen.cli.main import cli

import morphgen.lod as lod_module
from morphgen import lod_cache
from morphgen.appearance import Appearance
from morphgen.errors import ConfigError
from morphgen.loading import load_model
from morphgen.lod import Level, decimate_mesh, decimated, lod_level, parse_lod
from morphgen.render.synthetic import synthetic_face_grid
from morphgen.sampling import SamplingConfig
from morphgen.scene import SceneConfig, SceneRenderer


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory):
    """A BFM-2017-layout face mask of 81 x 81 vertices: at 48 px its edges are half a pixel."""
    path = tmp_path_factory.mktemp("lod") / "dense.h5"
    write_bfm2017_fixture(path, mesh=synthetic_face_grid(81))
    return str(path)


def _edge_counts(tris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mesh's distinct edges and how many triangles use each."""
    t = np.asarray(tris, np.int64)
    return np.unique(np.sort(np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]]), 1), axis=0,
                     return_counts=True)


def _edges(tris: np.ndarray) -> np.ndarray:
    return _edge_counts(tris)[0]


def test_decimation_keeps_landmarks_borders_topology_and_orientation(dense_model):
    full = load_model(dense_model)
    lod, keep = decimated(full, Level(2000))
    assert lod.n_vertices == 2000 and lod.n_triangles < full.n_triangles / 2
    # the kept vertices are the model's own: landmarks sit where they sat, on the same face
    for name, i in full.landmarks.items():
        np.testing.assert_array_equal(lod.shape.mean.reshape(-1, 3)[lod.landmarks[name]],
                                      full.shape.mean.reshape(-1, 3)[i])
    coeffs = np.random.default_rng(0).normal(size=full.shape.n_components)
    whole = (full.shape.mean + full.shape.scaled_basis() @ coeffs).reshape(-1, 3)
    part = (lod.shape.mean + lod.shape.scaled_basis() @ coeffs).reshape(-1, 3)
    np.testing.assert_allclose(part, whole[keep], atol=1e-3)
    assert lod.metadata["lod"] == {"of_vertices": full.n_vertices}
    lod.validate()   # its bases are rows of orthonormal ones: marked, and accepted
    # same Euler characteristic (no hole opened or closed) and the same border length
    euler = lambda m: m.n_vertices - len(_edges(m.triangles)) + m.n_triangles
    assert euler(lod) == euler(full)
    border = lambda m: int((_edge_counts(m.triangles)[1] == 1).sum())
    assert border(lod) == border(full)
    # every triangle still faces outward (+z for this mask): none folded over
    v = lod.shape.mean.reshape(-1, 3).astype(np.float64)
    t = lod.triangles
    n = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    assert (n[:, 2] > 0).mean() > 0.99


def test_decimation_is_a_pure_function_of_the_mesh():
    face = synthetic_face_grid(41)
    shapes = face.vertices[None].astype(np.float64)
    locked = np.zeros(len(face.vertices), bool)
    a = decimate_mesh(shapes, face.triangles, locked, 600)
    b = decimate_mesh(shapes.copy(), face.triangles.copy(), locked, 600)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    locked[::7] = True
    kept, _ = decimate_mesh(shapes, face.triangles, locked, 600)
    assert set(np.flatnonzero(locked)) <= set(kept.tolist())


def test_auto_follows_the_render_size(dense_model):
    assert lod_level(load_model(None), 128, 1, "auto") is None          # the embedded model: whole at 128 px
    full = load_model(dense_model)
    level = lod_level(full, 48, 1, "auto")
    assert level is not None and decimated(full, level)[0].n_vertices < full.n_vertices / 2
    # no new edge longer than the level's bound: at 48 px, 1.2 px of the framed face
    lod = decimated(full, level)[0]
    def longest(m):   # on the neutral face (mean shape and expression), where the bound holds
        v, t = (m.shape.mean + m.expression.mean).reshape(-1, 3), m.triangles.astype(np.int64)
        return max(np.linalg.norm(v[t[:, i]] - v[t[:, (i + 1) % 3]], axis=1).max() for i in range(3))

    assert longest(lod) <= max(level.max_edge_mm, longest(full)) + 1e-3
    assert lod_level(full, 48, 4, "auto") is None                       # supersampled 4x: a 192 px raster
    assert lod_level(full, 48, 1, "off") is None
    assert lod_level(full, 48, 1, 3000) == Level(3000)
    assert lod_level(full, 48, 1, 10 ** 6) is None                      # more than it has: the whole mesh


def test_lod_renders_close_to_the_whole_mesh_with_the_same_params(dense_model):
    def scene(lod):
        return SceneRenderer(SceneConfig(sampling=SamplingConfig(n_identities=6), model=dense_model, size=48, lod=lod,
                                         backgrounds="plain"))

    whole, part = scene("off"), scene("auto")
    assert part.model.n_vertices < whole.model.n_vertices / 2
    params = [whole.sampler.image_params(i, s) for i in range(6) for s in range(4)]
    assert [p.to_json() for p in params] == [part.sampler.image_params(i, s).to_json() for i in range(6) for s in range(4)]
    a, b = whole.render(params), part.render(params)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.landmarks, y.landmarks, atol=0.02)   # the same vertices, decoded alike
    # visibility tests the depth drawn at a landmark: only one at an occluding edge may flip
    assert (np.stack([x.visible for x in a]) != np.stack([y.visible for y in b])).mean() < 0.05
    diff = np.abs(np.stack([x.rgb for x in a]).astype(int) - np.stack([y.rgb for y in b]))
    assert diff.mean() < 0.5 and (diff.max(-1) > 32).mean() < 0.002


def test_bad_lod_values_are_one_line_errors():
    for bad in ("fast", "50", "-3", True, "", "px", "0.4px", "5px", "-1px", "1.6pxx", "nanpx"):
        with pytest.raises(ConfigError, match="--lod"):
            parse_lod(bad)
    assert parse_lod("AUTO") == "auto" and parse_lod(5000) == 5000 and parse_lod("off") == "off"
    # the longest edge in pixels: one spelling each, and auto's own bound is auto (one config)
    assert parse_lod("1.6px") == parse_lod("1.60 PX") == "1.6px" and parse_lod("2px") == "2px"
    assert parse_lod(f"{lod_module.MAX_EDGE_PX}px") == "auto"
    result = CliRunner().invoke(cli, ["render", "--ids", "1", "--per-id", "1", "--lod", "some", "--out", "x"])
    assert result.exit_code != 0 and "--lod some is invalid" in result.output and "Traceback" not in result.output


def test_a_longer_edge_bound_decimates_further_and_keeps_its_bound(dense_model):
    full = load_model(dense_model)
    auto, coarse = lod_level(full, 48, 1, "auto"), lod_level(full, 48, 1, "2px")
    assert coarse.max_edge_mm == pytest.approx(auto.max_edge_mm * 2 / lod_module.MAX_EDGE_PX)
    a, c = decimated(full, auto)[0], decimated(full, coarse)[0]
    assert c.n_vertices < a.n_vertices * 0.8
    v, t = (c.shape.mean + c.expression.mean).reshape(-1, 3), c.triangles.astype(np.int64)
    assert max(np.linalg.norm(v[t[:, i]] - v[t[:, (i + 1) % 3]], axis=1).max() for i in range(3)) <= coarse.max_edge_mm + 1e-3
    # the keep-whole length scales with the bound: 0.5px keeps at 48 px what auto decimates
    assert lod_level(full, 48, 1, "0.5px") is None
    r = SceneRenderer(SceneConfig(sampling=SamplingConfig(n_identities=2), model=dense_model, size=48, lod="2px",
                                  backgrounds="plain"))
    assert r.model.n_vertices == c.n_vertices


def test_manifest_records_lod_unless_off(tmp_path, dense_model):
    """No ``lod`` means off, as in every manifest written before the option."""
    for lod, expect in (("auto", "auto"), ("off", None), ("3000", 3000), ("1.6px", "1.6px"), ("1.2px", "auto")):
        out = tmp_path / lod
        r = CliRunner().invoke(cli, ["render", "--model", dense_model, "--ids", "1", "--per-id", "2", "--size", "64",
                                     "--lod", lod, "--workers", "1", "--quiet", "--out", str(out)])
        assert r.exit_code == 0, r.output
        scene = json.loads((out / "manifest.json").read_text())["config"]["scene"]
        assert scene.get("lod") == expect


def test_model_info_says_what_auto_renders(dense_model):
    r = CliRunner().invoke(cli, ["model", "info", dense_model, "--json"])
    assert r.exit_code == 0, r.output
    levels = json.loads(r.output)["lod_auto_vertices"]
    assert levels["64"] < load_model(dense_model).n_vertices and levels["224"] is None
    text = CliRunner().invoke(cli, ["model", "info"]).output
    assert "--lod auto: 64 px whole" in text


def test_closed_parts_keep_a_volume_and_isolated_vertices_go():
    v, t = icosphere(2, 80.0)
    v = np.concatenate([v, np.zeros((5, 3))])             # five vertices of no triangle
    kept, tris = decimate_mesh(v[None].astype(np.float64), t, np.zeros(len(v), bool), 4)
    assert len(kept) >= 4 and kept.max() < len(v) - 5
    edges = _edges(tris)
    assert len(kept) - len(edges) + len(tris) == 2          # still a closed surface, not a flat double triangle
    assert len(np.unique(np.sort(tris, 1), axis=0)) == len(tris)


def test_appearance_fields_stay_on_the_face_at_any_level(dense_model):
    full = load_model(dense_model)
    lod, keep = decimated(full, Level(1500))
    a, b = Appearance(full), Appearance(lod, full, keep)
    np.testing.assert_array_equal(b.wrinkles, a.wrinkles[keep])
    np.testing.assert_array_equal(b.beard, a.beard[:, keep])

    def dense(on, values, n):
        out = np.zeros((len(values), n), np.float32)
        out[:, on] = values
        return out

    for name in ("spots_dark_on", "spots_red_on", "pores_on"):   # moles, blemishes and texture where they were
        np.testing.assert_array_equal(dense(b.spot_on, getattr(b, name), lod.n_vertices),
                                      dense(a.spot_on, getattr(a, name), full.n_vertices)[:, keep])


def test_yaml_lod_off_and_a_dataset_from_before_lod_resumes_whole(tmp_path, dense_model):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {dense_model}\nids: 2\nper-id: 2\nsize: 48\nlod: off\nchunk-ids: 1\n")
    first = tmp_path / "first"
    r = CliRunner().invoke(cli, ["render", "--config", str(cfg), "--workers", "1", "--quiet", "--out", str(first)])
    assert r.exit_code == 0, r.output
    manifest = json.loads((first / "manifest.json").read_text())
    assert "lod" not in manifest["config"]["scene"]          # as every manifest written before --lod
    # lose one chunk, then resume with the default --lod auto: the whole mesh again, same bytes
    params = sorted((first / "params").iterdir())
    assert len(params) == 2
    params[1].unlink()
    images = sorted((first / "images").rglob("*.png"))
    before = {p.relative_to(first): p.read_bytes() for p in images}
    r = CliRunner().invoke(cli, ["render", "--model", dense_model, "--ids", "2", "--per-id", "2", "--size", "48",
                                 "--chunk-ids", "1", "--workers", "1", "--quiet", "--resume", "--out", str(first)])
    assert r.exit_code == 0, r.output
    after = {p.relative_to(first): p.read_bytes() for p in sorted((first / "images").rglob("*.png"))}
    assert after == before


def test_close_ups_keep_more_vertices(dense_model):
    from morphgen.distributions import Uniform
    from morphgen.sampling import PoseConfig

    def kept(scale):
        pose = PoseConfig(scale=scale) if scale else PoseConfig()
        return SceneRenderer(SceneConfig(sampling=SamplingConfig(n_identities=2, pose=pose), model=dense_model,
                                         size=48)).model.n_vertices

    assert kept(None) < kept(Uniform(1.5, 2.0)) <= load_model(dense_model).n_vertices


def test_ctrl_c_during_the_decimation_is_a_clean_keyboard_interrupt():
    """A Ctrl-C that lands while the numba decimation runs is raised after it, as a
    KeyboardInterrupt (the command's one line), not mid-way through numba's boxing of
    the result (a SystemError, or a segfault of the command)."""
    import subprocess
    import sys

    code = """
import os, signal, threading, time
import numpy as np
from morphgen.lod import decimate_mesh
from morphgen.render.synthetic import synthetic_face_grid
def run(grid):
    m = synthetic_face_grid(grid)
    decimate_mesh(m.vertices[None].astype(np.float64), m.triangles, np.zeros(len(m.vertices), bool), 100)
run(9)  # compiled (or loaded from numba's cache) before the timed run
t = time.perf_counter(); run(121); took = time.perf_counter() - t
for k in range(10):
    threading.Timer(took * (0.2 + 0.06 * k), lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    try:
        run(121)
        time.sleep(took)
    except KeyboardInterrupt:
        pass
print("clean")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and "clean" in done.stdout, done.stderr[-2000:]


def test_decimations_are_cached_on_disk_and_a_bad_entry_is_computed_again(dense_model, tmp_path, monkeypatch):
    """The next process reads a model's decimation from the disk cache, exactly as
    computed; an entry that is unreadable, another decimation's, or not a valid decimation
    of the model is computed and written again; an edited model is decimated afresh; a
    cache that cannot be written, or is turned off, costs nothing but the time."""
    from dataclasses import replace

    model = load_model(dense_model)
    level = lod_level(model, 48, 1, "auto")
    real, calls = lod_module.decimate_mesh, []

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(lod_module, "decimate_mesh", counted)

    def fresh(m=model, lv=level):
        lod_module._CACHE.clear()  # as a new process: only the disk remembers
        calls.clear()
        small, keep = decimated(m, lv)
        return keep, small.triangles

    monkeypatch.setenv("MORPHGEN_CACHE_DIR", "off")
    keep0, tris0 = fresh()
    assert calls
    monkeypatch.setenv("MORPHGEN_CACHE_DIR", str(tmp_path / "c"))
    assert np.array_equal(fresh()[0], keep0) and calls
    entry, = (tmp_path / "c" / "lod").glob("*.npz")
    keep, tris = fresh()
    assert not calls and np.array_equal(keep, keep0) and np.array_equal(tris, tris0)  # read back
    stored = dict(np.load(entry))
    other_keep, other_tris = fresh(lv=Level(2000))  # another valid decimation of this model
    landmark = int(np.flatnonzero(np.isin(keep0, list(model.landmarks.values())))[0])
    gap = next(j for j in range(1, len(keep0)) if keep0[j] - keep0[j - 1] > 1)
    no_landmark = np.sort(np.r_[np.delete(keep0, landmark), keep0[gap] - 1])  # valid but for a landmark gone
    bad = [b"not a zip", "npy", {**stored, "key": np.array("another")},
           {**stored, "keep": other_keep, "tris": other_tris, "key": np.array("another")},
           {**stored, "tris": stored["tris"] + len(keep0)}, {**stored, "keep": no_landmark}]
    for content in bad:
        if isinstance(content, bytes):
            entry.write_bytes(content)
        elif content == "npy":
            with open(entry, "wb") as f:
                np.save(f, keep0)
        else:
            np.savez(entry, **content)
        keep, tris = fresh()
        assert calls and np.array_equal(keep, keep0) and np.array_equal(tris, tris0), str(content)[:40]
        fresh()
        assert not calls  # written again, and read back
    flipped = replace(model, triangles=np.ascontiguousarray(model.triangles[:, ::-1]))  # same file hash
    monkeypatch.setenv("MORPHGEN_CACHE_DIR", "off")
    expect = fresh(flipped)
    monkeypatch.setenv("MORPHGEN_CACHE_DIR", str(tmp_path / "c"))
    got = fresh(flipped)
    assert calls and np.array_equal(got[0], expect[0]) and np.array_equal(got[1], expect[1])
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("MORPHGEN_CACHE_DIR", str(tmp_path / "file"))  # a file where the folder would go
    assert np.array_equal(fresh()[0], keep0)
    monkeypatch.setenv("MORPHGEN_CACHE_DIR", "off")
    before = sorted(tmp_path.rglob("*"))
    assert np.array_equal(fresh()[0], keep0) and sorted(tmp_path.rglob("*")) == before


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MORPHGEN_CACHE_DIR", str(tmp_path / "m"))
    assert lod_cache.cache_dir() == tmp_path / "m" / "lod"
    monkeypatch.setenv("MORPHGEN_CACHE_DIR", " OFF ")
    assert lod_cache.cache_dir() is None
    monkeypatch.delenv("MORPHGEN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert lod_cache.cache_dir() == tmp_path / "x" / "morphgen" / "lod"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert lod_cache.cache_dir() == tmp_path / "h" / ".cache" / "morphgen" / "lod"
    monkeypatch.setattr(lod_cache.os.path, "expanduser", lambda p: p)  # no home to be found
    assert lod_cache.cache_dir() is None


def test_the_cache_keeps_the_entries_used_last_and_drops_dead_temporary_files(tmp_path, monkeypatch):
    """A write keeps the folder to MAX_ENTRIES entries, those read or written last (a read
    marks its entry used), and removes the temporary files of writers killed over an hour
    ago; a younger one may be a writer at work and stays."""
    import os
    import time

    monkeypatch.setenv("MORPHGEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(lod_cache, "MAX_ENTRIES", 3)
    folder = tmp_path / "lod"
    keep, tris, locked = np.arange(3, dtype=np.int64), np.array([[0, 1, 2]], np.int32), np.zeros(10, bool)
    t0 = time.time() - 1000
    for k in range(3):
        lod_cache.store(("entry", k), keep, tris)
        os.utime(lod_cache._path(("entry", k))[0], (t0 + k, t0 + k))  # entry 0 the oldest
    dead, alive = folder / ".x.npz.1.2.tmp", folder / ".y.npz.3.4.tmp"
    dead.write_bytes(b"half")
    alive.write_bytes(b"half")
    os.utime(dead, (t0 - 3 * 3600, t0 - 3 * 3600))
    assert lod_cache.load(("entry", 0), 10, locked) is not None  # read: used last now
    lod_cache.store(("entry", 3), keep, tris)
    kept = {k for k in range(4) if lod_cache._path(("entry", k))[0].is_file()}
    assert kept == {0, 2, 3}
    assert not dead.exists() and alive.exists()

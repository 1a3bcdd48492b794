"""`morphgen model info` and the one-line error contract of the CLI."""
import subprocess
import sys

import numpy as np
from click.testing import CliRunner

from morphgen.cli.main import cli
from fixtures import write_bfm2009_fixture, write_bfm2017_fixture


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_help_lists_commands():
    r = run("--help")
    assert r.exit_code == 0 and "model" in r.output


def test_help_does_not_import_torch():
    """`morphgen --help` answers at once: command modules import morphgen (torch, numba) lazily."""
    code = "import sys; from morphgen.cli.main import cli; assert 'torch' not in sys.modules, 'torch imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


def test_model_info_bfm2017(tmp_path):
    path = tmp_path / "model2017-1_face12_nomouth.h5"
    write_bfm2017_fixture(path)
    r = run("model", "info", str(path))
    assert r.exit_code == 0, r.output
    assert "bfm2017" in r.output and "vertices:" in r.output and "center.nose.tip" in r.output


def test_model_info_bfm2009_json(tmp_path):
    path = tmp_path / "01_MorphableModel.mat"
    write_bfm2009_fixture(path)
    r = run("model", "info", str(path), "--json")
    assert r.exit_code == 0, r.output
    assert '"source": "bfm2009"' in r.output


def test_missing_and_corrupt_model_one_line_errors(tmp_path):
    r = run("model", "info", str(tmp_path / "nope.h5"))
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "does not exist" in r.output
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    r = run("model", "info", str(bad))
    assert r.exit_code == 2 and r.output.startswith("Error:") and "Traceback" not in r.output
    r = run("model", "info", str(tmp_path / "model.obj"))
    assert r.exit_code == 2


def test_folder_and_damaged_npz_models_are_one_line_errors(tmp_path, monkeypatch):
    """A folder given as the model (".", "/" or "": it has no file name to put a sidecar
    beside), a morphgen .npz whose meta_json is cut or not an object, and a text file named
    .npz: each is one line saying what is wrong (they were tracebacks, and numpy's advice to
    load the text file "unsafely" with pickles)."""
    from conftest import make_tiny_model

    monkeypatch.chdir(tmp_path)
    good = tmp_path / "good.npz"
    make_tiny_model().save_npz(good)
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "cut.npz", **arrays | {"meta_json": arrays["meta_json"][:20]})
    np.savez(tmp_path / "list.npz", **arrays | {"meta_json": np.frombuffer(b"[1, 2]", np.uint8)})
    np.savez(tmp_path / "tri.npz", **arrays | {"triangles": arrays["triangles"] + 10**6})
    (tmp_path / "text.npz").write_text("hello")
    for path, match in ((".", "is a folder"), ("", "is empty: give a path"), ("/", "is a folder"),
                        ("cut.npz", "meta_json entry is not valid JSON"), ("list.npz", "is a JSON list, not an object"),
                        ("text.npz", "not an .npz archive"), ("tri.npz", "tri.npz: triangle indices span")):
        r = run("model", "info", path)
        assert r.exit_code == 2 and r.output.count("\n") == 1 and match in r.output, (path, r.output)
        assert "allow_pickle" not in r.output
    r = run("render", "--model", ".", "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and "is a folder" in r.output and not (tmp_path / "o").exists()



def test_inconsistent_npz_entries_are_one_line_errors(tmp_path):
    """Entries of the wrong shape or type passed `model info` and failed in a render with a
    bare numpy IndexError or ValueError, or were tracebacks of `model info` itself."""
    import json

    from conftest import make_tiny_model

    good = tmp_path / "good.npz"
    make_tiny_model().save_npz(good)
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["meta_json"]).decode())
    n = len(arrays["shape_mean"]) // 3

    def meta_with(**kv):
        return {"meta_json": np.frombuffer(json.dumps({**meta, **kv}).encode(), np.uint8)}

    cases = {
        "ibug": ({"ibug68": np.full(68, 10**6, np.int32)}, "ibug68 must be 68 vertex indices"),
        "region": ({"region_face": np.ones(5, bool)}, "region 'face' has shape (5,)"),
        "variance": ({"shape_variance": np.ones((3, 2), np.float32)}, "shape variance has shape (3, 2)"),
        "no_triangles": ({"triangles": np.zeros((0, 3), np.int32)}, "the mesh has no triangles"),
        "landmarks_list": (meta_with(landmarks=[1, 2]), "an entry is malformed"),
        "landmark_text": (meta_with(landmarks={"a": "abc"}), "an entry is malformed"),
        "metadata_list": (meta_with(metadata=[1]), "metadata is a list, not a mapping"),
        "noise_array": ({"shape_noise_variance": np.ones(3, np.float32)}, "an entry is malformed"),
        "mean_text": ({"shape_mean": np.array(["a"] * (3 * n))}, "an entry is malformed"),
        # an expression basis without its mean was dropped silently; fractional indices truncated
        "expression_no_mean": ({"expression_mean": None}, "lacks the entry 'expression_mean'"),
        "triangles_float": ({"triangles": arrays["triangles"] + 0.7}, "triangles holds indices that are not whole"),
        "landmark_fraction": (meta_with(landmarks={"a": 3.7}), "landmark 'a' holds indices that are not whole"),
    }
    for name, (change, match) in cases.items():
        entries = {k: v for k, v in (arrays | change).items() if v is not None}
        np.savez(tmp_path / f"{name}.npz", **entries)
        r = run("model", "info", str(tmp_path / f"{name}.npz"))
        assert r.exit_code == 2 and r.output.count("\n") == 1 and match in r.output, (name, r.output)


def test_model_commands_check_out_before_work(tmp_path):
    """`model export --seed -1` is a usage error (it was numpy's traceback); `model
    calibrate` and `model landmarks` refuse an --out they cannot write before rendering and
    running the detector (they failed after, with the operating system's words)."""
    r = run("model", "calibrate", "--ids", "1", "--per-id", "1")  # the embedded model: its shipped file is not a default
    assert r.exit_code == 2 and "give --out FILE" in r.output and r.output.count("\n") == 1, r.output
    r = run("model", "export", "--out", str(tmp_path / "m.ply"), "--seed", "-1")
    assert r.exit_code == 2 and "--seed" in r.output and not (tmp_path / "m.ply").exists()
    from morphgen.loading import default_model_path

    afile = tmp_path / "afile"
    afile.write_text("x")
    for args in (["calibrate", "--ids", "1", "--per-id", "1"], ["landmarks", str(default_model_path())]):
        r = run("model", *args, "--out", str(afile / "c.json"))
        assert r.exit_code == 2 and "is a file, not a folder" in r.output and r.output.count("\n") == 1, r.output


def test_unknown_option_is_a_usage_error():
    r = run("model", "info", "--frobnicate")
    assert r.exit_code == 2 and "No such option" in r.output


def test_model_export_ply_and_obj(tmp_path):
    import trimesh

    for name in ("face.ply", "face.obj"):
        r = run("model", "export", "--out", str(tmp_path / name), "--identity", "3")
        assert r.exit_code == 0, r.output
        mesh = trimesh.load(tmp_path / name, process=False)
        assert len(mesh.vertices) == 6429 and len(mesh.faces) == 12638
        assert 150 < np.ptp(mesh.vertices[:, 1]) < 400  # a head-and-neck height in mm
    r = run("model", "export", "--out", str(tmp_path / "face.stl"))
    assert r.exit_code == 2 and ".ply or .obj" in r.output


def test_model_info_digest_is_the_manifests_model_sha256(tmp_path):
    """The embedded model has a calibration file beside it: `model info` gives the file's
    sha256 and the digest a dataset's manifest records, so the two can be matched."""
    import json

    r = run("render", "--ids", "1", "--per-id", "1", "--size", "32", "--out", str(tmp_path / "ds"), "--quiet")
    assert r.exit_code == 0, r.output
    info = json.loads(run("model", "info", "--json").output)
    assert info["digest"] == json.loads((tmp_path / "ds" / "manifest.json").read_text())["model_sha256"]
    assert info["digest"] != info["sha256"]
    text = run("model", "info").output
    assert f"digest:     {info['digest']}" in text

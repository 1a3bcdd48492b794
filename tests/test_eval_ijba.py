"""IJB-A 1:1 on a two-split fixture in the published layout: reading (malformed lines,
missing image, empty landmark cells), crops, template pooling, outputs and errors."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from morphgen.cli.eval_cmd import eval_group
from morphgen.errors import DataError
from recognition.evaluation.ijba import FaceCrops, Face, read_split, sets_dir
from test_eval_fixtures import eval_run, write_ijba  # noqa: F401


@pytest.fixture(scope="module")
def ijba(tmp_path_factory):
    root = tmp_path_factory.mktemp("ijba") / "IJB-A"
    info = write_ijba(root)
    return root, info


def invoke(*args):
    return CliRunner().invoke(eval_group, [str(a) for a in args])


def test_read_split_layout_and_bad_lines(ijba):
    root, info = ijba
    sp = read_split(sets_dir(root), 1)
    assert [m.split(": ")[0] for m in sp.malformed] == info["malformed"]
    assert len(sp.subject) == 8 and sp.subject[1000] == 100 and sp.subject[1031] == 103
    assert len(sp.faces) == 1 + 16                                   # the missing-image row is read, not the short one
    assert sum(f.right_eye is None for f in sp.faces) == 9           # empty landmark cells -> None
    assert len(sp.comparisons) == 28 and sp.comparisons[0] == (1, 1000, 1001) and sp.comparisons[2][0] == 4
    assert sets_dir(root / "IJB-A_11_sets") == root / "IJB-A_11_sets"   # the sets folder itself works too


def test_crop_methods():
    img = np.zeros((90, 100, 3), np.uint8)
    faces = [Face("a", (10, 10, 40, 40), (40, 20), (20, 20), (30, 32)), Face("b", (10, 10, 40, 40))]
    lms = np.full((2, 5, 2), np.nan, np.float32)
    crops = FaceCrops([None, None], faces, lms, 32, "arcface", 0.2, align=True)
    assert [crops.method(0), crops.method(1)] == ["metadata", "box"]
    lms[1] = [[20, 20], [40, 20], [30, 30], [22, 40], [38, 40]]
    assert crops.method(1) == "mtcnn" and crops.crop(img, 1).shape == (32, 32, 3)
    assert crops.crop(img, 0).shape == (32, 32, 3)
    assert FaceCrops([None], faces[:1], lms[:1], 32, "arcface", 0.2, align=False).method(0) == "box"


def test_ijba_end_to_end(ijba, eval_run, tmp_path):
    root, info = ijba
    out = tmp_path / "out"
    r = invoke("ijba", "--model", eval_run, "--ijba-dir", root, "--splits", "1-2", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert "IJB-A 1:1 over 2 split(s)" in r.output and "softmax" in r.output
    res = json.loads((out / "result.json").read_text())
    assert res["missing_images"] == ["img/missing.jpg"]
    assert [m.split(": ")[0] for m in res["malformed"]] == info["malformed"]
    assert res["faces"]["distinct"] == res["faces"]["embedded"] == 32
    assert sum(res["faces"]["crop_methods"].values()) == 32
    for s in res["splits"]:
        assert s["scored"] == 28 and s["genuine"] == 4 and s["impostor"] == 24
        for p in ("mean", "softmax"):
            assert set(s[p]["tar_at_far"]) == {"0.1", "0.01", "0.001"}
    for p in ("mean", "softmax"):
        assert res["summary"][p]["tar@far=0.1"]["n"] == 2
        assert res["summary"][p]["auc"]["mean"] > 0.8          # easy fixture identities
    for name in ("result.json", "summary.md", "roc.png", "roc.csv", "scores.csv"):
        assert (out / name).stat().st_size > 0
    rows = (out / "scores.csv").read_text().splitlines()
    assert rows[0] == "split,line,template_a,template_b,same,score_mean,score_softmax" and len(rows) == 57
    md = (out / "summary.md").read_text()
    assert "TAR@FAR=0.01" in md and "verify_metadata_1.csv:4" in md
    # a second run reuses the landmark cache
    assert any((out / ".morphgen_cache").glob("ijba-landmarks-*.json"))


def test_ijba_workers_give_the_same_landmarks_and_scores(ijba, eval_run, tmp_path, monkeypatch):
    """--workers 2 runs MTCNN in two processes (here on every face: the pool's threshold
    lowered); the cache and the scores are those of one process."""
    import recognition.evaluation.ijba as ijba_module

    monkeypatch.setattr(ijba_module, "POOL_MIN", 1)
    pooled = []
    real_pool = ijba_module.run_pool
    monkeypatch.setattr(ijba_module, "run_pool", lambda *a: pooled.append(a[2]) or real_pool(*a))
    root, _ = ijba
    outs = {}
    for w in (1, 2):
        outs[w] = out = tmp_path / f"w{w}"
        r = invoke("ijba", "--model", eval_run, "--ijba-dir", root, "--splits", "1-2", "--out", out, "--quiet",
                   "--workers", w)
        assert r.exit_code == 0, r.output
    caches = [json.loads(next((outs[w] / ".morphgen_cache").glob("ijba-landmarks-*.json")).read_text()) for w in (1, 2)]
    assert pooled == [2]                                      # --workers 1 detected in this process
    assert caches[0] == caches[1] and len(caches[0]) == 32 and all("lm" in h for h in caches[0].values())
    assert (outs[1] / "scores.csv").read_text() == (outs[2] / "scores.csv").read_text()
    results = [json.loads((outs[w] / "result.json").read_text()) for w in (1, 2)]
    assert results[0]["faces"] == results[1]["faces"]


def test_ijba_no_align_and_errors(ijba, eval_run, tmp_path):
    root, _ = ijba
    r = invoke("ijba", "--model", eval_run, "--ijba-dir", root, "--splits", "2", "--out", tmp_path / "o",
               "--no-align", "--quiet", "--margin", "0.1")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o" / "result.json").read_text())
    assert res["faces"]["crop_methods"] == {"mtcnn": 0, "metadata": 0, "box": 16}
    r = invoke("ijba", "--model", eval_run, "--ijba-dir", root, "--splits", "3", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "split3" in r.output and "Traceback" not in r.output
    r = invoke("ijba", "--model", eval_run, "--ijba-dir", tmp_path, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "IJB-A_11_sets" in r.output
    r = invoke("ijba", "--model", eval_run, "--ijba-dir", root, "--splits", "1", "--images", tmp_path / "o",
               "--out", tmp_path / "o2")
    assert r.exit_code == 2 and "none of the" in r.output and "--images" in r.output
    r = invoke("ijba", "--model", tmp_path, "--ijba-dir", root, "--splits", "1-2", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "is not a morphgen run" in r.output


def test_header_without_required_columns(tmp_path):
    d = tmp_path / "IJB-A_11_sets" / "split1"
    d.mkdir(parents=True)
    (d / "verify_metadata_1.csv").write_text("TEMPLATE_ID,FILE\n1,img/1.jpg\n")
    (d / "verify_comparisons_1.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="lacks SUBJECT_ID, FACE_X"):
        read_split(sets_dir(tmp_path), 1)


def test_non_finite_or_huge_boxes_and_ids_are_malformed_rows(tmp_path):
    """A NaN or 1e300 face box crashed OpenCV's warp (exit 139, output left behind), an
    infinite template id raised OverflowError, a NaN width passed as a box: each is now a
    malformed row or line, listed, and the rest of the split is read."""
    root = tmp_path / "IJB-A"
    write_ijba(root, splits=1)
    meta = sets_dir(root) / "split1" / "verify_metadata_1.csv"
    lines = meta.read_text().splitlines()
    header = [h.strip().upper() for h in lines[0].split(",")]
    edits = {"FACE_X": "nan", "FACE_WIDTH": "1e300", "TEMPLATE_ID": "inf", "SUBJECT_ID": "-inf", "FACE_HEIGHT": "inf"}
    for ln, (col, value) in enumerate(edits.items(), 5):   # rows 5.. (line 4 is the fixture's short row)
        cells = lines[ln - 1].split(",")
        cells[header.index(col)] = value
        lines[ln - 1] = ",".join(cells)
    meta.write_text("\n".join(lines) + "\n")
    comp = sets_dir(root) / "split1" / "verify_comparisons_1.csv"
    comp.write_text(comp.read_text() + "inf,1000\n")
    sp = read_split(sets_dir(root), 1)
    bad = {m.split(": ")[0] for m in sp.malformed}
    assert {f"verify_metadata_1.csv:{ln}" for ln in range(5, 5 + len(edits))} <= bad
    assert any(m.startswith("verify_comparisons_1.csv:") and "inf,1000" in m for m in sp.malformed)
    assert all(np.isfinite(f.box).all() for f in sp.faces)

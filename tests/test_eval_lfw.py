"""LFW View 2 protocol on a fixture in LFW's layout: pairs.txt parsing (tabs or spaces,
'F N' header), missing images reported with their lines, outputs, one-line errors."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from morphgen.cli.eval_cmd import eval_group
from morphgen.errors import DataError
from recognition.evaluation.lfw import read_pairs
from test_eval_fixtures import LFW_PEOPLE, eval_run, lfw_pairs_text, write_lfw  # noqa: F401

SHARED_ORL = Path(__file__).resolve().parents[2] / "shared" / "data" / "orl_faces"


@pytest.fixture(scope="module")
def lfw(tmp_path_factory):
    root = tmp_path_factory.mktemp("lfw")
    write_lfw(root / "lfw")
    (root / "pairs.txt").write_text(lfw_pairs_text())
    return root


def invoke(*args):
    return CliRunner().invoke(eval_group, [str(a) for a in args])


def test_read_pairs_header_folds_and_labels(tmp_path):
    p = tmp_path / "pairs.txt"
    p.write_text(lfw_pairs_text(sep=" "))                   # space-separated works too
    folds, per, pairs = read_pairs(p)
    assert (folds, per, len(pairs)) == (2, 3, 12)
    assert [x.same for x in pairs[:6]] == [True] * 3 + [False] * 3
    assert pairs[6].fold == 1 and pairs[6].line == 8
    assert (pairs[3].name1, pairs[3].index1, pairs[3].name2, pairs[3].index2) == (LFW_PEOPLE[0], 1, LFW_PEOPLE[1], 2)


@pytest.mark.parametrize("text, msg", [
    ("10 300\nA 1 2\n", "promises 10 fold(s)"),
    ("x\tY\n", ":1: the header's numbers must be whole numbers"),
    ("1\t1\nA\t1\t2\nA\t1\n", ":3: expected 'name i j'"),
    ("1\t1\nA\t1\tb\nA\t1\tB\t2\n", ":2: image numbers must be whole numbers"),
    ("", "is empty"),
])
def test_malformed_pairs_name_the_line(tmp_path, text, msg):
    p = tmp_path / "pairs.txt"
    p.write_text(text)
    with pytest.raises(DataError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        read_pairs(p)


def test_pairs_of_one_kind_are_refused(tmp_path):
    p = tmp_path / "pairs.txt"
    p.write_text("1\t2\nA\t1\t2\nB\t1\t2\nC\t1\t2\nD\t1\t2\n")      # the mismatched half is matched too
    with pytest.raises(DataError, match="has only genuine pairs .4.: a verification list needs both"):
        read_pairs(p)


def test_one_fold_says_its_threshold_was_not_cross_validated(lfw, eval_run, tmp_path):
    one = tmp_path / "pairsDevTest.txt"                        # View 1 style: one number, one fold
    one.write_text("3\n" + "\n".join(lfw_pairs_text().splitlines()[1:7]) + "\n")
    r = invoke("lfw", "--model", eval_run, "--lfw-dir", lfw / "lfw", "--pairs", one, "--out", tmp_path / "out",
               "--quiet", "--no-align")
    assert r.exit_code == 0, r.output
    assert not json.loads((tmp_path / "out" / "result.json").read_text())["accuracy"]["cross_validated"]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "other folds" not in summary and "1-fold: the threshold chosen on the same pairs" in summary
    assert "over 1 folds (one fold: not cross-validated" in r.output, r.output


def test_lfw_end_to_end(lfw, eval_run, tmp_path):
    out = tmp_path / "out"
    r = invoke("lfw", "--model", eval_run, "--lfw-dir", lfw / "lfw", "--pairs", lfw / "pairs.txt", "--out", out,
               "--quiet", "--flip")
    assert r.exit_code == 0, r.output
    assert "LFW accuracy" in r.output and "2 missing an image" in r.output
    res = json.loads((out / "result.json").read_text())
    assert res["pairs"] == {"total": 12, "folds": 2, "per_fold_per_class": 3, "evaluated": 10, "missing": 2}
    missing = {m["line"]: m for m in res["missing_pairs"]}
    assert set(missing) == {4, 12}
    assert missing[4]["missing"] == [f"{LFW_PEOPLE[0]}/{LFW_PEOPLE[0]}_0009.jpg"] and missing[4]["fold"] == 1
    assert missing[12]["missing"] == ["Zed_Absent/Zed_Absent_0001.jpg"] and not missing[12]["same"]
    assert res["absent_people"] == ["Zed_Absent"]
    assert [f["pairs"] for f in res["folds"]] == [5, 5] and [f["missing"] for f in res["folds"]] == [1, 1]
    assert res["accuracy"]["mean"] >= 0.8           # the fixture's identities are easy even for a random net
    assert set(res["tar_at_far"]) == {"0.1", "0.01", "0.001"}
    # MTCNN finds no face in the pattern images: the centre-crop fall-back is used and listed
    assert len(res["images"]["no_face_center_crop"]) == res["images"]["embedded"] == 16
    for name in ("result.json", "summary.md", "roc.png", "roc.csv", "scores.csv"):
        assert (out / name).stat().st_size > 0
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "roc.csv").read_text().startswith("curve,fpr,tpr,threshold")
    md = (out / "summary.md").read_text()
    assert "Accuracy" in md and "line 4 (fold 1)" in md and "Zed_Absent" in md


def test_no_align_and_absent_people_error(lfw, eval_run, tmp_path):
    r = invoke("lfw", "--model", eval_run, "--lfw-dir", lfw / "lfw", "--pairs", lfw / "pairs.txt",
               "--out", tmp_path / "o", "--no-align", "--quiet")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o" / "result.json").read_text())
    assert res["images"]["no_face_center_crop"] == [] and not res["inputs"]["align"]
    bad = tmp_path / "pairs_absent.txt"
    bad.write_text("1\t1\nNobody_Here\t1\t2\nNobody_Here\t1\tNo_One\t1\n")
    r = invoke("lfw", "--model", eval_run, "--lfw-dir", lfw / "lfw", "--pairs", bad, "--out", tmp_path / "o2")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "none of the 2 people named in" in r.output and len(r.output.strip().splitlines()) == 1
    bad.write_text("1\t1\nA\t1\t2\nA\t1\tB\n")
    r = invoke("lfw", "--model", eval_run, "--lfw-dir", lfw / "lfw", "--pairs", bad, "--out", tmp_path / "o2")
    assert r.exit_code == 2 and f"{bad}:3:" in r.output


def test_model_that_is_not_a_run(lfw, tmp_path):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    for model, msg in ((empty, "is not a morphgen run: it holds no checkpoint.pt"), (junk, "not a readable morphgen checkpoint"),
                       (tmp_path / "nowhere", "does not exist")):
        r = invoke("lfw", "--model", model, "--lfw-dir", lfw / "lfw", "--pairs", lfw / "pairs.txt",
                   "--out", tmp_path / "o")
        assert r.exit_code == 2, r.output
        assert "Error: --model" in r.output and msg in r.output and "Traceback" not in r.output
        assert len(r.output.strip().splitlines()) == 1


@pytest.mark.skipif(not SHARED_ORL.is_dir(), reason="shared/data/orl_faces is absent (fresh clone)")
def test_real_faces_are_aligned_with_mtcnn(eval_run, tmp_path):
    """Real photos (ORL, grey PGM) in LFW's layout: MTCNN finds the faces."""
    import cv2
    for p, views in (("s1", (1, 2)), ("s2", (1,))):
        for i in views:
            img = cv2.imread(str(SHARED_ORL / p / f"{i}.pgm"), cv2.IMREAD_COLOR)
            d = tmp_path / "lfw" / f"Person_{p}"
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"Person_{p}_{i:04d}.jpg"), img)
    (tmp_path / "pairs.txt").write_text("1\t1\nPerson_s1\t1\t2\nPerson_s1\t2\tPerson_s2\t1\n")
    r = invoke("lfw", "--model", eval_run, "--lfw-dir", tmp_path / "lfw", "--pairs", tmp_path / "pairs.txt",
               "--out", tmp_path / "o", "--quiet")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o" / "result.json").read_text())
    assert res["images"]["landmarks_detected"] >= 2 and res["pairs"]["evaluated"] == 2


def test_extensions_in_any_case_and_the_unreadable_file_named(lfw, eval_run, tmp_path):
    """.PNG and .JPEG images were reported missing; an unreadable .png was named as .jpg."""
    import shutil

    root = tmp_path / "lfw"
    shutil.copytree(lfw / "lfw", root)
    p = LFW_PEOPLE
    (root / p[1] / f"{p[1]}_0002.jpg").rename(root / p[1] / f"{p[1]}_0002.PNG")    # JPEG bytes: OpenCV reads them
    (root / p[2] / f"{p[2]}_0002.jpg").rename(root / p[2] / f"{p[2]}_0002.JPEG")
    (root / p[5] / f"{p[5]}_0003.jpg").unlink()
    (root / p[5] / f"{p[5]}_0003.png").write_text("not an image")
    out = tmp_path / "out"
    r = invoke("lfw", "--model", eval_run, "--lfw-dir", root, "--pairs", lfw / "pairs.txt", "--out", out, "--quiet",
               "--no-align")
    assert r.exit_code == 0, r.output
    res = json.loads((out / "result.json").read_text())
    missing = {m["line"]: m["missing"] for m in res["missing_pairs"]}
    assert missing == {4: [f"{p[0]}/{p[0]}_0009.jpg"], 12: ["Zed_Absent/Zed_Absent_0001.jpg"],
                       10: [f"{p[5]}/{p[5]}_0003.png"], 13: [f"{p[5]}/{p[5]}_0003.png"]}

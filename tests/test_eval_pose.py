"""Accuracy per yaw: the Multi-PIE layout (camera -> yaw, elevated cameras skipped), a
folder with a poses CSV, reproducible pair files, per-yaw bins and plots."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from morphgen.cli.eval_cmd import eval_group
from morphgen.errors import DataError
from recognition.evaluation.pose import MULTIPIE_CAMERA_YAW, load_pose_data, multipie_camera, yaw_bins
from test_eval_fixtures import eval_run, face_image, write_multipie, write_rgb  # noqa: F401


@pytest.fixture(scope="module")
def multipie(tmp_path_factory):
    return write_multipie(tmp_path_factory.mktemp("mpie") / "Multi-Pie" / "data")


def invoke(*args):
    return CliRunner().invoke(eval_group, [str(a) for a in args])


def test_camera_yaw_map():
    assert multipie_camera("11_0") == (-90.0, False) and multipie_camera("05_1") == (0.0, False)
    assert multipie_camera("24_0") == (90.0, False) and multipie_camera("08_1")[1] and multipie_camera("19_1")[1]
    assert sorted(MULTIPIE_CAMERA_YAW.values()) == list(range(-90, 91, 15))
    assert multipie_camera("99_9") == (None, False)
    assert yaw_bins(np.array([-7.4, 7.6, -0.2, 44]), 15).tolist() == [0.0, 15.0, 0.0, 45.0]


def test_multipie_reader(multipie):
    d = load_pose_data(multipie)
    assert d.kind == "multipie" and len(d) == 4 * 5 * 2
    assert d.skipped == {"elevated_camera": 8}
    assert sorted(set(d.yaw.tolist())) == [-90.0, -30.0, 0.0, 30.0, 90.0]
    assert sorted(set(d.iset.identities)) == ["001", "002", "003", "004"] and sorted(set(d.link)) == [7, 8]
    i = d.iset.files.index("session01/multiview/002/01/04_1/002_01_01_041_08.png")
    assert d.yaw[i] == 30.0 and d.link[i] == 8 and d.iset.identities[i] == "002"


def test_pose_end_to_end_and_rerun_from_pairs(multipie, eval_run, tmp_path):
    out = tmp_path / "out"
    r = invoke("pose", "--model", eval_run, "--images", multipie, "--out", out, "--no-align", "--quiet",
               "--per-fold", "40")
    assert r.exit_code == 0, r.output
    assert "per yaw -90: " in r.output
    res = json.loads((out / "result.json").read_text())
    assert res["inputs"]["kind"] == "multipie" and res["inputs"]["folds"] == 2 and res["inputs"]["identity_disjoint"]
    bins = res["bins"]
    assert set(bins) == {"-90.0", "-30.0", "30.0", "90.0"}       # yaw 0: the only frontal image per light is the gallery
    for b in bins.values():
        assert b["pairs"] == 2 * b["genuine"] and b["genuine"] > 0
    assert set(res["by_abs_yaw"]) == {"30", "90"}
    assert res["accuracy"]["mean"] >= 0.5 and len(res["folds"]) == 2
    lines = (out / "pairs.txt").read_text().splitlines()
    assert lines[0].startswith("# morphgen pairs v1") and len(lines) == 2 + res["pairs"]
    fold, same, bn, gal, probe = lines[2].split("\t")
    assert "/05_1/" in gal and int(same) in (0, 1) and gal.split("_")[-1] == probe.split("_")[-1]   # same flash
    for name in ("result.json", "summary.md", "accuracy_vs_yaw.png", "scores.csv", "roc.png"):
        assert (out / name).stat().st_size > 0
    # the pairs file reproduces the evaluation exactly
    r = invoke("pose", "--model", eval_run, "--images", multipie, "--out", tmp_path / "again", "--no-align",
               "--quiet", "--pairs", out / "pairs.txt")
    assert r.exit_code == 0, r.output
    res2 = json.loads((tmp_path / "again" / "result.json").read_text())
    assert res2["accuracy"] == res["accuracy"] and res2["bins"] == res["bins"]
    assert (tmp_path / "again" / "scores.csv").read_text() == (out / "scores.csv").read_text()


def test_poses_csv_and_errors(eval_run, tmp_path):
    root = tmp_path / "faces"
    rows = ["path,yaw"]
    for k in range(5):
        for n, yaw in enumerate((0, 2, -44, 61)):
            write_rgb(root / f"p{k}" / f"{n}.png", face_image(k, n, 40))
            rows.append(f"p{k}/{n}.png,{yaw}")
    rows.append("p0/missing.png,10")
    (tmp_path / "poses.csv").write_text("\n".join(rows) + "\n")
    d = load_pose_data(root, tmp_path / "poses.csv")
    assert d.kind == "csv" and len(d) == 20 and d.skipped == {"missing_files": 1}
    r = invoke("pose", "--model", eval_run, "--images", root, "--poses", tmp_path / "poses.csv", "--out",
               tmp_path / "o", "--no-align", "--quiet", "--seed", "5")
    assert r.exit_code == 0 and r.output.rstrip().endswith("images skipped: missing files 1"), r.output
    assert "skipped: missing files 1" in (tmp_path / "o" / "summary.md").read_text()
    res = json.loads((tmp_path / "o" / "result.json").read_text())
    assert set(res["bins"]) == {"0.0", "-45.0", "60.0"}             # 2 degrees falls in the frontal bin
    r = invoke("pose", "--model", eval_run, "--images", root, "--out", tmp_path / "o2")
    assert r.exit_code == 2 and "cannot tell the yaw" in r.output and "--poses" in r.output
    (tmp_path / "bad.csv").write_text("path,yaw\np0/0.png,abc\n")
    with pytest.raises(DataError, match=r"bad.csv:2"):
        load_pose_data(root, tmp_path / "bad.csv")
    for yaw in ("nan", "3000", "-inf"):  # NaN was dropped silently, 3000 made a yaw bin of its own
        (tmp_path / "bad.csv").write_text(f"path,yaw\np0/0.png,0\np0/1.png,{yaw}\n")
        with pytest.raises(DataError, match=rf"bad.csv:3: yaw '{yaw}' is not an angle"):
            load_pose_data(root, tmp_path / "bad.csv")
    (tmp_path / "o" / "broken_pairs.txt").write_text("# morphgen pairs v1 {}\n0\t1\tnot-json\ta\tb\n")
    r = invoke("pose", "--model", eval_run, "--images", root, "--poses", tmp_path / "poses.csv", "--out",
               tmp_path / "o3", "--pairs", tmp_path / "o" / "broken_pairs.txt")
    assert r.exit_code == 2 and "broken_pairs.txt:2 is malformed" in r.output


def test_poses_csv_with_a_byte_order_mark_or_not_utf8(tmp_path):
    """A BOM became part of the first path (counted missing); a Latin-1 file was a
    UnicodeDecodeError traceback."""
    root = tmp_path / "faces"
    for k in range(2):
        for n in range(2):
            write_rgb(root / f"p{k}" / f"{n}.png", face_image(k, n, 40))
    text = "p0/0.png,0\np0/1.png,30\np1/0.png,0\np1/1.png,30\n"
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    d = load_pose_data(root, tmp_path / "bom.csv")
    assert len(d) == 4 and d.skipped == {}
    (tmp_path / "latin1.csv").write_bytes("path,yaw\nÇelik/0.png,0\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.csv is not UTF-8 text"):
        load_pose_data(root, tmp_path / "latin1.csv")

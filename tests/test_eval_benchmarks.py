"""Real-face benchmarks beyond LFW: CFP (official protocol files), insightface .bin files
(read without executing pickles) and generic pair lists. Known answers come from planted
embeddings; the CLI runs end to end on fixtures written in the published layouts."""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from morphgen.cli.eval_cmd import eval_group
from morphgen.errors import DataError
from recognition.evaluation import metrics
from recognition.evaluation.cfp import read_cfp, score_cfp
from recognition.evaluation.common import Embedded
from recognition.evaluation.insightface_bin import read_bin, score_bin
from recognition.evaluation.pair_list import identity_of, read_pair_list
from test_eval_fixtures import eval_run, write_bin, write_cfp, write_lfw  # noqa: F401

SHARED_CFP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cfp"


def invoke(*args):
    return CliRunner().invoke(eval_group, [str(a) for a in args])


def one_line_error(res, *needles):
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def cfp(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfp") / "cfp"
    return root, write_cfp(root)


# ----------------------------------------------------------------------------- metrics

def test_eer_and_contiguous_folds():
    fpr, tpr, _ = metrics.roc_curve([0.9, 0.8, 0.4, 0.7, 0.2, 0.1], [True, True, True, False, False, False])
    assert metrics.eer(fpr, tpr) == pytest.approx(1 / 3)     # one genuine below one impostor: FAR = FRR = 1/3
    fpr, tpr, _ = metrics.roc_curve([0.9, 0.8, 0.2, 0.1], [True, True, False, False])
    assert metrics.eer(fpr, tpr) == 0.0
    f = metrics.contiguous_folds(23, 10)                     # sklearn KFold(10): 3 folds of 3, 7 of 2
    assert np.bincount(f).tolist() == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2] and np.all(np.diff(f) >= 0)


# ----------------------------------------------------------------------------- CFP

def test_cfp_reader_follows_the_protocol_files(cfp):
    root, truth = cfp
    data = read_cfp(root)
    assert data.folds == [1, 2]
    for name in ("FF", "FP"):
        p = data.protocols[name]
        want = sum(len(truth["pairs"][name][f]["same"]) + len(truth["pairs"][name][f]["diff"]) for f in (1, 2))
        assert len(p.a) == want and not p.missing
        for k in range(len(p.a)):                             # identity of both images decides the label
            assert (data.identities[p.a[k]] == data.identities[p.b[k]]) == p.same[k]
        if name == "FP":
            assert {data.views[i] for i in p.a} == {"frontal"} and {data.views[i] for i in p.b} == {"profile"}


def test_cfp_known_answer_from_planted_embeddings(cfp):
    """One-hot identity embeddings separate every pair (accuracy 1); a frontal image of
    identity 1 planted with identity 2's embedding makes exactly the fold-1 pairs that use
    it wrong (the other fold picks a threshold between 0 and 1)."""
    root, truth = cfp
    data = read_cfp(root)
    ids = sorted(set(data.identities))
    emb = np.stack([np.eye(len(ids))[ids.index(i)] for i in data.identities]).astype(np.float32)
    res = score_cfp(Embedded(emb, np.ones(len(emb), bool)), data)
    for name in ("FF", "FP"):
        assert res[name]["accuracy"]["mean"] == 1.0 and res[name]["auc"] == 1.0 and res[name]["eer"] == 0.0
    bad_rel = truth["F"][0][2]                                # first frontal image of identity 1 (F index 1)
    bad = data.files.index(bad_rel)
    emb[bad] = np.eye(len(ids))[ids.index("002")]
    res = score_cfp(Embedded(emb, np.ones(len(emb), bool)), data)
    for name in ("FF", "FP"):
        fold1 = truth["pairs"][name][1]
        n1 = len(fold1["same"]) + len(fold1["diff"])
        wrong = sum(1 for a, b in fold1["same"] + fold1["diff"] if a == 1)   # pairs naming F index 1
        wrong -= sum(1 for a, b in fold1["diff"] if a == 1 and _ident(truth, name, b) != "002")
        accs = [f["accuracy"] for f in res[name]["folds"]]
        assert accs == pytest.approx([1 - wrong / n1, 1.0]), (name, accs)
        assert res[name]["accuracy"]["mean"] == pytest.approx((2 - wrong / n1) / 2)
    # a pair with an image that got no embedding is counted and listed with its line (it
    # was counted only)
    ok = np.ones(len(emb), bool)
    ok[bad] = False
    res = score_cfp(Embedded(emb, ok), data)
    listed = [m for m in res["FF"]["missing_pairs"] if "without an embedding" in m["why"]]
    assert len(listed) == res["FF"]["unscored_pairs"] > 0 and all(m["line"].startswith("Protocol/Split/FF/") for m in listed)


def _ident(truth, name, j) -> str:
    """Identity of the second image of a pair (F list for FF, P list for FP)."""
    lst = truth["F"] if name == "FF" else truth["P"]
    return f"{lst[j - 1][1]:03d}"


def test_cfp_missing_image_and_bad_index_are_counted(cfp, tmp_path):
    import shutil

    root = tmp_path / "cfp"
    shutil.copytree(cfp[0], root)
    (root / cfp[1]["P"][0][2]).unlink()                       # profile 1 is gone
    with open(root / "Protocol" / "Split" / "FF" / "02" / "same.txt", "a") as f:
        f.write("999,1\n")                                    # an index the list does not have
    data = read_cfp(root)
    why = [m["why"] for m in data.protocols["FP"].missing]
    assert why and all("missing image" in w for w in why)
    assert [m["why"] for m in data.protocols["FF"].missing] == ["index 999 not in Pair_list_F.txt"]
    (root / "Protocol" / "Split" / "FP" / "01" / "diff.txt").write_text("1;2\n")
    with pytest.raises(DataError, match=r"Split/FP/01/diff.txt:1: expected 'i,j'"):
        read_cfp(root)
    (root / "Protocol" / "Split" / "FP" / "01" / "diff.txt").write_text("\n")  # was read as a fold of genuine pairs
    with pytest.raises(DataError, match=r"FP/01: diff.txt is empty"):
        read_cfp(root)


def test_cfp_cli_end_to_end_counts_alignment_per_view(cfp, eval_run, tmp_path):
    root, _ = cfp
    out = tmp_path / "out"
    res = invoke("cfp", "--model", eval_run, "--cfp-dir", root, "--out", out, "--quiet", "--workers", "1")
    assert res.exit_code == 0, res.output
    assert "CFP-FF accuracy" in res.output and "CFP-FP accuracy" in res.output and "alignment: frontal" in res.output
    r = json.loads((out / "result.json").read_text())
    assert r["inputs"]["folds"] == [1, 2] and set(r["alignment"]) == {"frontal", "profile"}
    fr = r["alignment"]["frontal"]
    assert fr["images"] == 12 and fr["images"] == sum(v for k, v in fr.items() if k != "images")
    assert fr["no_face_typical_crop"] == 12                   # patterns, not faces: every image falls back, counted
    for name in ("FF", "FP"):
        assert 0 <= r[name]["accuracy"]["mean"] <= 1 and len(r[name]["folds"]) == 2 and r[name]["unscored_pairs"] == 0
    for f in ("summary.md", "roc.png", "roc.csv", "scores.csv"):
        assert (out / f).is_file(), f
    assert "typical-position crop" in (out / "summary.md").read_text()
    one_line_error(invoke("cfp", "--model", eval_run, "--cfp-dir", tmp_path, "--out", tmp_path / "o2", "--quiet"),
                   "Pair_list_F.txt does not exist")
    assert not (tmp_path / "o2").exists()


@pytest.mark.skipif(not SHARED_CFP.is_dir(), reason="../shared/data/cfp (the CFP folds) is not present")
def test_second_mtcnn_pass_finds_a_profile_the_first_misses():
    import cv2
    from recognition.detect import detect_faces
    from recognition.landmarks import FIRST_PASS, detect_landmarks

    img = cv2.cvtColor(cv2.imread(str(SHARED_CFP / "Data/Images/006/profile/03.jpg")), cv2.COLOR_BGR2RGB)
    assert detect_faces([img], **FIRST_PASS)[0] is None
    lm, used = detect_landmarks(img)
    assert used == 2 and np.isfinite(np.asarray(lm)).all()
    assert (np.asarray(lm) >= 0).all() and (np.asarray(lm)[:, 0] <= img.shape[1]).all()


# ----------------------------------------------------------------------------- insightface .bin

@pytest.mark.parametrize("protocol", [2, 4])
def test_bin_reader_reads_files_written_the_insightface_way(tmp_path, protocol):
    same = write_bin(tmp_path / "lfw.bin", pairs=12, protocol=protocol)
    b = read_bin(tmp_path / "lfw.bin")
    assert b.same.tolist() == same and len(b.images) == 24 and all(isinstance(x, bytes) for x in b.images)


def test_bin_known_answer_from_planted_embeddings():
    same = np.array([True, False] * 10)
    emb = np.zeros((40, 2), np.float32)
    emb[0::2, 0] = 1
    emb[1::2] = np.where(same[:, None], [1, 0], [0, 1])        # genuine pairs agree, impostor pairs are orthogonal
    assert score_bin(emb, np.ones(40, bool), same)["accuracy"]["mean"] == 1.0
    emb[1] = [0, 1]                                             # pair 0 (fold 0 of 10 folds of 2) now fails
    r = score_bin(emb, np.ones(40, bool), same)
    assert r["folds"][0]["accuracy"] == 0.5 and r["accuracy"]["mean"] == pytest.approx(0.95)
    ok = np.ones(40, bool)
    ok[3] = False                                               # an undecodable image: its pair is unscored
    assert score_bin(emb, ok, same)["unscored_pairs"] == 1


def test_bin_cli_one_row_per_file_and_undecodable_images(eval_run, tmp_path):
    write_bin(tmp_path / "lfw.bin", pairs=20)
    write_bin(tmp_path / "cfp_fp.bin", pairs=20, protocol=2, undecodable=(5,))
    out = tmp_path / "out"
    res = invoke("bin", "--model", eval_run, "--bin", tmp_path / "lfw.bin", "--bin", tmp_path / "cfp_fp.bin",
                 "--out", out, "--quiet", "--flip")
    assert res.exit_code == 0, res.output
    assert "lfw: accuracy" in res.output and "cfp_fp: accuracy" in res.output
    r = json.loads((out / "result.json").read_text())
    assert list(r["sets"]) == ["lfw", "cfp_fp"]
    assert r["sets"]["cfp_fp"]["undecodable_images"] == 1 and r["sets"]["cfp_fp"]["pairs"] == 19
    assert len(r["sets"]["lfw"]["folds"]) == 10
    assert (out / "summary.md").read_text().count("| lfw |") == 1
    # every image was dropped before its embedding (its landmark check looked for a file
    # `lfw.bin/0`) and every pair scored 0: the accuracy was chance, reported as a result
    rows = [ln.split(",") for ln in (out / "scores.csv").read_text().splitlines()[1:] if ln.startswith("lfw,")]
    genuine = [float(r[4]) for r in rows if r[3] == "1"]
    impostor = [float(r[4]) for r in rows if r[3] == "0"]
    assert len(genuine) == len(impostor) == 10 and min(genuine) > 0.5, rows
    assert sum(genuine) / 10 > sum(impostor) / 10 and r["sets"]["lfw"]["accuracy"]["mean"] > 0.5


def test_bin_images_that_get_no_embedding_leave_their_pairs_unscored(eval_run, tmp_path, monkeypatch):
    """An image the embedding step drops (unreadable to it) had a NaN row read as zeros: its
    pairs scored 0 and the file reported chance accuracy as a result."""
    from recognition.evaluation import common

    write_bin(tmp_path / "lfw.bin", pairs=20)
    real = common.find_landmarks
    monkeypatch.setattr(common, "find_landmarks", lambda iset, *a, **k: real(iset, *a, **k).take(np.arange(30)))
    res = invoke("bin", "--model", eval_run, "--bin", tmp_path / "lfw.bin", "--out", tmp_path / "out", "--quiet")
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "out" / "result.json").read_text())["sets"]["lfw"]
    assert r["unscored_pairs"] == 5 and r["undecodable_images"] == 10 and r["accuracy"]["mean"] > 0.5, r


class _Evil:
    def __reduce__(self):
        import os
        return os.system, (f"touch {_Evil.marker}",)


def test_malicious_bin_is_refused_and_nothing_runs(eval_run, tmp_path):
    _Evil.marker = tmp_path / "pwned"
    with open(tmp_path / "evil.bin", "wb") as f:
        pickle.dump(([_Evil(), b"x"], [True]), f, protocol=2)
    res = invoke("bin", "--model", eval_run, "--bin", tmp_path / "evil.bin", "--out", tmp_path / "out", "--quiet")
    one_line_error(res, "evil.bin", "refused", "system")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out").exists()


def test_truncated_and_malformed_bins_are_one_line_errors(eval_run, tmp_path):
    write_bin(tmp_path / "lfw.bin", pairs=6)
    data = (tmp_path / "lfw.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    one_line_error(invoke("bin", "--model", eval_run, "--bin", tmp_path / "cut.bin", "--out", tmp_path / "o"),
                   "cut.bin is truncated")
    with open(tmp_path / "odd.bin", "wb") as f:
        pickle.dump(([b"a", b"b", b"c"], [True, False]), f)
    one_line_error(invoke("bin", "--model", eval_run, "--bin", tmp_path / "odd.bin", "--out", tmp_path / "o"),
                   "2 pairs need 4 images")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- pair lists

def test_pair_list_labels_folds_and_identity_disjointness(tmp_path):
    root = write_lfw(tmp_path / "faces")
    names = sorted(p.name for p in root.iterdir())
    lines = []
    for k, n in enumerate(names):
        lines.append(f"{n}/{n}_0001.jpg\t{n}/{n}_0002.jpg\t{['1', 'same', 'true'][k % 3]}")
        m = names[(k + 1) % len(names)] if k % 2 == 0 else names[(k + 3) % len(names)]
        lines.append(f"{n}/{n}_0003.jpg,{m}/{m}_0001.jpg,{['0', 'diff', 'false'][k % 3]}")
    (tmp_path / "p.txt").write_text("# a comment\n" + "\n".join(lines) + "\n")
    pl = read_pair_list(tmp_path / "p.txt", root, folds=2)
    assert pl.same.tolist() == [True, False] * len(names) and not pl.folds_given
    if pl.identity_disjoint:                                 # no identity in two folds
        fold_of: dict = {}
        for a, b, f in zip(pl.a, pl.b, pl.fold):
            for i in (a, b):
                assert fold_of.setdefault(identity_of(pl.files[i]), f) == f
    assert identity_of("Bea_Arthur_0003.jpg") == "Bea_Arthur" and identity_of("x/y.png") == "x"


def test_pair_list_fold_beyond_an_index_is_one_line(tmp_path):
    """A 23-digit fold overflowed numpy's int64 (a traceback): folds are indices."""
    root = write_lfw(tmp_path / "faces")
    n = sorted(p.name for p in root.iterdir())
    lines = [f"{a}/{a}_0001.jpg {a}/{a}_0002.jpg 1 {'99999999999999999999999' if k else 1}" for k, a in enumerate(n[:2])]
    with pytest.raises(DataError, match="p.txt:2: the fold must be a whole number of at most 6 digits"):
        read_pair_list(_pairs(root, lines, tmp_path / "p.txt"), root)


def test_pair_list_cli_missing_images_and_bad_lines(eval_run, tmp_path):
    root = write_lfw(tmp_path / "faces")
    n = sorted(p.name for p in root.iterdir())
    text = "".join(f"{a}/{a}_0001.jpg {a}/{a}_0002.jpg 1 {k % 2}\n{a}/{a}_0001.jpg {b}/{b}_0002.jpg 0 {k % 2}\n"
                   for k, (a, b) in enumerate(zip(n, n[1:] + n[:1])))
    text += f"{n[0]}/{n[0]}_0009.jpg {n[0]}/{n[0]}_0001.jpg 1 0\n"          # a missing image: counted, listed
    (tmp_path / "p.txt").write_text(text)
    out = tmp_path / "out"
    res = invoke("pairs", "--model", eval_run, "--pairs", tmp_path / "p.txt", "--root", root, "--out", out, "--quiet")
    assert res.exit_code == 0, res.output
    r = json.loads((out / "result.json").read_text())
    assert r["inputs"]["folds_given"] and r["unscored_pairs"] == 1 and r["pairs"] == 12
    assert r["missing_pairs"][0]["line"] == 13 and "_0009.jpg" in r["missing_pairs"][0]["missing"][0]
    (tmp_path / "bad.txt").write_text(f"{n[0]}/{n[0]}_0001.jpg {n[0]}/{n[0]}_0002.jpg maybe\n")
    one_line_error(invoke("pairs", "--model", eval_run, "--pairs", tmp_path / "bad.txt", "--root", root,
                          "--out", tmp_path / "o2"), "bad.txt:1", "label")
    (tmp_path / "mixed.txt").write_text(text.splitlines()[0] + "\n" + text.splitlines()[1].rsplit(" ", 1)[0] + "\n")
    one_line_error(invoke("pairs", "--model", eval_run, "--pairs", tmp_path / "mixed.txt", "--root", root,
                          "--out", tmp_path / "o2"), "mixed.txt:2", "fold on every line")
    assert not (tmp_path / "o2").exists()


# ----------------------------------------------------------------------------- what cannot be cross-validated

def test_cfp_with_one_fold_says_its_threshold_was_not_cross_validated(cfp, eval_run, tmp_path):
    import shutil

    root = tmp_path / "cfp"
    shutil.copytree(cfp[0], root)
    for name in ("FF", "FP"):
        shutil.rmtree(root / "Protocol" / "Split" / name / "02")
    res = invoke("cfp", "--model", eval_run, "--cfp-dir", root, "--out", tmp_path / "out", "--quiet", "--no-align")
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "out" / "result.json").read_text())
    assert r["inputs"]["folds"] == [1] and not r["FF"]["accuracy"]["cross_validated"]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "other folds" not in summary and "not cross-validated" in summary
    assert "over folds 1-1 (one fold: not cross-validated" in res.output, res.output


def test_cfp_protocol_of_one_kind_of_pair_is_refused(cfp, eval_run, tmp_path):
    import shutil

    root = tmp_path / "cfp"
    shutil.copytree(cfp[0], root)
    for diff in (root / "Protocol" / "Split" / "FF").glob("*/diff.txt"):
        diff.write_text("999,999\n")  # (an empty one is refused as a damaged copy, by its file)
    one_line_error(invoke("cfp", "--model", eval_run, "--cfp-dir", root, "--out", tmp_path / "o", "--no-align"),
                   "CFP protocol FF", "has only genuine pairs")
    assert not (tmp_path / "o").exists()


def test_bin_of_one_kind_of_pair_is_refused(eval_run, tmp_path):
    with open(tmp_path / "same.bin", "wb") as f:
        pickle.dump(([b"a", b"b", b"c", b"d"], [True, True]), f)
    one_line_error(invoke("bin", "--model", eval_run, "--bin", tmp_path / "same.bin", "--out", tmp_path / "o"),
                   "same.bin has only genuine pairs", "both genuine and impostor")
    assert not (tmp_path / "o").exists()


def _pairs(root: Path, lines: list[str], path: Path) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("outside", ["/etc/hosts", "../outside.jpg", "Bea_Arthur/../../outside.jpg"])
def test_pair_list_paths_must_stay_under_root(eval_run, tmp_path, outside):
    root = write_lfw(tmp_path / "faces")
    (tmp_path / "outside.jpg").write_bytes((root / "Bea_Arthur" / "Bea_Arthur_0001.jpg").read_bytes())  # readable
    p = _pairs(root, ["Bea_Arthur/Bea_Arthur_0001.jpg Bea_Arthur/Bea_Arthur_0002.jpg 1",
                      f"Bea_Arthur/Bea_Arthur_0001.jpg {outside} 0"], tmp_path / "p.txt")
    one_line_error(invoke("pairs", "--model", eval_run, "--pairs", p, "--root", root, "--out", tmp_path / "o"),
                   "p.txt:2", repr(outside), "points outside --root")
    assert not (tmp_path / "o").exists()


def test_pair_list_of_one_kind_of_pair_is_refused(eval_run, tmp_path):
    root = write_lfw(tmp_path / "faces")
    n = sorted(p.name for p in root.iterdir())
    p = _pairs(root, [f"{a}/{a}_0001.jpg {a}/{a}_0002.jpg 1" for a in n], tmp_path / "p.txt")
    one_line_error(invoke("pairs", "--model", eval_run, "--pairs", p, "--root", root, "--out", tmp_path / "o"),
                   "p.txt has only genuine pairs", "both genuine and impostor")
    assert not (tmp_path / "o").exists()


def test_pair_list_folds_each_hold_genuine_and_impostor_pairs(tmp_path):
    """Five linked identities and one alone: identity-disjoint folds would put the lone
    identity's single genuine pair in a fold of its own, with no impostor to test on."""
    root = write_lfw(tmp_path / "faces")
    n = sorted(p.name for p in root.iterdir())
    lines = [f"{a}/{a}_0001.jpg {a}/{a}_0002.jpg 1\n{a}/{a}_0001.jpg {b}/{b}_0002.jpg 0"
             for a, b in zip(n[:5], n[1:5] + n[:1])]
    lines.append(f"{n[5]}/{n[5]}_0001.jpg {n[5]}/{n[5]}_0002.jpg 1")
    pl = read_pair_list(_pairs(root, lines, tmp_path / "p.txt"), root, folds=2)
    assert sorted(set(pl.fold.tolist())) == [0, 1] and not pl.identity_disjoint
    for f in (0, 1):
        assert pl.same[pl.fold == f].any() and not pl.same[pl.fold == f].all()
    pl = read_pair_list(tmp_path / "p.txt", root, folds=10)   # 6 genuine / 5 impostor pairs: at most 5 folds
    assert len(set(pl.fold.tolist())) == 5


@pytest.mark.parametrize("folds, match", [([0, 0, 0, 0], "every pair is in fold 0"),
                                          ([0, 0, 1, 1], "fold 0 has no impostor pair")])
def test_given_folds_that_cannot_be_cross_validated_are_refused(eval_run, tmp_path, folds, match):
    root = write_lfw(tmp_path / "faces")
    a, b = sorted(p.name for p in root.iterdir())[:2]
    pairs = [f"{a}/{a}_0001.jpg {a}/{a}_0002.jpg 1", f"{b}/{b}_0001.jpg {b}/{b}_0002.jpg 1",
             f"{a}/{a}_0001.jpg {b}/{b}_0002.jpg 0", f"{a}/{a}_0002.jpg {b}/{b}_0001.jpg 0"]
    p = _pairs(root, [f"{x} {f}" for x, f in zip(pairs, folds)], tmp_path / "p.txt")
    one_line_error(invoke("pairs", "--model", eval_run, "--pairs", p, "--root", root, "--out", tmp_path / "o"),
                   "p.txt", match)
    assert not (tmp_path / "o").exists()

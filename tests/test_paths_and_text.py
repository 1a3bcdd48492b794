"""Paths and text as unusual machines hand them over: symlinked identity folders, empty
and `~` paths, BOMs and CRLF, duplicate YAML keys, label whitespace, file-browser junk,
experiment names that are folders of their own."""
from __future__ import annotations

import itertools
import os

import pytest
from click.testing import CliRunner
from morphgen.cli.main import cli
from test_eval_fixtures import eval_run, write_lfw  # noqa: F401

from morphgen.configfile import read_mapping
from morphgen.errors import ConfigError
from recognition.data import read_folder, select_list


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_symlinked_identity_folders_are_read_and_a_loop_is_not_followed(tmp_path):
    faces = write_lfw(tmp_path / "faces")
    names = sorted(p.name for p in faces.iterdir())
    data = tmp_path / "data"
    data.mkdir()
    (data / names[0]).symlink_to(faces / names[0], target_is_directory=True)   # os.walk skipped links: silently
    os.symlink(faces / names[1], data / names[1])
    (faces / names[1] / "up").symlink_to(data, target_is_directory=True)       # a link back up the tree
    iset = read_folder(data)
    assert sorted(set(iset.identities)) == sorted(names[:2])
    assert len(iset) == len(list((faces / names[0]).glob("*.jpg"))) + len(list((faces / names[1]).glob("*.jpg")))


def test_empty_and_home_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    r = run("train", "--data", "", "--out", tmp_path / "r")
    assert r.exit_code == 2 and "'--data': is empty" in r.output, r.output     # it trained on the current folder
    r = run("render", "--model", "", "--ids", 1, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "--model is empty" in r.output, r.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text("out: ~/ds\nids: 1\nper-id: 1\nsize: 32\nquiet: true\n")      # a folder named "~" was made
    r = run("render", "--config", cfg, "--workers", 1)
    assert r.exit_code == 0 and (tmp_path / "ds" / "manifest.json").is_file(), r.output
    r = run("stats", "~/ds", "--out=~/s.png")
    assert r.exit_code == 0 and (tmp_path / "s.png").is_file(), r.output


def test_duplicate_yaml_keys_are_refused_and_boms_read(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("size: 32\nids: 2\nsize: 48\n")
    with pytest.raises(ConfigError, match="the key 'size' is given twice"):
        read_mapping(f, "--config")
    f.write_bytes("\ufeffbase: &b {ids: 3}\r\nother:\r\n  <<: *b\r\n  seed: 1\r\n".encode())
    assert read_mapping(f, "--config") == {"base": {"ids": 3}, "other": {"ids": 3, "seed": 1}}


def test_bom_pair_list_and_list_file_labels(tmp_path):
    from recognition.data import load_imageset
    from recognition.evaluation.pair_list import read_pair_list

    faces = write_lfw(tmp_path / "faces")
    n = sorted(p.name for p in faces.iterdir())
    lines = [f"{a}/{a}_0001.jpg\t{a}/{a}_0002.jpg\t1" for a in n[:2]] + \
            [f"{a}/{a}_0001.jpg\t{b}/{b}_0002.jpg\t0" for a, b in itertools.pairwise(n[:3])]
    p = tmp_path / "p.txt"
    p.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode())             # line 1 was 'missing' an image
    pl = read_pair_list(p, faces, folds=2)
    assert len(pl.same) == 4 and not pl.missing
    iset = load_imageset(faces)
    lst = tmp_path / "l.tsv"
    lst.write_bytes(("\ufeff" + "".join(f"{f}\t{i} \r\n" for f, i in zip(iset.files, iset.identities))).encode())
    picked = select_list(iset, lst)                  # "Ann " was a class beside "Ann"; the BOM hid line 1
    assert picked.identities == iset.identities and not picked.report.get("missing_files")


def test_a_pair_with_an_unreadable_image_is_unscored_not_fatal(tmp_path, eval_run):  # noqa: F811
    """Folds made from the file are dealt over the pairs that can be scored: one pair with a
    0-byte image (or a Thumbs.db) left a fold without a genuine pair, and the whole
    evaluation was refused."""
    faces = write_lfw(tmp_path / "faces")
    n = sorted(p.name for p in faces.iterdir())
    (faces / n[0] / "zero.jpg").write_bytes(b"")
    lines = [f"{a}/{a}_0001.jpg\t{a}/{a}_0002.jpg\t1" for a in n] + \
            [f"{a}/{a}_0001.jpg\t{b}/{b}_0002.jpg\t0" for a, b in zip(n, n[1:] + n[:1])] + \
            [f"{n[0]}/zero.jpg\t{n[0]}/{n[0]}_0001.jpg\t1"]
    p = tmp_path / "p.txt"
    p.write_text("\n".join(lines) + "\n")
    from recognition.evaluation.pair_list import evaluate_pair_list

    res = evaluate_pair_list(eval_run, p, faces, tmp_path / "o", folds=5, align=False)
    assert res["unscored_pairs"] == 1 and res["missing_pairs"][0]["line"] == len(lines)


def test_experiment_names_are_kept_and_folder_names_refused(tmp_path):
    from recognition.experiment_config import load_experiment

    base = ("recipes: {r: {arch: nn4small2, input_size: 32, steps: 1, batch_p: 2, batch_k: 2}}\n"
            "evaluations: {s: {protocol: synthetic, ids: 2, yaws: '-30:30:30', lights: 1, size: 32}}\n")
    cfg = tmp_path / "e.yaml"
    cfg.write_text(base + "datasets: {d-1: {ids: 4}}\ncells: [{dataset: d-1, recipe: r}]\n")
    assert list(load_experiment(cfg).datasets) == ["d-1"]                # it became d_1, and the cell missed it
    cfg.write_text(base + "datasets: {'..': {ids: 4}}\ncells: [{dataset: '..', recipe: r}]\n")
    with pytest.raises(ConfigError, match="not . or .. alone"):
        load_experiment(cfg)


def test_file_browser_junk_is_no_obstacle_to_an_out_folder(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / ".DS_Store").write_bytes(b"\0")
    r = run("render", "--ids", 1, "--per-id", 1, "--size", 32, "--workers", 1, "--quiet", "--out", out)
    assert r.exit_code == 0, r.output


def test_online_set_paths_are_saved_whole(tmp_path, monkeypatch):
    from recognition.train_config import TrainConfig

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bg=eq").mkdir()
    c = TrainConfig(online="default", steps=1, online_set={"backgrounds": "bg=eq", "pose": "frontal"}).resolved()
    assert c.online_set == {"backgrounds": str(tmp_path / "bg=eq"), "pose": "frontal"}

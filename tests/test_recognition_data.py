"""Readers (morphgen layout, folder tree, RecordIO, WebDataset tar references), bad input,
subsets and list files, alignment, samplers and verification metrics."""
import io
import json
import re
import struct
import tarfile
import warnings

import cv2
import numpy as np
import pytest
import torch

from morphgen.errors import DataError
from morphgen.layout import chunk_marker
from recognition.align import align_face, template_points, umeyama
from recognition.data import (FaceDataset, PKBatchSampler, RandomBatchSampler, drop_small_identities,
                              load_imageset, make_subset, read_image, select_list, worker_errors, write_list)
from recognition.landmarks import find_landmarks
from toydata import write_toy_dataset
from recognition.evaluation.metrics import best_threshold, score_auc
from recognition.verify import make_pairs, verification


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), identities=5, per_identity=4, size=96, mixup=1)


# ----------------------------------------------------------------------------- morphgen layout

def test_morphgen_reader_params_landmarks_soft_labels(toy):
    s = load_imageset(toy)
    assert s.kind == "morphgen" and len(s) == 25 and len(set(s.identities)) == 5
    assert not any(f.endswith("_depth.png") for f in s.files)       # extra modalities ignored
    assert np.isfinite(s.landmarks).all()
    mixed = [x for x in s.soft if x]
    assert len(mixed) == 5 and all(abs(sum(x["weights"]) - 1) < 1e-6 for x in mixed)
    names = sorted(set(s.identities))
    ds = FaceDataset(s, {n: i for i, n in enumerate(names)}, 64, "openface")
    i = next(k for k, x in enumerate(s.soft) if x)
    img, label, ids, w = ds[i]
    assert img.shape == (3, 64, 64) and img.dtype == torch.uint8
    sl = s.soft[i]
    assert ids.tolist() == [names.index(sl["ids"][0]), names.index(sl["ids"][1])]
    assert np.allclose(w.numpy(), sl["weights"])
    j = next(k for k, x in enumerate(s.soft) if not x)
    assert ds[j][2].tolist()[1] == -1 and ds[j][3].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("field, value, match", [
    ("landmarks5", [1, 2, 3], "landmarks5 must be 5 [x, y] points, found [1, 2, 3]"),
    ("soft_label", {"ids": [1]}, "soft_label must be"),
    ("soft_label", {"ids": [0, 1], "weights": [1.0]}, "soft_label must be"),
])
def test_malformed_params_row_is_a_one_line_error_naming_the_row(tmp_path, field, value, match):
    root = write_toy_dataset(tmp_path / "d", identities=2, per_identity=2, size=64)
    marker = chunk_marker(root, 0)
    rows = [json.loads(line) for line in marker.read_text().splitlines()]
    rows[2][field] = value
    marker.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=re.escape(f"{marker}:3 ({rows[2]['image']}): {match}")):
        load_imageset(root)


def test_a_file_that_breaks_after_the_check_is_replaced_in_training_and_marked_in_evaluation(tmp_path):
    """An image that decodes at the check and not later (changed since): training takes a
    sibling (with a warning), evaluation and embed a blank marked unreadable -- a sibling's
    embedding would score as the image's."""
    root = write_toy_dataset(tmp_path / "d", identities=2, per_identity=3, size=64)
    s = load_imageset(root)
    classes = {n: i for i, n in enumerate(sorted(set(s.identities)))}
    (root / s.files[1]).write_bytes(np.random.default_rng(0).bytes(500))
    train = FaceDataset(s, classes, 32, "arcface")
    with pytest.warns(UserWarning, match="using another image of its identity"):
        x = train[1][0]
    assert x.float().std() > 0 and not train.unreadable
    evaluation = FaceDataset(s, classes, 32, "arcface", replace_unreadable=False)
    assert not evaluation[1][0].any() and evaluation.unreadable == {1}
    assert evaluation[0][0].any() and evaluation.unreadable == {1}


def test_morphgen_missing_files_and_tar_references(tmp_path):
    root = write_toy_dataset(tmp_path / "d", identities=2, per_identity=2, size=64)
    rows = [json.loads(l) for l in chunk_marker(root, 0).read_text().splitlines()]
    (root / rows[0]["image"]).unlink()                               # a missing image
    # move one image into a WebDataset shard, referenced as tar:member
    (root / "wds").mkdir()
    data = (root / rows[1]["image"]).read_bytes()
    with tarfile.open(root / "wds" / "chunk_000000.tar", "w") as tf:
        info = tarfile.TarInfo("000000_0001.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    (root / rows[1]["image"]).unlink()
    rows[1]["image"] = "wds/chunk_000000.tar:000000_0001.png"
    chunk_marker(root, 0).write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = load_imageset(root)
    assert s.report["missing_files"] == 1 and len(s) == 3
    k = s.files.index("wds/chunk_000000.tar:000000_0001.png")
    assert read_image(s, k).shape == (64, 64, 3)


def test_bad_params_row_is_a_data_error(tmp_path):
    (tmp_path / "params").mkdir()
    (tmp_path / "images").mkdir()
    chunk_marker(tmp_path, 0).write_text('{"image": "a.png"}\n')
    with pytest.raises(DataError, match="params row"):
        load_imageset(tmp_path)


# ----------------------------------------------------------------------------- folder trees

def _write_faces(folder, n, value=128):
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        cv2.imwrite(str(folder / f"{k:03d}.png"), np.full((40, 40, 3), value + k, np.uint8))


def test_folder_reader_content_detection_corrupt_and_single_image_ids(tmp_path):
    _write_faces(tmp_path / "id1", 3)
    _write_faces(tmp_path / "id2", 1)                                  # single image: dropped
    _write_faces(tmp_path / "id3", 2)
    ok, png = cv2.imencode(".pgm", np.zeros((20, 20), np.uint8))
    (tmp_path / "id3" / "noext").write_bytes(png.tobytes())            # no extension, still an image
    (tmp_path / "id1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)  # corrupt JPEG
    (tmp_path / "id1" / "notes.txt").write_text("not an image")
    (tmp_path / "README").write_text("about this folder")
    s = load_imageset(tmp_path)
    assert s.kind == "folder" and s.report["not_images"] == 2
    assert "id3/noext" in s.files and "id1/broken.jpg" in s.files
    s = find_landmarks(s, tmp_path / "cache", detect=False)             # decodes each image once
    assert s.report["unreadable"] == 1 and "id1/broken.jpg" not in s.files
    s = drop_small_identities(s, 2)
    assert s.report["small_identities"] == 1 and "id2" not in s.identities
    assert len(s) == 6
    # the cache answers the second scan without decoding
    again = find_landmarks(load_imageset(tmp_path), tmp_path / "cache", detect=False)
    assert again.files == find_landmarks(load_imageset(tmp_path), None, detect=False).files


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(DataError, match="no usable images"):
        load_imageset(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("text")
    with pytest.raises(DataError, match="no usable images"):
        load_imageset(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_imageset(tmp_path / "nope")


def test_an_error_in_a_loader_worker_is_its_own_one_line_message(tmp_path):
    root = write_toy_dataset(tmp_path / "d", identities=2, per_identity=2, size=64)
    s = load_imageset(root)
    for f in s.files:
        (root / f).write_bytes(b"garbage")
    ds = FaceDataset(s, {n: i for i, n in enumerate(sorted(set(s.identities)))}, 32, "arcface")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    with warnings.catch_warnings(), pytest.raises(DataError) as err:
        warnings.simplefilter("ignore")
        list(worker_errors(loader))
    assert str(err.value).startswith("no image of identity") and "\n" not in str(err.value), str(err.value)


def test_unreadable_image_gives_no_opencv_warning(tmp_path, capfd):
    """The reader counts what it cannot read; OpenCV's own "[ WARN:0@...]" lines would only
    interleave with the progress output (the console script prints Python's warnings as
    one line each: test_dataset.test_warnings_are_one_line_each)."""
    root = write_toy_dataset(tmp_path / "d", identities=2, per_identity=2, size=64)
    s = load_imageset(root)
    (root / s.files[0]).unlink()  # (OpenCV warns of a file it cannot open)
    assert read_image(s, 0) is None
    assert "WARN" not in capfd.readouterr().err


def test_corrupt_image_at_load_time_is_replaced(tmp_path, toy):
    s = load_imageset(toy)
    s.root = tmp_path / "copy"
    for f in s.files:
        (s.root / f).parent.mkdir(parents=True, exist_ok=True)
        (s.root / f).write_bytes((toy / f).read_bytes())
    (s.root / s.files[0]).write_bytes(b"garbage")
    ds = FaceDataset(s, {n: i for i, n in enumerate(sorted(set(s.identities)))}, 32, "arcface")
    with pytest.warns(UserWarning, match="cannot decode"):
        img, label, *_ = ds[0]
    assert img.shape == (3, 32, 32) and img.float().std() > 0 and label == ds.labels[0]


# ----------------------------------------------------------------------------- RecordIO

def _record(payload: bytes) -> bytes:
    pad = (4 - len(payload) % 4) % 4
    return struct.pack("II", 0xCED7230A, len(payload)) + payload + b"\x00" * pad


def write_recordio(folder, labels, with_header=True):
    """A minimal insightface RecordIO writer (the layout mxnet's recordio.pack produces)."""
    folder.mkdir(parents=True, exist_ok=True)
    recs, n = [], len(labels)
    classes = sorted(set(labels))
    if with_header:
        recs.append((0, struct.pack("IfQQ", 2, 0.0, 0, 0) + np.array([n + 1, n + 1 + len(classes)], np.float32).tobytes()))
    for k, lab in enumerate(labels, 1):
        img = np.full((112, 112, 3), 40 * lab + k, np.uint8)
        ok, jpg = cv2.imencode(".jpg", img)
        if k % 2:  # label stored in the header float
            recs.append((k, struct.pack("IfQQ", 0, float(lab), k, 0) + jpg.tobytes()))
        else:      # label stored as a float array after the header
            recs.append((k, struct.pack("IfQQ", 1, 0.0, k, 0) + np.array([lab], np.float32).tobytes() + jpg.tobytes()))
    if with_header:
        for c in classes:
            idx = [k for k, lab in enumerate(labels, 1) if lab == c]
            recs.append((n + 1 + c, struct.pack("IfQQ", 2, 0.0, 0, 0) + np.array([idx[0], idx[-1] + 1], np.float32).tobytes()))
    data, index = b"", []
    for key, payload in recs:
        index.append(f"{key}\t{len(data)}")
        data += _record(payload)
    (folder / "train.rec").write_bytes(data)
    (folder / "train.idx").write_text("\n".join(index) + "\n")
    (folder / "property").write_text(f"{len(classes)},112,112")


@pytest.mark.parametrize("with_header", [True, False])
def test_recordio_reader(tmp_path, with_header):
    labels = [0, 0, 0, 1, 1, 2, 2, 2]
    write_recordio(tmp_path / "rec", labels, with_header)
    s = load_imageset(tmp_path / "rec")
    assert s.kind == "recordio" and len(s) == 8
    assert [int(x) for x in s.identities] == labels
    img = read_image(s, 4)
    assert img.shape == (112, 112, 3) and abs(int(img.mean()) - (40 * 1 + 5)) <= 2
    # records are ArcFace-aligned crops: aligning to the same template at 112 is the identity warp
    assert np.allclose(s.landmarks[0], template_points("arcface", 112))
    ds = FaceDataset(s, {n: i for i, n in enumerate(sorted(set(s.identities)))}, 112, "arcface")
    assert abs(float(ds[4][0].float().mean()) - img.mean()) < 1.0


def test_recordio_bad_magic(tmp_path):
    write_recordio(tmp_path, [0, 1])
    raw = bytearray((tmp_path / "train.rec").read_bytes())
    raw[0:4] = b"\x00\x00\x00\x00"
    (tmp_path / "train.rec").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="magic"):
        load_imageset(tmp_path)


def _rewrite_record(folder, key, payload):
    """Replace record `key` of a written RecordIO by `payload` (the rest re-indexed)."""
    index = [line.split("\t") for line in (folder / "train.idx").read_text().splitlines()]
    keys = [int(i[0]) for i in index]
    raw = (folder / "train.rec").read_bytes()
    offs = [int(i[1]) for i in index] + [len(raw)]
    recs = {k: raw[offs[j]:offs[j + 1]] for j, k in enumerate(keys)}
    recs[key] = _record(payload)
    data, lines = b"", []
    for k in keys:
        lines.append(f"{k}\t{len(data)}")
        data += recs[k]
    (folder / "train.rec").write_bytes(data)
    (folder / "train.idx").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("key,payload,match", [
    (0, struct.pack("IfQQ", 1000, 0.0, 0, 0), "record 0 is damaged .*announces 1000 labels"),
    (0, struct.pack("IfQQ", 2, 0.0, 0, 0) + np.array([np.nan, 5], np.float32).tobytes(), "record 0's label"),
    (0, struct.pack("IfQQ", 2, 0.0, 0, 0) + np.array([1e9, 1e9 + 3], np.float32).tobytes(), "indexes 6"),
    (4, struct.pack("IfQQ", 2, 0.0, 0, 0) + np.array([1, 500], np.float32).tobytes(), "spans images \\[1, 500\\)"),
    (4, struct.pack("IfQQ", 2, 0.0, 0, 0) + np.array([2, 1], np.float32).tobytes(), "spans images \\[2, 1\\)"),
])
def test_recordio_damaged_headers_are_one_line_errors(tmp_path, key, payload, match):
    """A damaged header or identity record is a DataError naming it (they were a buffer
    ValueError, int(NaN), a billion-key list until memory ran out, or silent labels)."""
    write_recordio(tmp_path, [0, 1, 1])          # records 0 (header), 1-3 images, 4-5 identities
    _rewrite_record(tmp_path, key, payload)
    with pytest.raises(DataError, match=match):
        load_imageset(tmp_path)


def test_recordio_short_image_record_is_undecodable_and_negative_offsets_refused(tmp_path):
    write_recordio(tmp_path, [0, 1, 1])
    _rewrite_record(tmp_path, 2, b"abc")         # shorter than its header: read in a loader worker
    s = load_imageset(tmp_path)
    assert read_image(s, 1) is None and read_image(s, 0) is not None
    (tmp_path / "train.idx").write_text("0\t-5\n")
    with pytest.raises(DataError, match="both >= 0"):
        load_imageset(tmp_path)


# ----------------------------------------------------------------------------- subsets, lists

def test_subsets_are_seeded_and_lists_round_trip(toy, tmp_path):
    s = load_imageset(toy)
    a = make_subset(s, n_images=7, seed=3)
    assert len(a) == 7 and a.files == make_subset(s, n_images=7, seed=3).files
    assert a.files != make_subset(s, n_images=7, seed=4).files
    b = make_subset(s, n_ids=3, per_id=5, seed=1)                      # 5 images each (4 + 1 mixup)
    assert len(set(b.identities)) == 3 and len(b) == 15
    with pytest.raises(DataError, match="identities"):
        make_subset(s, n_ids=2, per_id=6)                              # nobody has 6 images
    write_list(b, tmp_path / "list.tsv")
    back = select_list(s, tmp_path / "list.tsv")
    assert back.files == b.files and back.identities == b.identities
    assert np.allclose(back.landmarks, b.landmarks)


def test_a_list_that_matches_no_image_says_so(toy, tmp_path):
    s = load_imageset(toy)
    (tmp_path / "list.txt").write_text("# a comment\nhi\nelsewhere/x.png\tbob\n")
    with pytest.raises(DataError, match=r"--list .*list.txt matched no image under --data .*: none of its 2 lines"):
        select_list(s, tmp_path / "list.txt")


# ----------------------------------------------------------------------------- alignment

def test_umeyama_recovers_similarity_and_alignment_hits_template():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    ang, sc, t = 0.3, 1.7, np.array([5.0, -3.0])
    r = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = sc * src @ r.T + t
    m = umeyama(src, dst)
    assert np.allclose(m[:, :2], sc * r, atol=1e-4) and np.allclose(m[:, 2], t, atol=1e-3)
    # draw dots at landmarks; after alignment they sit on the template points
    img = np.zeros((200, 200, 3), np.uint8)
    lm = template_points("arcface", 112) * 1.3 + [30, 20]
    for x, y in lm:
        cv2.circle(img, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1)
    out = align_face(img, lm, 112, "arcface")
    for x, y in template_points("arcface", 112):
        assert out[int(round(y)), int(round(x))].max() > 200
    assert template_points("openface", 96).shape == (5, 2)


# ----------------------------------------------------------------------------- samplers

def test_pk_sampler_shape_determinism_and_resume():
    labels = np.repeat(np.arange(10), [5, 5, 5, 5, 5, 5, 5, 5, 5, 2])
    s = PKBatchSampler(labels, p=4, k=3, num_batches=6, seed=1)
    batches = list(s)
    assert len(batches) == 6
    for b in batches:
        ids, counts = np.unique(labels[b], return_counts=True)
        assert len(ids) == 4 and all(c == (2 if i == 9 else 3) for i, c in zip(ids, counts))
        assert len(set(b)) == len(b)
    resumed = list(PKBatchSampler(labels, 4, 3, num_batches=2, seed=1, start=4))
    assert resumed == batches[4:]
    assert list(PKBatchSampler(labels, 4, 3, 6, seed=1, rank=1)) != batches
    r = list(RandomBatchSampler(20, 6, num_batches=5, seed=0))
    assert all(len(b) == 6 for b in r) and len(set(sum(r[:3], []))) == 18
    assert list(RandomBatchSampler(20, 6, 2, seed=0, start=3)) == r[3:5]


# ----------------------------------------------------------------------------- verification

def test_verification_metrics():
    labels = np.repeat(np.arange(6), 4)
    i, j, same = make_pairs(labels, 40, seed=0)
    assert same.sum() == 20 and (~same).sum() == 20
    assert all((labels[a] == labels[b]) == s for a, b, s in zip(i, j, same))
    i, j, same = make_pairs(np.repeat(np.arange(3), 2), 100, seed=0)   # only 3 genuine pairs exist
    assert same.sum() == 3 and len(same) == 6                           # balanced: chance stays 0.5
    emb = np.eye(6)[labels] + 0.01 * np.random.default_rng(0).normal(size=(24, 6))
    v = verification(emb, labels, 100, seed=1)
    assert v["accuracy"] == 1.0 and v["auc"] == 1.0
    rng = np.random.default_rng(1)
    scores, truth = rng.normal(size=200), rng.random(200) < 0.4
    scores[truth] += 1.0
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in scores[truth] for n in scores[~truth]])
    assert score_auc(scores, truth) == pytest.approx(brute)
    thr, acc = best_threshold(scores, truth)
    assert acc == pytest.approx(max(np.mean((scores > t) == truth) for t in np.r_[scores, np.inf]))
    assert np.mean((scores > thr) == truth) == pytest.approx(acc)


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path):
    """RecordIO images are first decoded in training: an identity none of whose images
    decodes is a one-line DataError then, and the run folder it had begun (config, lists,
    log) is removed again, as for any error before a checkpoint."""
    from click.testing import CliRunner
    from morphgen.cli.main import cli

    labels = [0, 0, 1, 1, 2, 2]
    write_recordio(tmp_path / "rec", labels)
    for k, lab in enumerate(labels, 1):
        if lab == 1:
            _rewrite_record(tmp_path / "rec", k, struct.pack("IfQQ", 0, 1.0, k, 0) + b"not an image")
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "rec"), "--out", str(out), "--arch", "nn4small2",
                                 "--input-size", "32", "--batch-p", "3", "--batch-k", "2", "--steps", "6",
                                 "--checkpoint-every", "6", "--threads", "1", "--workers", "0", "--quiet"])
    assert r.exit_code == 2 and "no image of identity '1'" in r.output, r.output
    assert r.output.strip().splitlines()[-1].startswith("Error: ") and "Traceback" not in r.output
    assert not out.exists()

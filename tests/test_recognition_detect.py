"""MTCNN (own P/R/O-Net pipeline on facenet-pytorch's shipped weights, no torchvision) on
real greyscale photos from ../shared/data, and the landmark cache."""
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from morphgen.errors import DataError
from recognition.data import load_imageset, make_subset
from recognition.landmarks import find_landmarks
from recognition.detect import detect_faces

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "orl_faces").is_dir(),
                                  reason=f"real test images absent ({SHARED}); CI provides ../shared/data")


def _plausible(box, lm):
    (le, re, nose, ml, mr) = lm
    assert le[0] < re[0] and ml[0] < mr[0]                      # image-left before image-right
    assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1])      # eyes above nose above mouth
    x1, y1, x2, y2 = box
    assert (lm[:, 0] > x1).all() and (lm[:, 0] < x2).all() and (lm[:, 1] > y1).all() and (lm[:, 1] < y2).all()


@needs_shared
def test_mtcnn_on_orl_and_yale():
    files = [SHARED / "orl_faces" / f"s{k}" / "1.pgm" for k in (1, 7, 23)]
    files += [SHARED / "yalefaces" / f"subject{k:02d}.{c}" for k, c in ((2, "normal"), (9, "happy"))]
    images = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]  # grey 2-D arrays
    results = detect_faces(images)
    for f, img, r in zip(files, images, results):
        assert r is not None, f"no face found in {f}"
        box, prob, lm = r
        assert prob > 0.95 and lm.shape == (5, 2)
        _plausible(box, lm)
        eye_dist = np.linalg.norm(lm[1] - lm[0])
        assert 0.15 * img.shape[1] < eye_dist < 0.6 * img.shape[1]
    assert "torchvision" not in sys.modules and "facenet_pytorch" not in sys.modules


def test_no_face_in_flat_image():
    assert detect_faces([np.full((120, 120, 3), 90, np.uint8)]) == [None]


@pytest.mark.parametrize("shape", [(1, 4000), (4000, 1), (3, 30000), (200, 9000)])
def test_the_detector_searches_a_bounded_image(shape, monkeypatch):
    """A 1 x 4,000 px strip was upsampled to a short side of 100 px (100 x 400,000) and
    then padded: cv2 asked for 360 GB and the command ended in a traceback; a 3 x 30,000
    one, padded to 15,000 x 45,000, exhausted 24 GB in MTCNN's pyramid."""
    from recognition import detect

    seen = []
    real = detect._detect_one
    monkeypatch.setattr(detect, "_detect_one", lambda work, *a: seen.append(work.shape) or real(work, *a))
    assert detect_faces([np.full((*shape, 3), 90, np.uint8)], pad=0.25) == [None]
    assert all(max(s[:2]) <= 1.5 * detect.MAX_SIDE for s in seen)  # (a strip too thin for a face: not searched)
    assert seen or min(shape) * detect.MAX_SIDE / max(shape) < 20


@needs_shared
def test_landmark_cache_and_alignment_of_real_folder(tmp_path):
    s = make_subset(load_imageset(SHARED / "orl_faces"), n_ids=2, per_id=2, seed=0)
    assert s.report.get("not_images") == 1                      # the README beside the folders
    a = find_landmarks(s, tmp_path, detect=True)
    assert len(a) == 4 and np.isfinite(a.landmarks).all() and not a.no_face
    cache = list(tmp_path.glob("landmarks-*.json"))
    assert len(cache) == 1
    b = find_landmarks(make_subset(load_imageset(SHARED / "orl_faces"), n_ids=2, per_id=2, seed=0), tmp_path)
    assert np.allclose(a.landmarks, b.landmarks)


@needs_shared
def test_faceless_images_are_listed_and_skipped_by_training(tmp_path):
    from recognition.train import TrainConfig, train
    for k in (1, 2):
        d = tmp_path / "data" / f"s{k}"
        d.mkdir(parents=True)
        for m in (1, 2, 3):
            (d / f"{m}.pgm").symlink_to(SHARED / "orl_faces" / f"s{k}" / f"{m}.pgm")
        cv2.imwrite(str(d / "blank.png"), np.full((112, 92), 128, np.uint8))
    s = find_landmarks(load_imageset(tmp_path / "data"), None)
    assert sorted(s.no_face) == ["s1/blank.png", "s2/blank.png"] and s.report["no_face"] == 2 and len(s) == 6
    summary = train(TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "run"), input_size=40, batch_p=2,
                                batch_k=3, steps=1, workers=0, threads=1, progress=False), say=lambda *a: None)
    assert summary["report"]["no_face"] == 2 and summary["train_images"] == 6
    assert (tmp_path / "run" / "no_face.txt").read_text().count("blank.png") == 2


@needs_shared
def test_landmark_pool_matches_one_process(tmp_path, monkeypatch):
    import recognition.landmarks as lmk

    s = make_subset(load_imageset(SHARED / "orl_faces"), n_ids=3, per_id=3, seed=1)
    one = find_landmarks(s, None, workers=1)
    monkeypatch.setattr(lmk, "POOL_MIN", 1)
    monkeypatch.setattr(lmk, "CHUNK", 2)
    two = find_landmarks(s, tmp_path, workers=2)
    assert one.files == two.files and np.array_equal(one.landmarks, two.landmarks)
    assert len(list(tmp_path.glob("landmarks-v2-*.json"))) == 1


class ExplodingReader:
    """A reader whose every read fails (as a broken network mount would)."""

    def read(self, key):
        raise RuntimeError(f"cannot reach image {key}")


def test_a_failing_landmark_worker_is_one_data_error(monkeypatch):
    import recognition.landmarks as lmk
    from recognition.data import NO_LANDMARKS, ImageSet

    monkeypatch.setattr(lmk, "POOL_MIN", 1)
    iset = ImageSet(Path("mem"), "memory", ["0", "1", "2"], ["a", "a", "b"], np.repeat(NO_LANDMARKS[None], 3, 0),
                    [None] * 3, reader=ExplodingReader())
    monkeypatch.setattr("recognition.data.source_file", lambda iset, rel: Path(__file__))
    with pytest.raises(DataError, match="landmark detection failed in a worker process: RuntimeError: cannot reach"):
        find_landmarks(iset, None, workers=2)


def test_landmark_workers_end_with_a_killed_main_process(tmp_path):
    """kill -9 of an `eval cfp --workers 2` left its two MTCNN workers asleep on their pipes."""
    import os
    import signal
    import subprocess
    import time

    script = tmp_path / "pool.py"
    script.write_text(
        "import multiprocessing as mp, os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from recognition import landmarks\n"
        "if __name__ == '__main__':\n"
        "    ex = ProcessPoolExecutor(2, mp_context=mp.get_context('spawn'), initializer=landmarks._init_worker,\n"
        "                             initargs=(None,))\n"
        "    pids = {ex.submit(os.getpid).result() for _ in range(8)}\n"
        "    print(' '.join(map(str, pids)), flush=True)\n"
        "    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=Path(__file__).parents[1])
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert pids
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] not in ("Z", "X")
        except (FileNotFoundError, IndexError):
            return False

    deadline = time.monotonic() + 20
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in pids if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left


def test_an_interrupted_detection_keeps_what_it_found(monkeypatch, tmp_path):
    """The cache was written once, after the last image: a Ctrl-C an hour into MTCNN kept
    nothing, and the rerun detected every image again."""
    import json

    import recognition.landmarks as lmk
    from recognition.data import NO_LANDMARKS, ImageSet

    calls = []

    def look(source, rel, stamp, detect):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(rel)
        return {"stamp": stamp, "ok": True, "hw": [8, 8], "lm": [[1.0, 1.0]] * 5, "pass": 1}

    monkeypatch.setattr(lmk, "_look", look)
    monkeypatch.setattr("recognition.data.source_file", lambda iset, rel: Path(__file__))
    iset = ImageSet(Path("mem"), "memory", [str(k) for k in range(6)], ["a"] * 6, np.repeat(NO_LANDMARKS[None], 6, 0),
                    [None] * 6, reader=None)
    with pytest.raises(KeyboardInterrupt):
        find_landmarks(iset, tmp_path, workers=1)
    (cache,) = tmp_path.glob("landmarks-v2-*.json")
    assert sorted(json.loads(cache.read_text())) == ["0", "1", "2"]
    calls.clear()
    find_landmarks(iset, tmp_path, workers=1)                   # the rerun looks at the other three only
    assert calls == ["3", "4", "5"]


def test_a_cache_that_cannot_be_saved_does_not_hide_a_ctrl_c(monkeypatch, tmp_path):
    import recognition.landmarks as lmk
    from recognition.data import NO_LANDMARKS, ImageSet

    def look(source, rel, stamp, detect):
        if rel == "1":
            raise KeyboardInterrupt
        return {"stamp": stamp, "ok": True, "hw": [8, 8], "lm": [[1.0, 1.0]] * 5, "pass": 1}

    def full(path, cache):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lmk, "_look", look)
    monkeypatch.setattr(lmk, "write_cache", full)
    monkeypatch.setattr("recognition.data.source_file", lambda iset, rel: Path(__file__))
    iset = ImageSet(Path("mem"), "memory", ["0", "1"], ["a"] * 2, np.repeat(NO_LANDMARKS[None], 2, 0), [None] * 2,
                    reader=None)
    with pytest.raises(KeyboardInterrupt):
        find_landmarks(iset, tmp_path, workers=1)

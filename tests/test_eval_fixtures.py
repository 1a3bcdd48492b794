"""Writers of small evaluation fixtures in the exact published layouts (LFW, IJB-A,
Multi-PIE) and a randomly initialised morphgen run, shared by tests/test_eval_*.py.

Identity k is a smooth random colour pattern; its images add a little noise and a one-
pixel shift, so even an untrained network scores genuine pairs above impostor pairs."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from recognition.checkpoint import save_checkpoint
from recognition.models import build_model

ARCH, SIZE = "iresnet18", 32


def make_run(path: Path, arch: str = ARCH, size: int = SIZE) -> Path:
    """A run folder holding a randomly initialised model's checkpoint."""
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    m = build_model(arch, size)
    save_checkpoint({"arch": arch, "input_size": size, "template": "arcface", "embedding_size": m.embedding_size,
                     "step": 0, "model": m.state_dict(), "head": None, "optimizer": None, "scaler": None,
                     "classes": [], "config": {}, "rng": torch.get_rng_state()}, path / "checkpoint.pt")
    return path


def pattern(identity: int, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(1000 + identity)
    small = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 255)


def face_image(identity: int, n: int, size: int = 48) -> np.ndarray:
    """RGB uint8 image n of an identity."""
    rng = np.random.default_rng([identity, n])
    img = pattern(identity, size) + rng.normal(0, 4, (size, size, 3))
    img = np.roll(img, int(rng.integers(-1, 2)), axis=1)
    return img.clip(0, 255).astype(np.uint8)


def write_rgb(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


# ----------------------------------------------------------------------------- LFW

LFW_PEOPLE = ["Aaron_Peirsol", "Bea_Arthur", "Carl_Reiner", "Dita_Von_Teese", "Emma_Watson", "Frank_Lloyd"]


def write_lfw(root: Path, per_person: int = 3) -> Path:
    for k, name in enumerate(LFW_PEOPLE):
        for i in range(1, per_person + 1):
            write_rgb(root / name / f"{name}_{i:04d}.jpg", face_image(k, i, 64))
    return root


def lfw_pairs_text(sep: str = "\t") -> str:
    """2 folds x (3 matched + 3 mismatched). Line 5 names a missing image (Aaron_Peirsol
    _0009), line 13 a person without a folder (Zed_Absent)."""
    p = LFW_PEOPLE
    fold1 = [f"{p[0]}{sep}1{sep}2", f"{p[1]}{sep}1{sep}3", f"{p[0]}{sep}1{sep}9",
             f"{p[0]}{sep}1{sep}{p[1]}{sep}2", f"{p[2]}{sep}2{sep}{p[1]}{sep}1", f"{p[2]}{sep}3{sep}{p[0]}{sep}3"]
    fold2 = [f"{p[3]}{sep}1{sep}2", f"{p[4]}{sep}2{sep}3", f"{p[5]}{sep}1{sep}3",
             f"{p[3]}{sep}1{sep}{p[4]}{sep}1", f"{p[5]}{sep}2{sep}Zed_Absent{sep}1", f"{p[4]}{sep}3{sep}{p[5]}{sep}3"]
    return f"2{sep}3\n" + "\n".join(fold1 + fold2) + "\n"


# ----------------------------------------------------------------------------- IJB-A

IJBA_HEADER = ["TEMPLATE_ID", "SUBJECT_ID", "FILE", "MEDIA_ID", "SIGHTING_ID", "FRAME", "FACE_X", "FACE_Y",
               "FACE_WIDTH", "FACE_HEIGHT", "RIGHT_EYE_X", "RIGHT_EYE_Y", "LEFT_EYE_X", "LEFT_EYE_Y", "NOSE_BASE_X",
               "NOSE_BASE_Y", "FACE_YAW", "FOREHEAD_VISIBLE", "EYES_VISIBLE", "NOSE_MOUTH_VISIBLE", "INDOOR", "GENDER",
               "SKIN_TONE", "AGE", "FACIAL_HAIR"]


def write_ijba(root: Path, splits: int = 2, subjects: int = 4) -> dict:
    """IJB-A/IJB-A_11_sets/split{1..n}/verify_{metadata,comparisons}_N.csv and images under
    IJB-A/images/{img,frame}/. Per split: `subjects` subjects x 2 templates x 2 faces; the
    face (48 px pattern) sits at a known box in a 100 x 90 canvas. Split 1's metadata has
    a row with too few cells (line 4), a row whose image is missing (img/missing.jpg, its
    template keeps another face), and rows with empty landmark cells; its comparisons
    file has a malformed line (line 3). Returns what was written."""
    sets = root / "IJB-A_11_sets"
    written = {"malformed": [], "missing": ["img/missing.jpg"], "templates": {}}
    img_id = 0
    for s in range(1, splits + 1):
        d = sets / f"split{s}"
        d.mkdir(parents=True, exist_ok=True)
        rows, templates = [], []
        for subj in range(subjects):
            sid = 100 + subj
            for t in range(2):
                tid = s * 1000 + subj * 10 + t
                templates.append((tid, sid))
                for k in range(2):
                    img_id += 1
                    x, y = 20 + k * 4, 15 + k * 3
                    canvas = np.full((90, 100, 3), 90, np.uint8)
                    canvas[y:y + 48, x:x + 48] = face_image(subj, t * 2 + k, 48)
                    folder = "frame" if k else "img"
                    rel = f"{folder}/{img_id}.{'png' if k else 'jpg'}"
                    write_rgb(root / "images" / rel, canvas)
                    lm = ["", "", "", "", "", ""] if (subj + k) % 2 else \
                        [x + 32, y + 18, x + 16, y + 18, x + 24, y + 30]   # right eye at image-right: any order works
                    rows.append([tid, sid, rel, img_id, sid, k, x, y, 48, 48, *lm, 0, 1, 1, 1, 1, "m", 3, 30, 0])
        rows.insert(1, [s * 1000, 100, "img/missing.jpg", 9999, 100, 0, 10, 10, 40, 40, "", "", "", "", "", "",
                        0, 1, 1, 1, 1, "m", 3, 30, 0])
        with open(d / f"verify_metadata_{s}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(IJBA_HEADER)
            for r in rows:
                w.writerow(r)
        lines = (d / f"verify_metadata_{s}.csv").read_text().splitlines()
        if s == 1:  # a row with too few cells at line 4
            lines.insert(3, "1999,100,img/1.jpg,1,100,0,20,15")
            written["malformed"].append(f"verify_metadata_{s}.csv:4")
        (d / f"verify_metadata_{s}.csv").write_text("\n".join(lines) + "\n")
        comps = [(a, b) for i, (a, _) in enumerate(templates) for (b, _) in templates[i + 1:]]
        text = [f"{a},{b}" for a, b in comps]
        if s == 1:
            text.insert(2, "12ab,")
            written["malformed"].append(f"verify_comparisons_{s}.csv:3")
        (d / f"verify_comparisons_{s}.csv").write_text("\n".join(text) + "\n")
        written["templates"][s] = templates
    return written


# ----------------------------------------------------------------------------- Multi-PIE

MP_CAMERAS = ["11_0", "13_0", "05_1", "04_1", "24_0"]  # -90, -30, 0, +30, +90


def write_multipie(root: Path, subjects: int = 4, illums=(7, 8)) -> Path:
    """session01/multiview/SSS/01/CC_C/SSS_01_01_CCC_II.png for eye-level cameras, plus one
    elevated-camera image (08_1) per subject, which the reader skips."""
    for subj in range(1, subjects + 1):
        for cam in MP_CAMERAS + ["08_1"]:
            for il in illums:
                name = f"{subj:03d}_01_01_{cam.replace('_', '')}_{il:02d}.png"
                path = root / "session01" / "multiview" / f"{subj:03d}" / "01" / cam / name
                write_rgb(path, face_image(subj, MP_CAMERAS.index(cam) * 10 + il if cam in MP_CAMERAS else 99, 40))
    return root


@pytest.fixture(scope="session")
def eval_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("eval_run") / "run")


# ----------------------------------------------------------------------------- CFP

def write_cfp(root: Path, ids: int = 4, folds: int = 2, frontal: int = 3, profile: int = 2) -> dict:
    """CFP's original layout: Data/Images/<id:03d>/{frontal,profile}/<nn:02d>.jpg, the
    Protocol/Pair_list_{F,P}.txt lists ('k ../Data/Images/...') and Split/{FF,FP}/<fold:02d>/
    {same,diff}.txt ('i,j'). Fold f holds identities (f-1)*ids/folds+1 .. f*ids/folds;
    same = every within-identity pair, diff = every pair of different identities of the
    fold (FF: frontal-frontal; FP: frontal i, profile j). Returns the lists and pairs."""
    f_list, p_list = [], []
    for ident in range(1, ids + 1):
        for view, n, items in (("frontal", frontal, f_list), ("profile", profile, p_list)):
            for k in range(1, n + 1):
                rel = f"Data/Images/{ident:03d}/{view}/{k:02d}.jpg"
                write_rgb(root / rel, face_image(ident, k + (100 if view == "profile" else 0), 48))
                items.append((len(items) + 1, ident, rel))
    proto = root / "Protocol"
    proto.mkdir(parents=True, exist_ok=True)
    for name, items in (("F", f_list), ("P", p_list)):
        (proto / f"Pair_list_{name}.txt").write_text("".join(f"{k} ../{rel}\n" for k, _, rel in items))
    per = ids // folds
    pairs: dict = {"FF": {}, "FP": {}}
    for f in range(1, folds + 1):
        members = set(range((f - 1) * per + 1, f * per + 1))
        fr = [(k, i) for k, i, _ in f_list if i in members]
        pr = [(k, i) for k, i, _ in p_list if i in members]
        ff_same = [(a, b) for x, (a, ia) in enumerate(fr) for (b, ib) in fr[x + 1:] if ia == ib]
        ff_diff = [(a, b) for x, (a, ia) in enumerate(fr) for (b, ib) in fr[x + 1:] if ia != ib]
        fp_same = [(a, b) for a, ia in fr for b, ib in pr if ia == ib]
        fp_diff = [(a, b) for a, ia in fr for b, ib in pr if ia != ib]
        for name, same, diff in (("FF", ff_same, ff_diff), ("FP", fp_same, fp_diff)):
            d = proto / "Split" / name / f"{f:02d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "same.txt").write_text("".join(f"{a},{b}\n" for a, b in same))
            (d / "diff.txt").write_text("".join(f"{a},{b}\n" for a, b in diff))
            pairs[name][f] = {"same": same, "diff": diff}
    return {"F": f_list, "P": p_list, "pairs": pairs}


# ----------------------------------------------------------------------------- insightface .bin

def write_bin(path: Path, pairs: int = 20, protocol: int = 4, undecodable: tuple = ()) -> list[bool]:
    """An insightface validation file as its tools write it: pickle of (list of encoded
    112x112 JPEG bytes, list of bools); pair k = images 2k, 2k+1, alternately genuine
    and impostor. Images listed in `undecodable` are garbage bytes. Returns issame."""
    import pickle

    images, same = [], []
    for k in range(pairs):
        genuine = k % 2 == 0
        a, b = k, (k if genuine else k + 1000)
        for ident, n in ((a, 0), (b, 1)):
            img = face_image(ident, n, 112)
            ok, enc = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            images.append(b"not an image" if len(images) in undecodable else enc.tobytes())
        same.append(genuine)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump((images, same), f, protocol=protocol)
    return same

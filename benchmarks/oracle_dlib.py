"""A real-face oracle: how a network trained on real photos sees morphgen's renders.

dlib's ResNet face descriptor (trained on about 3M real faces) is run on renders of a
`morphgen render` scene and, for reference, on real photos (CFP, ORL):

- detection rate by |yaw| bin, for MTCNN (the project's aligner) and dlib's HOG detector;
- verification of rendered identities under dlib's descriptor: genuine pairs (same
  identity across pose, light, expression) against as many impostor pairs (different
  identities), over all detected renders and over the near-frontal ones (|yaw| < 30);
- the same figures on CFP (official FF / FP pairs of one fold) and ORL.

Higher AUC / accuracy on renders means identities that a real-face network finds more
face-like and more distinct; "impostor < 0.6" is the share of different rendered people
that dlib would call the same person (real sets: about 0).

    python benchmarks/oracle_dlib.py                                  # default scene, 40 ids x 8
    python benchmarks/oracle_dlib.py --config experiments/online_scene_cpu.yaml --out before.json
    python benchmarks/oracle_dlib.py --set backgrounds=plain --set antialias=1

dlib is optional (never a dependency of morphgen); install it into the venv with
    .venv/bin/pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0
Real-set descriptors are cached under --cache, so reruns pay only for the renders.
See docs/oracle.md for measured figures and how to read them.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from morphgen.errors import ConfigError, DataError, MorphgenError
from morphgen.options import RENDER_DEFAULTS, load_config_file, scene_from_options
from morphgen.scene import SceneRenderer
from recognition.detect import detect_faces
from recognition.evaluation.cfp import read_cfp
from recognition.evaluation.metrics import accuracy_at, best_threshold, score_auc
from recognition.landmarks import SECOND_PASS
from recognition.verify import make_pairs

INSTALL = ".venv/bin/pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SAME_PERSON = 0.6          # dlib's documented decision distance for its descriptor
CHIP_SIZE, CHIP_PADDING = 150, 0.25  # the chip the descriptor was trained on
HOG_UPSAMPLE = 1           # as face_recognition's default: finds faces down to about 40 px
YAW_STEP, FRONTAL_YAW = 15, 30
DEFAULT_PER_ID = 8         # images per identity of a random-pose scene
FLAG_OPTIONS = ("ids", "per_id", "seed", "size")  # set by this script's own flags
# Bump when anything that changes a cached real-image entry changes (models, chip, passes).
CACHE_VERSION = "oracle-v1"


class Oracle:
    """dlib's HOG detector, 5-point shape predictor and ResNet descriptor."""

    def __init__(self) -> None:
        import dlib  # optional: main() checks that it imports before building an Oracle

        # Located without importing face_recognition_models: its __init__ needs pkg_resources.
        models = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]) / "models"
        self.dlib = dlib
        self.hog = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def hog_finds(self, rgb: np.ndarray) -> bool:
        return len(self.hog(rgb, HOG_UPSAMPLE)) > 0

    def describe(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """128-D descriptor of the face in `box` (x1, y1, x2, y2): dlib's 5 points placed
        in the box, the aligned chip, the network."""
        rect = self.dlib.rectangle(*np.rint(box).astype(int).tolist())
        chip = self.dlib.get_face_chip(rgb, self.shape(rgb, rect), CHIP_SIZE, CHIP_PADDING)
        return np.asarray(self.net.compute_face_descriptor(chip), np.float32)


def dlib_missing() -> bool:
    return importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None


# ---------------------------------------------------------------- renders


def parse_sets(items: list[str]) -> dict:
    """--set key=value pairs as render options; values are read as YAML scalars, so
    `expressions=false` is a bool and `antialias=1` an int, as in a config file."""
    import yaml

    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        name = key.strip().replace("-", "_")
        if not sep or name not in RENDER_DEFAULTS:
            raise ConfigError(f"--set {item!r}: write KEY=VALUE with a `morphgen render` option name as KEY")
        if name in FLAG_OPTIONS:
            raise ConfigError(f"--set {item!r}: use this script's --{name.replace('_', '-')} flag instead")
        out[name] = yaml.safe_load(val)
    return out


def render_options(config: str | None, sets: dict, ids: int, seed: int, size: int) -> dict:
    """Render options: defaults < config file < this script's flags < --set."""
    opts = dict(RENDER_DEFAULTS)
    if config:
        opts.update(load_config_file(Path(config)))
    opts.update(ids=ids, seed=seed, size=size, per_id=None, outputs="")
    opts.update(sets)
    return opts


def sample_indices(grid_size: int | None, per_id: int | None) -> list[int]:
    """Which samples of each identity to render: the first `per_id` of a random-pose scene,
    or `per_id` points spread evenly over a controlled grid (all of it by default)."""
    if grid_size is None:
        return list(range(per_id or DEFAULT_PER_ID))
    if per_id is None or per_id >= grid_size:
        return list(range(grid_size))
    return sorted(set(np.rint(np.linspace(0, grid_size - 1, per_id)).astype(int).tolist()))


@dataclass
class Renders:
    images: list[np.ndarray]
    identity: np.ndarray
    yaw: np.ndarray
    scene: dict


def render_set(opts: dict, per_id: int | None) -> Renders:
    scene = scene_from_options(opts)
    renderer = SceneRenderer(scene)
    samples = sample_indices(renderer.sampler.grid_size, per_id)
    params = [renderer.sampler.image_params(i, s) for i in range(scene.sampling.n_identities) for s in samples]
    images = [r.rgb for r in renderer.render(params)]
    return Renders(images, np.array([p.identity for p in params]), np.array([p.yaw for p in params]), scene.to_dict())


def yaw_bins(yaw: np.ndarray) -> list[tuple[int, int]]:
    """[lo, hi) bins of |yaw| in YAW_STEP degrees up to at least 90 (the last one closed)."""
    top = max(90, int(np.ceil(np.abs(yaw).max() / YAW_STEP)) * YAW_STEP) if len(yaw) else 90
    return [(lo, lo + YAW_STEP) for lo in range(0, top, YAW_STEP)]


def detection_by_yaw(yaw: np.ndarray, mtcnn: np.ndarray, hog: np.ndarray) -> list[dict]:
    a = np.abs(yaw)
    rows = []
    bins = yaw_bins(yaw)
    for lo, hi in bins:
        m = (a >= lo) & ((a <= hi) if hi == bins[-1][1] else (a < hi))
        rows.append({"yaw": f"{lo}-{hi}", "images": int(m.sum()), **_rates(mtcnn[m], hog[m])})
    rows.append({"yaw": "all", "images": len(a), **_rates(mtcnn, hog)})
    return rows


def _rates(mtcnn: np.ndarray, hog: np.ndarray) -> dict:
    return {"mtcnn": float(mtcnn.mean()) if len(mtcnn) else None, "hog": float(hog.mean()) if len(hog) else None}


# ---------------------------------------------------------------- verification figures


def distance_figures(dist: np.ndarray, same: np.ndarray) -> dict:
    """The oracle's verdict on pairs at Euclidean descriptor distance `dist`."""
    if not same.any() or same.all():
        return {"pairs": len(same), "genuine": int(same.sum())}
    scores = -dist  # the shared metrics take "higher = same"
    thr, acc = best_threshold(scores, same)
    return {
        "pairs": len(same), "genuine": int(same.sum()),
        "best_accuracy": acc, "best_threshold": -thr,
        "accuracy_at_0.6": accuracy_at(scores, same, -SAME_PERSON),
        "auc": score_auc(scores, same),
        "genuine_distance": float(dist[same].mean()), "impostor_distance": float(dist[~same].mean()),
        "impostor_below_0.6": float((dist[~same] < SAME_PERSON).mean()),
        "genuine_below_0.6": float((dist[same] < SAME_PERSON).mean()),
    }


def labelled_figures(desc: np.ndarray, labels: np.ndarray, n_pairs: int, seed: int) -> dict:
    """Balanced, seeded genuine/impostor pairs among labelled descriptors."""
    i, j, same = make_pairs(labels, n_pairs, seed)
    return {"images": len(labels), **distance_figures(np.linalg.norm(desc[i] - desc[j], axis=1), same)}


def render_figures(oracle: Oracle, r: Renders, n_pairs: int, seed: int) -> tuple[list[dict], dict]:
    dets = detect_faces(r.images)
    mtcnn = np.array([d is not None for d in dets])
    hog = np.array([oracle.hog_finds(im) for im in r.images])
    found = np.nonzero(mtcnn)[0]
    desc = np.stack([oracle.describe(r.images[k], dets[k][0]) for k in found]) if len(found) else np.zeros((0, 128))
    ids, frontal = r.identity[found], np.abs(r.yaw[found]) < FRONTAL_YAW
    verification = {"any pose": labelled_figures(desc, ids, n_pairs, seed),
                    f"|yaw|<{FRONTAL_YAW}": labelled_figures(desc[frontal], ids[frontal], n_pairs, seed)}
    return detection_by_yaw(r.yaw, mtcnn, hog), verification


# ---------------------------------------------------------------- real sets


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)  # grey files (ORL) come back as 3 channels
    if img is None:
        raise DataError(f"cannot read image {path}")
    return np.ascontiguousarray(img[:, :, ::-1])


def look_at(oracle: Oracle, rgb: np.ndarray) -> dict:
    """One real image: which MTCNN pass finds it (1, 2; 0 = neither: the whole image is
    taken as the face box, as these sets are loose face crops), HOG, the descriptor."""
    h, w = rgb.shape[:2]
    mtcnn_pass, det = 1, detect_faces([rgb])[0]
    if det is None:
        mtcnn_pass, det = 2, detect_faces([rgb], **SECOND_PASS)[0]
    if det is None:
        mtcnn_pass, box = 0, np.array([0, 0, w - 1, h - 1], np.float32)
    else:
        box = det[0]
    return {"mtcnn": mtcnn_pass, "hog": oracle.hog_finds(rgb), "desc": oracle.describe(rgb, box).tolist()}


def cached_looks(oracle: Oracle, root: Path, files: list[str], cache_dir: Path, name: str) -> dict[str, dict]:
    """look_at() for every file, from a JSON cache keyed by path, size and mtime."""
    key = hashlib.sha256(f"{CACHE_VERSION}|{root.resolve()}".encode()).hexdigest()[:12]
    path = cache_dir / f"{name}-{key}.json"
    cache = json.loads(path.read_text()) if path.is_file() else {}
    todo = [f for f in files if cache.get(f, {}).get("stamp") != _stamp(root / f)]
    if todo:
        print(f"{name}: describing {len(todo)} images (cached for later runs in {path})", file=sys.stderr, flush=True)
    for f in todo:
        cache[f] = {"stamp": _stamp(root / f), **look_at(oracle, read_rgb(root / f))}
    if todo:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(path)
    return {f: cache[f] for f in files}


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def real_detection(looks: list[dict]) -> dict:
    passes = np.array([x["mtcnn"] for x in looks])
    return {"images": len(looks), "mtcnn": float((passes == 1).mean()),
            "mtcnn_second_pass": float((passes == 2).mean()), "whole_image_box": int((passes == 0).sum()),
            "hog": float(np.mean([x["hog"] for x in looks]))}


def cfp_figures(oracle: Oracle, root: Path, fold: int, n_pairs: int | None, seed: int, cache: Path) -> dict:
    """CFP-FF and CFP-FP on the official pairs of one fold (or a balanced, seeded subset)."""
    data = read_cfp(root)
    if fold not in data.folds:
        raise ConfigError(f"--cfp-fold {fold}: {root} holds folds {data.folds}")
    rng = np.random.default_rng(seed)
    chosen = {}
    for name, p in data.protocols.items():
        k = np.nonzero(p.fold == fold)[0]
        if n_pairs:
            k = np.concatenate([rng.permutation(k[p.same[k] == s])[:n_pairs // 2] for s in (True, False)])
        chosen[name] = (p.a[k], p.b[k], p.same[k])
    used = sorted({int(x) for a, b, _ in chosen.values() for x in np.concatenate([a, b])})
    looks = cached_looks(oracle, data.root, [data.files[x] for x in used], cache, "cfp")
    desc = {x: np.asarray(looks[data.files[x]]["desc"]) for x in used}
    out: dict = {"fold": fold, "detection": {
        view: real_detection([looks[data.files[x]] for x in used if data.views[x] == view])
        for view in ("frontal", "profile")}}
    for name, (a, b, same) in chosen.items():
        dist = np.array([np.linalg.norm(desc[int(x)] - desc[int(y)]) for x, y in zip(a, b)])
        out[f"CFP-{name}"] = {"images": len({int(x) for x in np.concatenate([a, b])}), **distance_figures(dist, same)}
    return out


def orl_figures(oracle: Oracle, root: Path, n_pairs: int, seed: int, cache: Path) -> dict:
    files = sorted(p.relative_to(root).as_posix() for p in root.glob("s*/*.pgm"))
    if not files:
        raise DataError(f"--orl-dir {root} holds no sN/M.pgm images")
    looks = cached_looks(oracle, root, files, cache, "orl")
    desc = np.stack([looks[f]["desc"] for f in files])
    labels = np.array([f.split("/")[0] for f in files])
    return {"detection": real_detection(list(looks.values())), "ORL": labelled_figures(desc, labels, n_pairs, seed)}


# ---------------------------------------------------------------- report


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[c]) for r in cells) for c in range(len(header))]
    return "\n".join("  ".join(s.ljust(w) if c == 0 else s.rjust(w) for c, (s, w) in enumerate(zip(r, widths)))
                     for r in cells)


VERIFICATION_ROWS = [("images", "images"), ("pairs", "pairs"), ("  genuine", "genuine"), ("best accuracy", "best_accuracy"),
                     ("  at distance", "best_threshold"), ("accuracy at 0.6", "accuracy_at_0.6"), ("AUC", "auc"),
                     ("genuine distance", "genuine_distance"), ("impostor distance", "impostor_distance"),
                     ("impostor < 0.6", "impostor_below_0.6"), ("genuine < 0.6", "genuine_below_0.6")]


def report(result: dict) -> str:
    det = [[f"renders |yaw| {r['yaw']}", r["images"], r["mtcnn"], r["hog"]] for r in result["renders"]["detection"]]
    columns = {f"renders {k}": v for k, v in result["renders"]["verification"].items()}
    real = result["real"]
    if "cfp" in real:
        det += [[f"CFP {view}", d["images"], d["mtcnn"], d["hog"]] for view, d in real["cfp"]["detection"].items()]
        columns.update({k: v for k, v in real["cfp"].items() if k.startswith("CFP-")})
    if "orl" in real:
        d = real["orl"]["detection"]
        det.append(["ORL", d["images"], d["mtcnn"], d["hog"]])
        columns["ORL"] = real["orl"]["ORL"]
    ver = [[label] + [c.get(key) for c in columns.values()] for label, key in VERIFICATION_ROWS]
    return (table(["detection rate", "images", "MTCNN", "dlib HOG"], det) + "\n\n"
            + table(["dlib descriptor (Euclidean)"] + list(columns), ver))


def machine() -> str:
    return f"{platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", metavar="RENDER_YAML", help="a `morphgen render` config (default: the defaults)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override one render option, e.g. --set backgrounds=plain (repeatable; wins over --config)")
    ap.add_argument("--ids", type=int, default=40, help="rendered identities (default 40)")
    ap.add_argument("--per-id", type=int, default=None,
                    help=f"images per identity (default {DEFAULT_PER_ID}; with a grid scene: every grid point, or this many "
                         "spread over the grid)")
    ap.add_argument("--seed", type=int, default=0, help="render seed, also seeds the pairs (default 0)")
    ap.add_argument("--size", type=int, default=200,
                    help="render side in pixels, whatever the config says (default 200: dlib's chip is 150 px)")
    ap.add_argument("--pairs", type=int, default=2000,
                    help="pairs per render/ORL figure: up to half genuine, as many impostor (default 2000)")
    ap.add_argument("--cfp-dir", type=Path, default=SHARED / "cfp", help="CFP folder (skipped when absent)")
    ap.add_argument("--cfp-fold", type=int, default=1, help="CFP fold whose official pairs are used (default 1)")
    ap.add_argument("--real-pairs", type=int, default=None,
                    help="a balanced, seeded subset of this many CFP pairs per protocol (default: the whole fold, 700)")
    ap.add_argument("--orl-dir", type=Path, default=SHARED / "orl_faces", help="ORL folder (skipped when absent)")
    ap.add_argument("--no-real", action="store_true", help="renders only")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "morphgen_oracle",
                    help="where real-set descriptors are cached (default ~/.cache/morphgen_oracle)")
    ap.add_argument("--out", type=Path, default=None, help="write every figure and the settings to this JSON file")
    return ap.parse_args(argv)


def run(a: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    oracle = Oracle()
    opts = render_options(a.config, parse_sets(a.sets), a.ids, a.seed, a.size)
    renders = render_set(opts, a.per_id)
    t_render = time.perf_counter()
    detection, verification = render_figures(oracle, renders, a.pairs, a.seed)
    t_oracle = time.perf_counter()
    real: dict = {}
    if not a.no_real and a.cfp_dir.is_dir():
        real["cfp"] = cfp_figures(oracle, a.cfp_dir, a.cfp_fold, a.real_pairs, a.seed, a.cache)
    if not a.no_real and a.orl_dir.is_dir():
        real["orl"] = orl_figures(oracle, a.orl_dir, a.pairs, a.seed, a.cache)
    t_end = time.perf_counter()
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
        "dlib": oracle.dlib.__version__,
        "settings": {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
                     "scene": renders.scene, "images_per_identity": len(renders.images) // max(a.ids, 1)},
        "renders": {"detection": detection, "verification": verification},
        "real": real,
        "seconds": {"render": round(t_render - t0, 1), "oracle_on_renders": round(t_oracle - t_render, 1),
                    "real_sets": round(t_end - t_oracle, 1), "total": round(t_end - t0, 1)},
    }


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if dlib_missing():
        print(f"dlib and its models are not installed (optional, for this benchmark only): {INSTALL}", file=sys.stderr)
        return 2
    try:
        result = run(a)
    except MorphgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report(result))
    s = result["seconds"]
    print(f"\n{s['total']:.0f} s: render {s['render']:.0f}, oracle on renders {s['oracle_on_renders']:.0f}, "
          f"real sets {s['real_sets']:.0f} (cached after the first run)")
    if a.out:
        a.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

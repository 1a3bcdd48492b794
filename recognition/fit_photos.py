"""``morphgen fit``: fit the morphable model to photos (:mod:`morphgen.face_fit`) and write,
per photo, its params record, an overlay and its residuals.

Each photo: decode, MTCNN's five points (both passes of :mod:`.landmarks`), a square view
of the photo (the whole image, padded, when the face fills a good part of it -- as in CFP
or LFW -- else a square around the face) resized to the fit size, the fit, then::

    OUT/params.jsonl        one params record per fitted photo (ImageParams.to_record, with
                            camera_translation and a "fit" entry: source, residuals, time)
    OUT/overlays/<src>.jpg  photo | render | blend, at the fit size
    OUT/residuals.csv       one row per input: status (ok, no_face, unreadable), residuals
    OUT/summary.json        counts, mean residuals, seconds, images per second
    OUT/params_pooled.jsonl (--pool-identities) the records with one face per identity

Why these outputs: ``morphgen render --from-params OUT`` renders the records (the photo's
synthetic twin), the overlays are what a person checks by eye, and the residuals say how
well each fit went without looking. Identities and samples follow the folder: the
identity is the index of the photo's top-level folder under the input (a photo directly
in it is an identity of its own), the sample its index among that folder's photos in
sorted order, so a benchmark's twins keep its identity structure. Photos without a face or
that do not decode are counted skips; for a single photo they are a one-line error.
Pooled identities: each photo is fitted on its own, so the twins of one person's photos
are as many slightly different faces as photos, and little of the person survives
(docs/twins.md). ``pool_identities`` gives every record of an identity the mean of their
shape and colour coefficients, keeping each photo's pose, expression, light and framing:
the averaged estimate a joint fit would approach, for twins that share one face.
Work runs in ``workers`` processes (one torch thread each); results are appended as they
come, so ``--resume`` fits only the photos not yet in residuals.csv.
"""
from __future__ import annotations

import csv
import json
import multiprocessing as mp
import time
import zlib
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from morphgen.dataset.ctrl_c import end_workers, interruptible, submit_held
from morphgen.errors import ConfigError, DataError, MorphgenError
from morphgen.face_fit import FaceFit, FaceFitter, FitOptions
from morphgen.options import check_device
from morphgen.outputs import replace_atomically
from morphgen.render.camera import eye_mouth_distance

from .data import decode_ref, natural_key

RESIDUAL_COLUMNS = ("source", "identity", "sample", "status", "landmark_px", "landmark_rel", "photometric",
                    "inliers", "yaw", "pitch", "roll", "landmarks", "seconds")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".gif", ".tif", ".tiff", ".webp"}
MIN_FACE_FRACTION = 0.12  # eye-to-mouth distance / image side below which the view is cut around the face
FACE_FRACTION = 0.3       # ... and then spans this fraction of the view


@dataclass(frozen=True)
class Photo:
    source: str   # path relative to the input folder
    identity: int
    sample: int


def list_photos(path: Path, ids: int | None = None, exclude: Path | None = None) -> tuple[Path, list[Photo]]:
    """(root, photos) of a photo or a folder of photos (recursively; files OpenCV cannot read
    are not photos), numbered by top-level folder. `ids`: only the first ids identities.
    `exclude`: a folder inside `path` whose files are not photos (the fit's own --out, whose
    overlays a resume had fitted as another identity)."""
    path = Path(path)
    if path.is_file():
        return path.parent, [Photo(path.name, 0, 0)]
    if not path.is_dir():
        raise ConfigError(f"{path} does not exist: give a photo or a folder of photos")
    skip = None
    if exclude is not None and Path(exclude).resolve().is_relative_to(path.resolve()):
        skip = Path(exclude).resolve().relative_to(path.resolve()).as_posix() + "/"
    files = sorted((rel for rel in (p.relative_to(path).as_posix() for p in path.rglob("*")
                                    if p.is_file() and _is_photo(p))
                    if not (skip and rel.startswith(skip))), key=natural_key)
    if not files:
        raise DataError(f"{path} holds no images (looked for files OpenCV can read, in all sub-folders)")
    photos, index, count = [], {}, {}
    for rel in files:
        top = rel.split("/")[0] if "/" in rel else rel
        identity = index.setdefault(top, len(index))
        photos.append(Photo(rel, identity, count.get(identity, 0)))
        count[identity] = count.get(identity, 0) + 1
    if ids is not None:
        photos = [p for p in photos if p.identity < ids]
    return path, photos


def _is_photo(path: Path) -> bool:
    """A file to fit: an image by its name (a corrupt one is then a counted skip) or by its
    content (extension-less files such as Yale's); hidden files are not."""
    if any(part.startswith(".") for part in path.parts[-2:]):
        return False
    return path.suffix.lower() in IMAGE_SUFFIXES or cv2.haveImageReader(str(path))


def square_view(img: np.ndarray, lm5: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The square the fit sees, resized to size x size (borders replicated), and the (2, 3)
    affine map from the photo's pixels to its pixels."""
    h, w = img.shape[:2]
    eye_mouth = float(eye_mouth_distance(lm5))
    side = float(max(h, w))
    cx, cy = w / 2.0, h / 2.0
    if eye_mouth < MIN_FACE_FRACTION * side:
        side = max(eye_mouth / FACE_FRACTION, 16.0)
        cx, cy = lm5.mean(0)
    s = size / side
    m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], np.float64)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    view = cv2.warpAffine(img, m, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)
    return view, m


def view_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Photo pixels (N, 2) -> pixels of the square view made with the map `m`."""
    return points * m[0, 0] + m[:, 2]


class Dlib68:
    """dlib's 68-point shape predictor (iBUG order, the layout of a model's ``ibug68``) on
    the face its HOG detector finds around MTCNN's points. Optional: dlib and the model file
    of face-recognition-models are not morphgen dependencies. HOG finds frontal and
    half-profile faces only, which is where the 68 points are reliable; elsewhere the fit
    uses the five points alone."""

    def __init__(self) -> None:
        import dlib

        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(self.model_file()))

    @staticmethod
    def model_file() -> Path:
        """The predictor's file, or a one-line ConfigError naming what to install."""
        import importlib.util

        if importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None:
            raise ConfigError("--dlib68 needs dlib and its landmark model: "
                              "pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0")
        # located without importing face_recognition_models: its __init__ needs pkg_resources
        models = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]) / "models"
        return models / "shape_predictor_68_face_landmarks.dat"

    def points(self, img: np.ndarray, lm5: np.ndarray) -> np.ndarray | None:
        """(68, 2) photo pixels, or None when no HOG box holds the five points' centre."""
        cx, cy = lm5.mean(0)
        for rect in self.detector(img, 1):
            if rect.left() <= cx <= rect.right() and rect.top() <= cy <= rect.bottom():
                shape = self.predictor(img, rect)
                return np.array([[p.x, p.y] for p in shape.parts()], np.float64)
        return None


def overlay(view: np.ndarray, render: np.ndarray, covered: np.ndarray, inside: np.ndarray | None = None,
            photo_points: np.ndarray | None = None, fitted_points: np.ndarray | None = None) -> np.ndarray:
    """photo | render (on grey) | half-and-half blend where the face covers the photo, each
    panel named. Where the square view reaches past the photo (``inside`` False) it is flat
    grey, not the replicated border the fit saw (streaks that read as damage). The photo's
    five points (MTCNN, green) and the fitted face's (red) are drawn on the blend: the
    landmark residual is their distance."""
    shown = view if inside is None else np.where(inside[..., None], view, 128).astype(np.uint8)
    grey = np.where(covered[..., None], render, 128).astype(np.uint8)
    blend = np.where(covered[..., None], (shown.astype(np.uint16) + render) // 2, shown).astype(np.uint8)
    size = view.shape[0]
    r = max(1, size // 96)
    for points, colour in ((photo_points, (0, 220, 0)), (fitted_points, (230, 0, 0))):
        for x, y in ([] if points is None else points):
            cv2.circle(blend, (round(x), round(y)), r, colour, -1, cv2.LINE_AA)
    panels = [np.ascontiguousarray(p) for p in (shown, grey, blend)]
    scale = max(0.3, size / 400)
    line = int(12 * scale / 0.3)

    def label(panel, text, x, y, colour=(255, 255, 255)):
        cv2.putText(panel, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(panel, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)

    for panel, name in zip(panels, ("photo", "render", "blend")):
        label(panel, name, 3, line)
    if photo_points is not None or fitted_points is not None:  # the points' legend, at the blend's foot
        label(blend, "MTCNN", 3, size - 4, (0, 220, 0))
        label(blend, "fit", 3 + int(46 * scale / 0.3), size - 4, (230, 0, 0))
    return np.hstack(panels)


def fitted_record(fit: FaceFit, photo: Photo, landmarks: int, seconds: float) -> dict:
    """The params record of a fitted photo: the renderer takes its coefficients, pose, light
    and camera_translation as they are; ``fit`` says where it came from and how well it fits."""
    params = replace(fit.params, identity=photo.identity, sample=photo.sample,
                     background_seed=zlib.crc32(photo.source.encode()) & 0x7FFFFFFF)
    return params.to_record() | {"fit": {
        "source": photo.source, "size": fit.size, "landmark_residual_px": round(fit.landmark_residual_px, 3),
        "landmark_residual": round(fit.landmark_residual, 4),
        "photometric_residual": round(fit.photometric_residual, 4), "inliers": round(fit.inlier_fraction, 3),
        "landmarks": landmarks, "seconds": round(seconds, 2)}}


class PhotoFitter:
    """One process's model, fitter and detector: fits photos of one folder."""

    def __init__(self, model: str | None, options: FitOptions, device: str = "cpu", dlib68: bool = False):
        from morphgen.loading import load_model

        self.fitter = FaceFitter(load_model(model, need_five_points=True), options, device)
        if dlib68 and self.fitter.ibug is None:
            raise ConfigError("--dlib68: this model has no 68-point iBUG layout (see `morphgen model landmarks --help`)")
        self.dlib68 = Dlib68() if dlib68 else None

    def fit(self, root: Path, photo: Photo) -> dict:
        """{"row": residuals row, "record": params record or None, "overlay": JPEG bytes or None}."""
        from .landmarks import detect_landmarks

        t0 = time.perf_counter()
        row = dict.fromkeys(RESIDUAL_COLUMNS, "") | {"source": photo.source, "identity": photo.identity,
                                                      "sample": photo.sample}
        img = decode_ref(root, "folder", None, photo.source)
        if img is None:
            return {"row": row | {"status": "unreadable"}, "record": None, "overlay": None}
        lm, _ = detect_landmarks(img)
        if lm is None:
            return {"row": row | {"status": "no_face"}, "record": None, "overlay": None}
        lm = np.asarray(lm, np.float64)
        view, m = square_view(img, lm, self.fitter.options.size)
        lm68 = self.dlib68.points(img, lm) if self.dlib68 is not None else None
        fit = self.fitter.fit(view, view_points(lm, m), None if lm68 is None else view_points(lm68, m))
        n_points = 5 if lm68 is None else 68
        render, covered = self.fitter.render(fit)
        dt = time.perf_counter() - t0
        size = self.fitter.options.size
        inside = cv2.warpAffine(np.ones(img.shape[:2], np.uint8), m, (size, size), flags=cv2.INTER_NEAREST) > 0
        picture = overlay(view, render, covered, inside, view_points(lm, m), self.fitter.fitted_points(fit))
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        row |= {"status": "ok", "landmark_px": round(fit.landmark_residual_px, 3),
                "landmark_rel": round(fit.landmark_residual, 4), "photometric": round(fit.photometric_residual, 4),
                "inliers": round(fit.inlier_fraction, 3), "yaw": round(fit.params.yaw, 2),
                "pitch": round(fit.params.pitch, 2), "roll": round(fit.params.roll, 2), "landmarks": n_points,
                "seconds": round(dt, 2)}
        return {"row": row, "record": fitted_record(fit, photo, n_points, dt), "overlay": jpg.tobytes() if ok else None}


_WORKER: dict = {}


def _init_worker(model: str | None, options: dict, device: str, dlib68: bool) -> None:
    """A fit worker: ends with the main process (no orphan holding 500 MB after a kill of
    it), and takes Ctrl-C only inside a photo's fit (the main process says the line). An
    error here (a bad --model) is kept and raised by every task, as the dataset writer's
    workers do (`morphgen.dataset.workers.pool_worker_init`): raised from an initializer it
    only broke the pool, with the initializers' tracebacks and a false "--resume"."""
    from morphgen.dataset.ctrl_c import ignore_ctrl_c
    from morphgen.dataset.workers import exit_with_parent
    from morphgen.render.threads import limit_threads

    try:
        ignore_ctrl_c()
        exit_with_parent()
        limit_threads(1)
        _WORKER["fitter"] = PhotoFitter(model, FitOptions(**options), device, dlib68)
    except BaseException as exc:  # noqa: BLE001 (handed to the main process by the tasks)
        _WORKER["init_error"] = exc


@interruptible
def _fit_in_worker(root: str, photo: Photo) -> dict:
    if "init_error" in _WORKER:
        raise _WORKER["init_error"]
    return _WORKER["fitter"].fit(Path(root), photo)


def _csv_header(path: Path) -> list[str] | None:
    """The columns of an existing residuals.csv (a resumed fit keeps them), else None."""
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        return next(csv.reader(f), None)


def done_sources(out: Path) -> set[str]:
    """Photos already handled in `out` (rows of its residuals.csv); a one-line DataError
    where that file is not one `morphgen fit` wrote."""
    path = out / "residuals.csv"
    if not path.is_file() or path.stat().st_size == 0:  # (a fit killed before its header was out)
        return set()
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not {"source", "status"} <= set(reader.fieldnames or ()):
                raise ValueError
            return {r["source"] for r in reader}
    except (ValueError, csv.Error):  # (UnicodeDecodeError is a ValueError)
        raise DataError(f"{path} is not the residuals.csv of a morphgen fit: --resume a fit's own --out, "
                        "or fit into a new one") from None


def _keep_records_of(path: Path, done: set[str]) -> None:
    """Rewrite a resumed fit's params.jsonl with the records of the photos in `done` only.
    A photo's record is written just before its residuals row, so a fit killed between
    the two (or mid-line) left a record the resumed fit would write again: a duplicate that
    `render --from-params` refuses."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_bytes().splitlines():
        try:
            rec = json.loads(line)
            if rec["fit"]["source"] in done:
                kept.append(line)
        except (ValueError, KeyError, TypeError):  # a torn last line, or not a fit's record
            continue
    replace_atomically(path, b"".join(k + b"\n" for k in kept))


FIT_RECORD = "fit.json"


def recorded_inputs(out: Path) -> dict:
    """The inputs the fit in `out` recorded in fit.json ({} when it has none, or cannot be
    read: `check_resume` says so): a resume takes the options it is not given from here."""
    try:
        old = json.loads((Path(out) / FIT_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return old if isinstance(old, dict) else {}


def check_recorded(out: Path, model, size, fine_steps, ids, dlib68) -> None:
    """ConfigError naming fit.json when the values a resume takes from it are not what its
    flags accept (a hand-edited or damaged record: "size": "abc" was a TypeError)."""
    from morphgen.configfile import check_option

    try:
        check_option("model", model, str, optional=True)
        check_option("size", size, int, low=32, high=512)
        check_option("fine_steps", fine_steps, int, low=0)
        check_option("ids", ids, int, optional=True, low=1)
        check_option("dlib68", dlib68, bool)
    except ConfigError as exc:
        raise ConfigError(f"{Path(out) / FIT_RECORD}: {exc}: fit into a new --out") from None


def check_resume(out: Path, inputs: dict) -> None:
    """ConfigError unless `out` can be resumed with these inputs (photos, model, options):
    a folder that holds something but no fit (a training run, a dataset), or a fit of
    other photos or options, would get rows that do not belong with its own. Fits written
    before their inputs were recorded (residuals.csv, no fit.json) are taken as they are."""
    record = out / FIT_RECORD
    if not record.is_file():
        if out.is_dir() and any(out.iterdir()) and not (out / "residuals.csv").is_file():
            raise ConfigError(f"--resume: {out} holds no morphgen fit (no residuals.csv): give the --out of an "
                              "earlier `morphgen fit`, or another folder")
        return
    try:
        old = json.loads(record.read_text())
    except ValueError:
        raise ConfigError(f"{record} is unreadable: fit into a new --out") from None
    if not isinstance(old, dict):
        raise ConfigError(f"{record} is unreadable (not a JSON object): fit into a new --out")
    changed = [k for k in inputs if k != "ids" and old.get(k) != inputs[k]]  # more or fewer identities fit alike
    if changed:
        was = "; ".join(f"{k} {old.get(k)!r}, now {inputs[k]!r}" for k in changed)
        raise ConfigError(f"--resume: {out} is a fit of other inputs ({was}): resume it with its own photos and "
                          "options, or fit into a new --out")


def fit_photos(path: Path, out: Path, model: str | None = None, options: FitOptions | None = None,
               workers: int = 1, device: str = "cpu", resume: bool = False, ids: int | None = None,
               dlib68: bool = False, progress: bool = True, fitted: Callable[[], None] | None = None) -> dict:
    """Fit every photo of `path` into `out` (see the module docstring); returns the summary.
    `fitted` is called once, when the first photo's fit is written (from then on `out` holds
    work worth keeping, whatever error follows: the CLI's ``NewOutputs.keep``)."""
    from morphgen.progress import progress_bar

    options = options or FitOptions()
    check_device(device)
    if dlib68:
        Dlib68.model_file()  # a missing package is one line here, not a broken worker pool
    root, photos = list_photos(path, ids, exclude=out)
    single = Path(path).is_file()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume:
        raise ConfigError(f"--out {out} is not empty: use --resume to finish a fit there, or another folder")
    inputs = json.loads(json.dumps({"photos": str(Path(path).resolve()),  # (as fit.json reads back: tuples as lists)
                                     "model": str(Path(model).resolve()) if model else None,
                                     "dlib68": dlib68, "ids": ids, **asdict(options)}))
    if resume:
        check_resume(out, inputs)
    done = done_sources(out) if resume else set()
    if resume:
        _keep_records_of(out / "params.jsonl", done)
    todo = [p for p in photos if p.source not in done]
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    replace_atomically(out / FIT_RECORD, json.dumps(inputs, indent=1) + "\n")  # what a --resume must match
    header = _csv_header(out / "residuals.csv")
    counts = {"ok": 0, "no_face": 0, "unreadable": 0}
    t0 = time.perf_counter()
    with open(out / "params.jsonl", "a") as params_f, open(out / "residuals.csv", "a", newline="") as csv_f, \
            progress_bar(total=len(todo), desc="fit", unit="img", enabled=progress and not single) as bar:
        writer = csv.DictWriter(csv_f, header or RESIDUAL_COLUMNS, extrasaction="ignore")
        if not header:
            writer.writeheader()
            csv_f.flush()  # a fit killed before its first photo resumes from an empty table, not a blank file

        def take(res: dict) -> None:
            row = res["row"]
            if single and row["status"] != "ok":
                what = "no face found" if row["status"] == "no_face" else "not a readable image"
                raise DataError(f"{root / row['source']}: {what}")
            counts[row["status"]] += 1
            if row["status"] == "ok" and counts["ok"] == 1 and fitted is not None:
                fitted()
            if res["record"] is not None:
                params_f.write(json.dumps(res["record"]) + "\n")
            if res["overlay"] is not None:
                dst = out / "overlays" / Path(row["source"]).with_suffix(".jpg")
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(res["overlay"])
            writer.writerow(row)
            params_f.flush()
            csv_f.flush()
            bar.update(1)

        if workers <= 1 or len(todo) < 2:
            from morphgen.render.threads import limit_threads

            limit_threads(1)  # as the workers: on a shared machine more threads are slower, not faster
            fitter = PhotoFitter(model, options, device, dlib68)
            for p in todo:
                take(fitter.fit(root, p))
        else:
            pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                       initargs=(model, asdict(options), device, dlib68))
            try:
                pending = set()
                queue = list(todo)
                while queue or pending:
                    while queue and len(pending) < 2 * workers:
                        pending.add(submit_held(pool, _fit_in_worker, str(root), queue.pop(0)))
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        try:
                            res = fut.result()
                        except BrokenProcessPool:
                            raise MorphgenError("a fit worker process died (killed, or out of memory?): the photos "
                                                f"fitted so far are kept in {out}; run the same command with --resume "
                                                "to fit the rest") from None
                        take(res)
            except BaseException:  # Ctrl-C, or an error: the photos queued to the workers are not fitted
                end_workers(pool)  # (their shutdown would fit them first: a Ctrl-C took 14 s to end 2 workers)
                raise
            finally:
                pool.shutdown(wait=True)
    summary = write_summary(out, counts, time.perf_counter() - t0, workers, options)
    if todo and not summary["ok"]:  # (a resumed fit with earlier fitted photos is fine)
        raise DataError(f"no photo of {path} was fitted ({counts['unreadable']} unreadable, {counts['no_face']} "
                        "without a face): give photos of faces")
    return summary


def write_summary(out: Path, counts: dict, wall: float, workers: int, options: FitOptions) -> dict:
    """summary.json over all of residuals.csv (a resumed fit's earlier rows included)."""
    with open(out / "residuals.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ok = [r for r in rows if r["status"] == "ok"]
    mean = lambda k: float(np.mean([float(r[k]) for r in ok])) if ok else float("nan")
    summary = {"inputs": len(rows), **{k: sum(r["status"] == k for r in rows) for k in counts},
               "landmark_residual_px": mean("landmark_px"), "landmark_residual": mean("landmark_rel"),
               "photometric_residual": mean("photometric"), "inliers": mean("inliers"),
               "seconds_per_image": mean("seconds"),
               "this_run": {"fitted": counts["ok"], "wall_seconds": round(wall, 1), "workers": workers,
                            "options": asdict(options),
                            "images_per_second": round(sum(counts.values()) / wall, 3) if wall > 0 else 0.0}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


POOLED = "params_pooled.jsonl"


def pool_identities(out: Path) -> dict:
    """Write OUT/params_pooled.jsonl: OUT/params.jsonl with each record's ``shape`` and
    ``color`` replaced by the mean over its identity's records (its own pose, expression,
    light and framing kept; ``fit.pooled`` says over how many photos). Written whole,
    then renamed into place. Returns {"identities": n, "records": n}."""
    src = Path(out) / "params.jsonl"
    if not src.is_file():
        raise DataError(f"{src}: no fitted records to pool (run `morphgen fit` into {out} first)")
    records = []
    for n, line in enumerate(src.read_bytes().splitlines(), 1):
        try:
            records += [json.loads(line)] if line.strip() else []
        except ValueError:  # not JSON, or not UTF-8
            raise DataError(f"{src}:{n} is not a fitted record (JSON): the file is corrupt; fit again into a new "
                            "--out") from None
    if not records:
        raise DataError(f"{src}: no photo was fitted (no face found in any), nothing to pool")
    by_id: dict[int, list[dict]] = {}
    for r in records:
        by_id.setdefault(int(r["identity"]), []).append(r)
    lines = []
    for group in by_id.values():
        mean = {k: np.mean([g[k] for g in group], 0).round(6).tolist() for k in ("shape", "color")}
        lines += [json.dumps(r | mean | {"fit": r.get("fit", {}) | {"pooled": len(group)}}) + "\n" for r in group]
    replace_atomically(Path(out) / POOLED, "".join(lines))
    return {"identities": len(by_id), "records": len(records)}

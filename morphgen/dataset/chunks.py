"""One chunk of a dataset on disk: rendered, encoded and written atomically (its params file
last, as the completion marker), or discarded after an error. Runs in worker processes; a
chunk rendered in parts (the end of a run) gets its params file from the main process
(`finish_chunk`)."""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections import Counter
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError, MorphgenError
from ..layout import (chunk_marker, identity_folder, image_folder, image_ref, image_stem, partial_chunk, wds_ref,
                      wds_shard)
from ..params_columns import parquet_bytes
from ..png import encode_png
from ..render_plan import RenderResult
from ..sampling import ImageParams
from ..scene import SceneRenderer
from .job import DatasetJob


def encode_image(img: np.ndarray, fmt: str, quality: int) -> bytes:
    """RGB uint8/uint16 (H,W,3) or grey (H,W) -> PNG (see morphgen.png) or JPEG bytes (cv2)."""
    if fmt == "jpg" and img.dtype == np.uint8:
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise DataError("JPEG encoding failed")
        return buf.tobytes()
    return encode_png(img)  # 16-bit modalities (depth) always go to PNG


def _suffix(img: np.ndarray, fmt: str) -> str:
    return "jpg" if fmt == "jpg" and img.dtype == np.uint8 else "png"


def rps_record(rec: dict, size: int) -> dict:
    """The Basel generator's render-parameter JSON shape for one image (the parts we model)."""
    return {
        "version": "V4",
        "pose": {"yaw": np.deg2rad(rec["yaw"]), "pitch": np.deg2rad(rec["pitch"]), "roll": np.deg2rad(rec["roll"])},
        "environmentMap": {"@type": "SphericalHarmonicsLight", "coefficients": rec["sh"]},
        "momo": {"shape": rec["shape"], "color": rec["color"], "expression": rec["expression"]},
        "imageSize": {"width": size, "height": size},
        "landmarks": rec.get("landmarks", []),
    }


def render_chunk(out: Path, job: DatasetJob, renderer: SceneRenderer, chunk: int) -> tuple[int, int, int]:
    """Render and write one chunk atomically (CPU path: one identity per renderer call, so an
    image's bytes do not depend on the chunk size); returns (chunk, images, bytes)."""
    return write_chunk(out, job, chunk, _render_identities(job, renderer, job.chunk_identities(chunk)))


def render_chunk_part(out: Path, job: DatasetJob, renderer: SceneRenderer, chunk: int, part: int,
                      parts: int) -> tuple[int, int, int, list[str] | list[dict]]:
    """Render part ``part`` of ``parts`` of a chunk (a run of its identities, `part_identities`)
    and move its images into place; returns (chunk, images, bytes, params records). The
    chunk's params file, its completion marker, is written by `finish_chunk` once every
    part is in, so an interrupted split chunk is as incomplete as a whole one. The folder
    container only (a chunk's webdataset shard is one file)."""
    identities = part_identities(job, chunk, part, parts)
    items = _render_identities(job, renderer, identities)
    records, n_bytes = _write_images(out, job, chunk, identities, items,
                                     partial_chunk(out, chunk) / f"part_{part}")
    return chunk, len(records), n_bytes, records


def part_identities(job: DatasetJob, chunk: int, part: int, parts: int) -> list[int]:
    """The identities of part ``part`` of ``parts`` of a chunk: contiguous runs, in order,
    of about equal numbers of images (a re-render of recorded params may hold more images
    of one identity than of another) and at least one identity each, so that the parts'
    params records joined in part order are the whole chunk's."""
    ids = list(job.chunk_identities(chunk))
    if not 0 <= part < parts <= len(ids):
        raise ValueError(f"part {part} of {parts} of a chunk of {len(ids)} identities")
    images = Counter(identity for identity, _ in job.slots(chunk))
    before = np.cumsum([0] + [images[i] for i in ids[:-1]])  # images ahead of each identity
    total = before[-1] + images[ids[-1]]

    def start(k: int) -> int:  # the first identity of part k
        if k == 0:
            return 0
        at = int(np.searchsorted(before, k * total / parts))  # first identity at or past its share
        return min(max(at, start(k - 1) + 1), len(ids) - (parts - k))

    return ids[start(part):start(part + 1) if part + 1 < parts else len(ids)]


def _render_identities(job: DatasetJob, renderer: SceneRenderer, identities) -> list[tuple[ImageParams, RenderResult]]:
    items = []
    for identity in identities:
        params = job.identity_params(renderer, identity)
        items += list(zip(params, renderer.render(params)))
    return items


def _params_line(params: ImageParams | str, more: dict) -> str:
    """An image's params record as a JSON line: its params (or their JSON text, which the
    GPU path's planners send) and its render's entries ``more``."""
    return _extend_json(params if isinstance(params, str) else params.to_json(), more)


def _params_record(params: ImageParams | str, more: dict) -> dict:
    """The same record as a mapping, ``json.loads(_params_line(params, more))`` without the
    text: a Parquet params file takes its columns from it, and writing the JSON to parse
    it again was a tenth of a face12 image's cost on the CPU (0.24 ms of 2.4)."""
    return (json.loads(params) if isinstance(params, str) else params.to_record()) | more


def _extend_json(obj_json: str, more: dict) -> str:
    """``json.dumps(obj | more)`` from ``json.dumps(obj)``, for non-empty dicts with distinct
    keys: the image's params are serialised where they are sampled (a planner, on the GPU
    path) and its render record added here."""
    if not more or not obj_json.startswith("{") or obj_json == "{}":
        raise ValueError("_extend_json joins two non-empty JSON objects")
    return f"{obj_json[:-1]}, {json.dumps(more)[1:]}"


def write_chunk(out: Path, job: DatasetJob, chunk: int,
                items: list[tuple[ImageParams | str, RenderResult]]) -> tuple[int, int, int]:
    """Encode and write a rendered chunk under .partial/, move it into place, then write its
    params file (the completion marker) last; returns (chunk, images, bytes).

    items: per image, in the chunk's order (identity by identity, samples in order), its
    params (or their JSON, ``ImageParams.to_json()``) and its render."""
    out = Path(out)
    records, n_bytes = _write_images(out, job, chunk, job.chunk_identities(chunk), items, partial_chunk(out, chunk))
    finish_chunk(out, job, chunk, records)
    return chunk, len(records), n_bytes


def _write_images(out: Path, job: DatasetJob, chunk: int, ids, items: list[tuple[ImageParams | str, RenderResult]],
                  tmp: Path) -> tuple[list[str] | list[dict], int]:
    """Encode the images of identities ``ids`` of a chunk into ``tmp`` and move them into
    place (identity folders, or the chunk's webdataset shard); returns their params records
    (JSON lines, or mappings for a Parquet params file: `finish_chunk`) and bytes written."""
    wanted = set(ids)
    slots = [s for s in job.slots(chunk) if s[0] in wanted]
    if len(items) != len(slots):
        raise ValueError(f"chunk {chunk} has {len(items)} images, expected {len(slots)}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    fmt, q = job.output.image_format, job.output.jpg_quality
    as_text = job.output.params_format != "parquet"
    records: list = []
    n_bytes = 0
    tar = tarfile.open(tmp / "shard.tar", "w") if job.output.container == "wds" else None  # noqa: SIM115 (closed below, before the move)
    for identity in ids:
        (tmp / identity_folder(identity)).mkdir()
    for (identity, sample), (params, res) in zip(slots, items):
        stem = image_stem(identity, sample)
        name = f"{stem}.{_suffix(res.rgb, fmt)}"
        files = {name: encode_image(res.rgb, fmt, q)}
        for extra, img in res.extras.items():  # data, not photos: lossless whatever --image-format
            files[f"{stem}_{extra}.png"] = encode_png(img)
        image = wds_ref(chunk, name) if tar is not None else image_ref(identity, name)
        more = res.record() | {"image": image}
        line = _params_line(params, more) if as_text or tar is not None else None
        record = _params_record(params, more) if not as_text or job.output.rps else None
        if job.output.rps:
            files[f"{stem}.rps"] = json.dumps(rps_record(record, job.scene.size)).encode()
        if tar is not None:
            files[f"{stem}.json"] = line.encode()
            files[f"{stem}.cls"] = str(identity).encode()
            for fname, data in files.items():
                info = tarfile.TarInfo(fname)
                info.size, info.mtime = len(data), 0  # fixed mtime: byte-identical shards
                tar.addfile(info, io.BytesIO(data))
        else:
            for fname, data in files.items():
                (tmp / identity_folder(identity) / fname).write_bytes(data)
        n_bytes += sum(len(d) for d in files.values())
        records.append(line if as_text else record)
    if tar is not None:
        tar.close()
        wds_shard(out, chunk).parent.mkdir(exist_ok=True)
        os.replace(tmp / "shard.tar", wds_shard(out, chunk))
    else:
        for identity in ids:
            dst = image_folder(out, identity)
            if dst.exists():  # left by an interrupted earlier try of this chunk
                shutil.rmtree(dst)
            os.replace(tmp / identity_folder(identity), dst)
    return records, n_bytes


def finish_chunk(out: Path, job: DatasetJob, chunk: int, records: list[str] | list[dict]) -> None:
    """Write a chunk's params file from its records in the chunk's order (`_write_images`'
    JSON lines, or mappings for Parquet) as its completion marker (through .partial/ and a
    rename, synced first), then clear its .partial/ folder."""
    tmp = partial_chunk(out, chunk)
    tmp.mkdir(parents=True, exist_ok=True)
    fmt = job.output.params_format
    marker_tmp = tmp / f"params.{fmt}"
    with open(marker_tmp, "wb") as f:
        f.write(parquet_bytes(records) if fmt == "parquet" else ("\n".join(records) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(marker_tmp, chunk_marker(out, chunk, fmt))
    shutil.rmtree(tmp, ignore_errors=True)


def discard_chunk(out: Path, job: DatasetJob, chunk: int) -> None:
    """Remove what a failed chunk left: its folder under .partial/, and any of its identity
    folders or shard already moved into place (without its params marker none is complete)."""
    shutil.rmtree(partial_chunk(out, chunk), ignore_errors=True)
    for identity in job.chunk_identities(chunk):
        folder = image_folder(out, identity)
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
    wds_shard(out, chunk).unlink(missing_ok=True)


def chunk_error(out: Path, job: DatasetJob, chunk: int, exc: Exception) -> MorphgenError:
    """The one-line error for a chunk that raised, in a worker or here, after discarding what
    it left: a MorphgenError keeps its class and message, anything else (an OSError, a
    crashed worker) is named by its type. Both say that finished chunks are kept."""
    discard_chunk(out, job, chunk)
    if isinstance(exc, BrokenProcessPool):
        what = f"a worker process died while rendering chunk {chunk} (killed, or out of memory?)"
    elif isinstance(exc, MorphgenError):
        what = str(exc)
    else:
        what = f"chunk {chunk} failed: {exc.__class__.__name__}: {' '.join(str(exc).split())}"
    cls = type(exc) if isinstance(exc, MorphgenError) else MorphgenError
    return cls(f"{what}; finished chunks are kept in {out}: fix this and run the same command with --resume")


def chunk_result(fut: Future, out: Path, job: DatasetJob, chunk: int):
    """``fut.result()``, or the one-line `chunk_error` for what it raised."""
    try:
        return fut.result()
    except Exception as exc:
        raise chunk_error(out, job, chunk, exc) from exc

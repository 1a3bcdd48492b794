"""Parquet params (`morphgen render --params-format parquet`): the same records as JSON
Lines, the same atomic chunk protocol, byte-identical across workers and resume, read by
stats, the trainer's reader and pandas; `auto` follows the dataset already there and falls
back to JSON Lines where pyarrow is missing."""
from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from morphgen.cli.main import cli

from morphgen import layout

pytest.importorskip("pyarrow")
ARGS = ["--ids", "4", "--per-id", "3", "--chunk-ids", "2", "--size", "32", "--antialias", "1", "--quiet",
        "--identity-mixup", "--photo", "realistic"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def both(tmp_path_factory, tiny_model_file):
    """The same dataset with each params format (the Parquet one by `auto`)."""
    root = tmp_path_factory.mktemp("ds")
    for fmt in ("auto", "jsonl"):
        r = invoke("render", "--model", tiny_model_file, *ARGS, "--workers", 1, "--params-format", fmt, "--out", root / fmt)
        assert r.exit_code == 0, r.output
    return root / "auto", root / "jsonl"


def hashes(root, sub):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / sub).rglob("*")) if p.is_file()}


def close(a, b, where=""):
    """Rows equal up to float32 rounding (Parquet stores floats as float32)."""
    if isinstance(b, dict):
        assert isinstance(a, dict) and set(a) == set(b), where
        for k in b:
            close(a[k], b[k], f"{where}.{k}")
    elif isinstance(b, list):
        assert isinstance(a, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{where}[{i}]")
    elif isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6), where
    else:
        assert a == b, where


def test_auto_writes_parquet_with_the_records_of_jsonl(both):
    pq_root, js_root = both
    assert [p.name for p in layout.params_files(pq_root)] == ["chunk_000000.parquet", "chunk_000001.parquet"]
    assert json.loads((pq_root / "manifest.json").read_text())["config"]["output"]["params_format"] == "parquet"
    assert "params_format" not in json.loads((js_root / "manifest.json").read_text())["config"]["output"]
    assert hashes(pq_root, "images") == hashes(js_root, "images")
    rows_pq, rows_js = [r for _, r in layout.params_rows(pq_root)], [r for _, r in layout.params_rows(js_root)]
    assert len(rows_pq) == 12 and any(r["soft_label"] for r in rows_js) and any(r["photo"] for r in rows_js)
    for a, b in zip(rows_pq, rows_js):
        close(a, b)
    # one table whatever the format, readable without morphgen
    import pyarrow.parquet as pq

    t_pq, t_js = layout.params_table(pq_root), layout.params_table(js_root)
    assert t_pq.schema.equals(t_js.schema) and t_pq.num_rows == 12
    assert pq.read_table(layout.params_files(pq_root)[0]).column("sh").type.value_type.value_type.bit_width == 32
    assert layout.params_table(pq_root, ["yaw"]).column_names == ["yaw"]


def test_parquet_bytes_do_not_depend_on_workers_or_resume(both, tmp_path, tiny_model_file):
    out = tmp_path / "w2"
    assert invoke("render", "--model", tiny_model_file, *ARGS, "--workers", 2, "--out", out).exit_code == 0
    assert hashes(out, "params") == hashes(both[0], "params")
    layout.chunk_marker(out, 1, "parquet").unlink()      # chunk 1 never finished
    r = invoke("render", "--model", tiny_model_file, *ARGS, "--workers", 1, "--out", out, "--resume")
    assert r.exit_code == 0 and "rendered 6 images" in r.output, r.output
    assert hashes(out, "params") == hashes(both[0], "params")


def test_auto_resumes_in_the_format_already_there(both, tmp_path, tiny_model_file):
    import shutil

    out = tmp_path / "js"
    shutil.copytree(both[1], out)
    layout.chunk_marker(out, 0, "jsonl").unlink()
    r = invoke("render", "--model", tiny_model_file, *ARGS, "--workers", 1, "--out", out, "--resume")
    assert r.exit_code == 0, r.output
    assert [p.suffix for p in layout.params_files(out)] == [".jsonl", ".jsonl"]
    r = invoke("render", "--model", tiny_model_file, *ARGS, "--out", out, "--resume", "--params-format", "parquet")
    assert r.exit_code == 2 and "different config" in r.output


def test_without_pyarrow_auto_is_jsonl_and_parquet_a_one_line_error(tmp_path, tiny_model_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)   # `import pyarrow` fails as if it were not installed
    r = invoke("render", "--model", tiny_model_file, *ARGS, "--workers", 1, "--out", tmp_path / "a")
    assert r.exit_code == 0 and [p.suffix for p in layout.params_files(tmp_path / "a")] == [".jsonl"] * 2
    r = invoke("render", "--model", tiny_model_file, *ARGS, "--params-format", "parquet", "--out", tmp_path / "b")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "pip install 'morphgen[parquet]'" in r.output
    assert not (tmp_path / "b").exists()
    assert "jsonl where it is not" in " ".join(invoke("render", "--help").output.split())


def test_stats_and_the_trainers_reader_take_parquet(both, tmp_path):
    from recognition.data import load_imageset

    pq_root, js_root = both
    r = invoke("stats", pq_root, "--out", tmp_path / "s.png")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output[:r.output.rindex("}") + 1])
    ref = json.loads(invoke("stats", js_root, "--out", tmp_path / "t.png").output.split("\nwrote")[0])
    assert summary["images"] == 12 and summary["mixed_images"] == ref["mixed_images"]
    assert summary["yaw"] == pytest.approx(ref["yaw"], abs=1e-4)
    a, b = load_imageset(pq_root), load_imageset(js_root)
    assert a.files == b.files and a.identities == b.identities
    close(a.soft, b.soft)
    assert np.allclose(a.landmarks, b.landmarks, atol=1e-4)


def test_a_corrupt_parquet_file_is_one_line(both, tmp_path):
    import shutil

    out = tmp_path / "bad"
    shutil.copytree(both[0], out)
    layout.chunk_marker(out, 1, "parquet").write_bytes(b"PAR1 not really")
    for args in (["stats", out, "--out", tmp_path / "s.png"],
                 ["train", "--data", out, "--steps", 1, "--out", tmp_path / "r"]):
        r = invoke(*args)
        lines = r.output.strip().splitlines()
        assert r.exit_code != 0 and len(lines) == 1, r.output
        assert "chunk_000001.parquet is not a readable Parquet" in lines[0]


def test_columns_built_from_buffers_equal_pyarrows_conversion(both):
    """The numpy-built columns (which spare a writer pandas' import) are pa.array's, on
    a dataset's records (identity mixup: soft labels, photo: JSON text) and on nulls,
    ragged lists and odd types (which fall back to pa.array and its errors); the Parquet
    bytes are the same either way."""
    import pyarrow as pa

    from morphgen import params_columns as pc

    records = [json.loads(line) for p in sorted((both[1] / "params").glob("*.jsonl")) for line in p.open()]
    assert any(r["soft_label"] is None for r in records) and any(r["soft_label"] for r in records)
    for name in records[0]:
        if name == "landmarks":
            continue
        values = [r.get(name) for r in records]
        typ = pc._column_type(pa, name)
        if name in pc._JSON_TEXT:
            values = [json.dumps(v) for v in values]
        assert typ is not None, name
        built = pc._from_buffers(pa, values, typ)
        assert built is not None and built.equals(pa.array(values, typ)), name
    cases = [([1, None, 3], pa.int64()), ([0.5, None, 2.0], pa.float32()), ([True, None, False], pa.bool_()),
             (["a", None, "ü"], pa.string()), ([[1.0, 2.0], None, [], [3.0]], pa.list_(pa.float32())),
             ([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]], pa.list_(pa.list_(pa.float32()))),
             ([[True, False], [False, False]], pa.list_(pa.bool_())), ([[], []], pa.list_(pa.int64())),
             ([1e39, -1e39, 0.1], pa.float32()), ([[1.0], [None]], pa.list_(pa.float32())),
             ([[[1.0], [2.0, 3.0]], None, [[]]], pa.list_(pa.list_(pa.float32()))), ([[1, None]], pa.list_(pa.int64())),
             ([{"ids": [1, 2], "weights": [0.5, 0.5]}, None, {"ids": [3], "weights": [1.0]}],
              pc._column_type(pa, "soft_label"))]
    for values, typ in cases:
        built = pc._from_buffers(pa, values, typ)
        assert built is not None and built.validate(full=True) is None and built.equals(pa.array(values, typ)), values
    for values, typ in (([1.5], pa.int64()), ([True], pa.int64()), (["1"], pa.float32()), ([(1, 2)], pa.list_(pa.int64())),
                        ([{"ids": [1], "other": 2}], pc._column_type(pa, "soft_label")), ([2**70], pa.int64()),
                        ([[1, 2], [3]], pa.list_(pa.bool_())),
                        ([0.5, 2], pa.float32()), ([["1.0"]], pa.list_(pa.float32()))):
        assert pc._from_buffers(pa, values, typ) is None, values
    assert pc._column(pa, "photo", [{"blur": 1.5}, None]).to_pylist() == ['{"blur": 1.5}', None]
    rows = [json.loads(line) for line in (both[1] / "params").glob("*.jsonl").__next__().open()]
    fast = pc.parquet_bytes(rows)
    saved = pc._from_buffers
    try:
        pc._from_buffers = lambda *a: None
        assert pc.parquet_bytes(rows) == fast
    finally:
        pc._from_buffers = saved


def test_writing_parquet_params_does_not_import_pandas(tmp_path, tiny_model_file):
    """A render that writes Parquet never imports pandas (a third of a second a process)."""
    import subprocess

    code = ("import sys; from morphgen.cli.main import cli\n"
            "try:\n    cli(sys.argv[1:])\n"
            "finally:\n    print('pandas' in sys.modules)")
    args = ["render", "--model", tiny_model_file, *ARGS, "--workers", "1", "--params-format", "parquet",
            "--out", str(tmp_path / "p")]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and len(list((tmp_path / "p" / "params").glob("*.parquet"))) == 2, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout + done.stderr


def test_parquet_params_are_those_of_the_json_lines_byte_for_byte(both):
    """The writer builds a Parquet chunk from each image's record as a mapping, without
    writing its JSON line and parsing it back: the same file as from the JSON Lines'
    records (mixup's soft labels and photo effects included)."""
    from morphgen.params_columns import parquet_bytes

    pq_root, js_root = both
    for pq_file, js_file in zip(layout.params_files(pq_root), layout.params_files(js_root), strict=True):
        records = [json.loads(line) for line in js_file.read_text().splitlines()]
        assert parquet_bytes(records) == pq_file.read_bytes()


def test_parquet_params_are_plain_encoded_and_smaller_than_with_dictionaries(both):
    """Params columns hardly repeat a value within a chunk, so the writer turns pyarrow's
    default dictionary encoding off (`USE_DICTIONARY`): no column chunk of a written file is
    dictionary-encoded, and the file is smaller than the same table with dictionaries."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from morphgen.params_columns import COMPRESSION

    pq_root, _ = both
    for path in layout.params_files(pq_root):
        meta = pq.ParquetFile(path).metadata
        encodings = {e for g in range(meta.num_row_groups) for c in range(meta.num_columns)
                     for e in meta.row_group(g).column(c).encodings}
        assert not encodings & {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}, (path.name, encodings)
        sink = pa.BufferOutputStream()
        pq.write_table(pq.read_table(path), sink, compression=COMPRESSION)  # pyarrow's default: dictionaries
        assert path.stat().st_size < sink.getvalue().size


def test_an_images_record_mapping_is_its_json_line_parsed_type_for_type():
    """`_params_record` is `json.loads(_params_line(...))` to the type of every value (1.0 ==
    1 in Python, not in a Parquet column), for sampled params with every realism part on,
    and for the GPU path's params sent as JSON text."""
    from morphgen.dataset.chunks import _params_line, _params_record
    from morphgen.options import scene_config
    from morphgen.scene import SceneRenderer

    def typed(x):  # the value with the type of each of its parts
        if isinstance(x, dict):
            return ("dict", [(typed(k), typed(v)) for k, v in x.items()])
        if isinstance(x, list):
            return ("list", [typed(v) for v in x])
        return (type(x).__name__, x)

    r = SceneRenderer(scene_config(overrides={"ids": 3, "size": 48, "identity_mixup": True, "mixup_fraction": 1.0,
                                              "photo": "realistic", "appearance": "full,shine=0.6"}))
    params = [r.sampler.image_params(i, s) for i in range(3) for s in range(3)]
    results = r.render(params)
    assert all(any(getattr(p, k) for p in params) for k in ("soft_label", "photo", "appearance"))
    for p, res in zip(params, results):
        more = res.record() | {"image": "images/00000/x.png"}
        parsed = json.loads(_params_line(p, more))
        assert typed(_params_record(p, more)) == typed(parsed)
        assert typed(_params_record(p.to_json(), more)) == typed(parsed)

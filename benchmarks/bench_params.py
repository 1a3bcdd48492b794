"""Size on disk and load time of datasets' params, JSON Lines against Parquet: the figures
behind ``morphgen render --params-format``'s default (README, "Per-image parameters").

    morphgen render --ids 1000 --per-id 100 --size 32 --antialias 1 --params-format jsonl   --out ds_jsonl
    morphgen render --ids 1000 --per-id 100 --size 32 --antialias 1 --params-format parquet --out ds_parquet
    python benchmarks/bench_params.py ds_jsonl ds_parquet

For each folder: bytes of params/ (per image), then the best of --repeat loads of every
row into a pandas DataFrame with pandas' own reader (``read_json(lines=True)`` per chunk,
or ``read_parquet`` of the folder; numpy-backed, so each list cell becomes an array), the
same with Arrow-backed columns (``dtype_backend="pyarrow"``), ``morphgen.params_table``
(an Arrow table, either format), and the yaw column alone (``params_frame(DIR, ["yaw"])``,
a pose study's read).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from morphgen import params_frame, params_table
from morphgen.layout import params_files


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def pandas_native(root: Path, **kw) -> pd.DataFrame:
    files = params_files(root)
    if files[0].suffix == ".parquet":
        return pd.read_parquet(root / "params", **kw)
    return pd.concat([pd.read_json(p, lines=True, **kw) for p in files], ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for root in args.datasets:
        files = params_files(root)
        size = sum(p.stat().st_size for p in files)
        t_native, df = best_of(args.repeat, lambda root=root: pandas_native(root))
        t_arrow_pd, _ = best_of(args.repeat, lambda root=root: pandas_native(root, dtype_backend="pyarrow"))
        t_table, _ = best_of(args.repeat, lambda root=root: params_table(root))
        t_yaw, _ = best_of(args.repeat, lambda root=root: params_frame(root, ["yaw"]))
        n = len(df)
        print(f"{root} ({files[0].suffix[1:]}, {len(files)} files): {n:,} images, params {size / 1e6:.1f} MB "
              f"({size / n:,.0f} B/image); pandas {t_native:.2f} s, pandas (pyarrow dtypes) {t_arrow_pd:.2f} s, "
              f"morphgen.params_table {t_table:.2f} s, yaw column {t_yaw:.2f} s")


if __name__ == "__main__":
    main()

"""Training throughput per architecture, and the data loader's rate on its own.

    .venv/bin/python benchmarks/bench_train.py                      # CPU, all archs
    .venv/bin/python benchmarks/bench_train.py --arch nn4small2 --batch 300 --steps 3
    .venv/bin/python benchmarks/bench_train.py --device cuda --batch 512 --steps 20

Train rate: images/s of forward + loss + backward + optimizer step on random images at
the arch's input size (triplet loss for nn4small2, an ArcFace head over 1,000 classes for
the others), after warm-up steps. Loader rate: images/s of the real input pipeline
(read PNG, 5-point alignment, optional augmentation, P x K batches, DataLoader workers)
over a procedural morphgen-layout set written to a temporary folder; the trainer needs it
at least 3x its train rate so the model never waits. Reference (measured on the 2-core VM): NN4.small2 at
96 px, batch 300, triplet, about 40 img/s on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))  # an installed morphgen wins

from recognition.data import (Augment, FaceDataset, PKBatchSampler, load_imageset, single_threaded_cv2,  # noqa: E402
                              to_input, worker_init)
from recognition.losses import MarginHead, triplet_semihard_loss  # noqa: E402
from recognition.models import ARCHS, build_model, to_device  # noqa: E402
from tests.toydata import write_toy_dataset  # noqa: E402

CPU_BATCH = {"nn4small2": 300, "inception_resnet_v1": 32, "iresnet18": 32, "iresnet50": 16}


def train_rate(arch: str, batch: int, steps: int, warmup: int, device: str, size: int | None) -> float:
    torch.manual_seed(0)
    model = to_device(build_model(arch, size), device).train()
    s = model.input_size
    head = None if arch == "nn4small2" else MarginHead.build("arcface", model.embedding_size, 1000).to(device)
    params = list(model.parameters()) + (list(head.parameters()) if head is not None else [])
    try:
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    x = torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, device=device)
    y = torch.arange(batch, device=device) // 15          # 15 images per identity, as P x K
    amp = device.startswith("cuda")

    def step():
        with torch.autocast("cuda" if amp else "cpu", dtype=torch.bfloat16, enabled=amp):
            emb = model(to_input(x))
            loss = triplet_semihard_loss(emb, y) if head is None else head(emb, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if amp:
        torch.cuda.synchronize()
    t, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if amp:
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return batch * steps / wall, batch * steps / cpu


def loader_rate(data: Path, size: int, template: str, batches: int, p: int, k: int, workers: int, aug: str) -> float:
    iset = load_imageset(data)
    names = sorted(set(iset.identities))
    ds = FaceDataset(iset, {n: i for i, n in enumerate(names)}, size, template, augment=Augment.preset(aug))
    sampler = PKBatchSampler(ds.labels, p, k, batches + 2, seed=0)
    with single_threaded_cv2():
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=workers, worker_init_fn=worker_init)
        it = iter(loader)
        for _ in range(2):                 # worker start-up and first batches
            next(it)
        t, n = time.perf_counter(), 0
        for x, *_ in it:
            n += len(x)
        return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="*", default=list(ARCHS), choices=list(ARCHS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, help="batch size (default: 300 for nn4small2 on CPU, 32/32/16 for the "
                    "others; 512 on cuda)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per arch")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--size", type=int, help="input size (default: the arch's)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workers", type=int, default=1, help="loader workers for the loader-only rate")
    ap.add_argument("--loader-batches", type=int, default=20)
    ap.add_argument("--no-loader", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = "cuda" if args.device == "cuda" else args.device
    print(f"torch {torch.__version__}, device {dev}"
          + (f" ({torch.cuda.get_device_name()})" if dev.startswith("cuda") else f", {args.threads} threads")
          + f", load average {os.getloadavg()[0]:.1f}")
    # img/cpu-s: images per second of this process's CPU time (all threads); on a machine
    # shared with other jobs, threads x img/cpu-s estimates the rate on free cores.
    print(f"{'arch':<22}{'input':>6}{'batch':>7}{'train img/s':>13}{'img/cpu-s':>11}")
    rates = {}
    for arch in args.arch:
        batch = args.batch or (512 if dev.startswith("cuda") else CPU_BATCH[arch])
        size = args.size or ARCHS[arch][0]
        rates[arch], per_cpu = train_rate(arch, batch, args.steps, args.warmup, dev, args.size)
        print(f"{arch:<22}{size:>6}{batch:>7}{rates[arch]:>13.1f}{per_cpu:>11.1f}", flush=True)
    if args.no_loader:
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = write_toy_dataset(Path(tmp) / "toy", identities=30, per_identity=15, size=128, seed=0)
        print(f"\nloader only (PNG 128 px -> aligned crop, P x K = 20 x 15, {args.workers} worker(s)):")
        print(f"{'crop':>6}{'augment':>10}{'img/s':>10}{'x nn4 train':>13}")
        for size, tpl in sorted({(ARCHS[a][0], ARCHS[a][2]) for a in args.arch}):
            for aug in ("none", "standard"):
                r = loader_rate(data, size, tpl, args.loader_batches, 20, 15, args.workers, aug)
                ratio = f"{r / rates['nn4small2']:.1f}x" if "nn4small2" in rates and size == 96 else ""
                print(f"{size:>6}{aug:>10}{r:>10.1f}{ratio:>13}", flush=True)


if __name__ == "__main__":
    main()

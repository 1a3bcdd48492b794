"""Online synthesis throughput: render-only, model-only and end to end.

    python benchmarks/bench_online.py --device cuda --config experiments/online_scene.yaml \\
        --arch iresnet18 --batch-p 128 --batch-k 4 --steps 30 --workers 12
    python benchmarks/bench_online.py --steps 3              # CPU, small batches

render only: the batches `morphgen train --online` gets (plans made in loader workers;
on a GPU rendered, aligned and augmented on the device), consumed without training.
model only: the same network, ArcFace head and batch on random images
(benchmarks/bench_train.py's train_rate). end to end: the batches feeding the training
step. The goal on a GPU: end to end >= 0.8 x model only.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))  # an installed morphgen wins
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import train_rate  # noqa: E402
from recognition.data import Augment, to_input  # noqa: E402
from recognition.losses import MarginHead  # noqa: E402
from recognition.models import ARCHS, build_model, to_device  # noqa: E402
from recognition.online import OnlineBatches, load_scene  # noqa: E402


def sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def timed(batches, warmup: int, dev: str, work=None) -> float:
    """Images/s over the batches after `warmup` of them (work(x, y) runs per batch)."""
    n, t = 0, None
    for k, (x, y, *_rest) in enumerate(batches):
        if k == warmup:
            sync(dev)
            t, n = time.perf_counter(), 0
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if work is not None:
            work(x, y)
        n += len(x)
    sync(dev)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="default", help="online scene: a `morphgen render` config file, or default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arch", default="iresnet18", choices=list(ARCHS))
    ap.add_argument("--batch-p", type=int, default=8)
    ap.add_argument("--batch-k", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="loader workers making the plans / CPU batches")
    ap.add_argument("--aug", default="standard", choices=["none", "standard", "strong"])
    ap.add_argument("--antialias", help="override the config's antialias (edges, or 1 to 4)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="then profile N end-to-end steps (torch.profiler) and print the ops by device time")
    args = ap.parse_args()
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("bench_online: --device cuda but torch sees no CUDA GPU")
    size, _, template = ARCHS[args.arch]
    scene = load_scene(args.config, {"device": dev, "antialias": args.antialias})
    total = args.warmup + args.steps
    batch = args.batch_p * args.batch_k
    print(f"torch {torch.__version__}, device {dev}"
          + (f" ({torch.cuda.get_device_name()})" if dev.startswith("cuda") else f", {torch.get_num_threads()} threads")
          + f", {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {args.arch} {size} px, batch {batch} "
          f"({args.batch_p} x {args.batch_k}), aug {args.aug}, {args.workers} loader worker(s)")

    def stream():
        src = OnlineBatches(scene, size, template, args.batch_p, args.batch_k, total=total, seed=0,
                            augment=Augment.preset(args.aug))
        return src, src.stream(args.workers, torch.device(dev))

    src, batches = stream()
    print(f"scene: {src.source.scene.size} px renders, antialias {src.source.scene.antialias}, "
          f"{src.n_classes} identities")
    render = timed(batches, args.warmup, dev)
    print(f"render only : {render:10.1f} img/s", flush=True)
    model_only, _ = train_rate(args.arch, batch, args.steps, args.warmup, dev, None)
    print(f"model only  : {model_only:10.1f} img/s", flush=True)

    torch.manual_seed(0)
    model = to_device(build_model(args.arch, size), dev).train()
    head = MarginHead.build("arcface", model.embedding_size, src.n_classes).to(dev)
    params = list(model.parameters()) + list(head.parameters())
    try:
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    amp = dev.startswith("cuda")

    def step(x, y):
        with torch.autocast("cuda" if amp else "cpu", dtype=torch.bfloat16, enabled=amp):
            loss = head(model(to_input(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    _, batches = stream()
    e2e = timed(batches, args.warmup, dev, step)
    print(f"end to end  : {e2e:10.1f} img/s = {e2e / model_only:.2f} x model only", flush=True)
    if args.profile:
        profile(stream, step, args.warmup, min(args.profile, args.steps), dev)


def profile(stream, step, warmup: int, n: int, dev: str) -> None:
    """Where the time of n end-to-end steps goes: torch.profiler's ops sorted by device
    (or CPU) time, rendering and training together."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.startswith("cuda") else [])
    batches = iter(stream()[1])
    for _ in range(warmup):
        x, y, *_rest = next(batches)
        step(x.to(dev), y.to(dev))
    sync(dev)
    with torch_profile(activities=acts) as prof:
        for _ in range(n):
            x, y, *_rest = next(batches)
            step(x.to(dev), y.to(dev))
        sync(dev)
    key = "self_cuda_time_total" if dev.startswith("cuda") else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=60), flush=True)


if __name__ == "__main__":
    main()

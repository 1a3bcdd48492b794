"""morphgen's online faces in an insightface arcface_torch-style training loop: the loop is
arcface_torch's train_v2.py (backbone, margin softmax over the identities, SGD with a
polynomial decay, gradient clipping at 5), fed (img, local_labels) batches by
`OnlineDataset.stream`. On a GPU (`--device cuda`) the batches are rendered, aligned and
augmented on the device; under torchrun every rank draws its own images.

    torchrun --nproc_per_node 8 examples/arcface_loop.py --device cuda --ids 20000 --steps 20000
"""
import argparse
import os

import torch

import morphgen
from recognition.losses import (
    MarginHead,  # arcface_torch's CombinedMarginLoss(64, 1, 0.5, 0) with its FC
)
from recognition.models import build_model  # iresnet18/50 in arcface_torch's layout

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--network", default="iresnet18"), ap.add_argument("--device", default="cpu")
for flag, default in (("--ids", 1000), ("--steps", 1000), ("--batch-p", 64), ("--batch-k", 4), ("--input-size", 112),
                      ("--workers", 2), ("--frequent", 10)):
    ap.add_argument(flag, type=int, default=default)
ap.add_argument("--lr", type=float, default=0.1)
args = ap.parse_args()

distributed = "RANK" in os.environ
if distributed:   # torchrun: OnlineDataset takes the rank and world size from torch.distributed
    torch.distributed.init_process_group("nccl" if args.device == "cuda" else "gloo")
rank = torch.distributed.get_rank() if distributed else 0
device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if args.device == "cuda" else "cpu")
with morphgen.one_line_errors():  # a bad option (--ids 0, --network foo): one line, exit 2
    data = morphgen.OnlineDataset(ids=args.ids, device=args.device, steps=args.steps, batch_p=args.batch_p,
                                  batch_k=args.batch_k, input_size=args.input_size, augment="standard")
    backbone = build_model(args.network, args.input_size).to(device)
if distributed:
    backbone = torch.nn.parallel.DistributedDataParallel(backbone, device_ids=[device] if device.type == "cuda" else None)
module_partial_fc = MarginHead.build("arcface", 512, data.n_classes).to(device)
opt = torch.optim.SGD([{"params": backbone.parameters()}, {"params": module_partial_fc.parameters()}],
                      lr=args.lr, momentum=0.9, weight_decay=5e-4)
lr_scheduler = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=args.steps, power=2.0)
train_loader = ((b["image"].float().sub_(127.5).div_(128.0), b["label"].to(device))
                for b in data.stream(device, args.workers))
for global_step, (img, local_labels) in enumerate(train_loader, start=1):
    local_embeddings = backbone(img)
    loss = module_partial_fc(local_embeddings, local_labels)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(backbone.parameters(), 5)
    opt.step()
    lr_scheduler.step()
    if rank == 0 and (global_step % args.frequent == 0 or global_step == args.steps):
        print(f"step {global_step}: loss {loss.item():.3f}, lr {lr_scheduler.get_last_lr()[0]:.4f}, {len(img)} images")

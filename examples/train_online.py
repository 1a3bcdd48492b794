"""Train a face-recognition network in a plain PyTorch loop on faces rendered on the fly:
no dataset on disk and no morphgen trainer, only `morphgen.OnlineDataset` in a DataLoader.
Identity mixup images come with soft labels (two identities and their weights).

    python examples/train_online.py --ids 1000 --steps 2000 --workers 2
    python examples/train_online.py --ids 1000 --steps 2000 --start 1000   # the same batches from step 1000 on
"""
import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import morphgen

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
for flag, default in (("--ids", 200), ("--steps", 300), ("--start", 0), ("--batch-p", 32), ("--batch-k", 4),
                      ("--size", 64), ("--workers", 2), ("--every", 20)):
    ap.add_argument(flag, type=int, default=default)
args = ap.parse_args()

with morphgen.one_line_errors():  # a bad option (--ids 0): one line, exit 2, as the `morphgen` command's
    data = morphgen.OnlineDataset(ids=args.ids, identity_mixup=True, pose="frontal", antialias=1, steps=args.steps,
                                  start=args.start, batch_p=args.batch_p, batch_k=args.batch_k, input_size=args.size)
net = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1),
                    nn.BatchNorm2d(64), nn.ReLU(), nn.Conv2d(64, 128, 3, 2, 1), nn.BatchNorm2d(128), nn.ReLU(),
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 128))
head = nn.Linear(128, data.n_classes, bias=False)   # one row per identity of the pool
opt = torch.optim.SGD([*net.parameters(), *head.parameters()], lr=0.1, momentum=0.9, weight_decay=5e-4)
for batch in DataLoader(data, batch_size=None, num_workers=args.workers):   # workers split the steps
    x = batch["image"].float().sub(127.5).div(128.0)
    target = torch.zeros(len(x), data.n_classes).scatter_add_(1, batch["soft_ids"].clamp(min=0), batch["soft_weights"])
    logits = 16.0 * F.normalize(net(x)) @ F.normalize(head.weight).T     # cosine softmax
    loss = -(target * F.log_softmax(logits, 1)).sum(1).mean()
    opt.zero_grad(), loss.backward(), opt.step()
    step, yaw = int(batch["params"]["step"]), batch["params"]["yaw"]
    if step % args.every == 0 or step == args.steps - 1:
        acc = (logits.argmax(1) == batch["label"]).float().mean()
        print(f"step {step:5d}: loss {loss.item():.3f}, batch accuracy {acc:.2f}, yaw {yaw.min():.0f}..{yaw.max():.0f}")

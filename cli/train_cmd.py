"""`morphgen train` and `morphgen embed`: train face-recognition models on morphgen (or
real) data and write embeddings of image folders with a trained run."""
from __future__ import annotations

from pathlib import Path

import click

from morphgen.configfile import read_mapping
from morphgen.errors import ConfigError

from .group import UserPath

# Heavy imports (torch, the recognition package) happen inside the commands, so that
# `morphgen --help` stays fast.

ARCH_CHOICES = ["nn4small2", "inception_resnet_v1", "iresnet18", "iresnet50"]
FORMAT_CHOICES = ["auto", "morphgen", "folder", "recordio"]
PATH = UserPath(path_type=Path)


def _train_options(f):
    opts = [
        click.option("--config", type=PATH, help="YAML file of training options (keys as below, with - or _); "
                     "options given on the command line win."),
        click.option("--data", type=PATH, help="Training images: a morphgen dataset folder, a folder with one "
                     "sub-folder per identity, or an insightface RecordIO folder."),
        click.option("--online", help="Online synthesis instead of --data: every batch freshly rendered (P identities x K "
                     "images) from a `morphgen render` config file (YAML: model, ids = identity pool, pose, "
                     "identity-mixup...) or 'default'; needs --steps."),
        click.option("--landmarks", help="With --online: landmark file of the config's model (see `morphgen model "
                     "landmarks --help`), instead of the config's `landmarks` or <model>.landmarks.json beside it."),
        click.option("--online-set", "online_set", multiple=True, metavar="KEY=VALUE",
                     help="With --online: a render option over the config's, e.g. --online-set appearance=full "
                     "--online-set photo=off (repeatable; option names of `morphgen render --help`, with _ for -)."),
        click.option("--online-unbounded", is_flag=True, default=None, help="With --online: every batch brings new "
                     "identities (2^31 of them) instead of drawing from the config's pool of `ids`; triplet loss only."),
        click.option("--data-format", type=click.Choice(FORMAT_CHOICES), help="How to read --data. [default: auto]"),
        click.option("--out", type=PATH, help="Run folder for config, log.csv, checkpoint.pt, image lists and "
                     "TensorBoard events (with pip install 'morphgen[tensorboard]'). [default: run]"),
        click.option("--arch", type=click.Choice(ARCH_CHOICES), help="Network: nn4small2 (FaceNet NN4.small2, "
                     "96 px, 128-d), inception_resnet_v1 (facenet-pytorch, 160 px, 512-d), iresnet18 / iresnet50 "
                     "(arcface_torch, 112 px, 512-d). [default: nn4small2]"),
        click.option("--loss", type=click.Choice(["triplet", "arcface", "cosface"]),
                     help="triplet (semi-hard mining, P x K batches) or a margin softmax head that "
                     "takes soft labels. [default: triplet]"),
        click.option("--steps", type=int, help="Optimizer steps to train (or use --epochs)."),
        click.option("--epochs", type=float, help="Passes over the training images. [default: 1 when --steps is not given]"),
        click.option("--batch-p", type=int, help="Identities per P x K batch. [default: 20]"),
        click.option("--batch-k", type=int, help="Images per identity in a P x K batch. [default: 15]"),
        click.option("--batch-size", type=int, help="Batch size of the random sampler (margin losses; --online batches "
                     "are always --batch-p x --batch-k). [default: P*K]"),
        click.option("--sampler", type=click.Choice(["auto", "pk", "random"]),
                     help="Batch sampler. [default: pk for triplet, random for arcface/cosface]"),
        click.option("--lr", type=float, help="Learning rate. [default: 1e-3 with adam, 0.1 with sgd]"),
        click.option("--optimizer", type=click.Choice(["auto", "adam", "adamw", "sgd"]),
                     help="Optimizer. [default: sgd (momentum 0.9) for iresnet with arcface/cosface, as insightface; "
                     "adam otherwise]"),
        click.option("--weight-decay", type=float, help="L2 weight decay. [default: 0 with adam, 5e-4 with sgd]"),
        click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]),
                     help="Learning rate after warm-up: constant, or cosine decay to 0. [default: cosine]"),
        click.option("--warmup-steps", type=int, help="Linear learning-rate warm-up steps. [default: 0]"),
        click.option("--margin-warmup-steps", type=int, help="Ramp the ArcFace/CosFace margin linearly from 0 "
                     "to --margin over these steps (helps a head over many classes trained from scratch). [default: 0]"),
        click.option("--margin", type=float, help="Triplet margin (0.2), ArcFace angular margin m2 (0.5) or "
                     "CosFace margin m3 (0.35)."),
        click.option("--scale", type=float, help="Margin-head scale s. [default: 64]"),
        click.option("--input-size", type=int, help="Crop size in pixels. [default: 96 / 160 / 112 by --arch]"),
        click.option("--template", type=click.Choice(["openface", "arcface"]),
                     help="5-point alignment template. [default: openface for nn4small2, else arcface]"),
        click.option("--no-align", is_flag=True, default=None, help="Resize whole images instead of aligning "
                     "faces (for folders of ready crops; skips MTCNN)."),
        click.option("--aug", type=click.Choice(["none", "standard", "strong"]),
                     help="Augmentation preset (flip, crop, colour, blur, noise); per-kind probabilities "
                     "aug_flip ... aug_noise go in --config. [default: none, the paper-faithful recipe]"),
        click.option("--min-images-per-id", type=int, help="Drop identities with fewer usable images "
                     "(reported). [default: 2]"),
        click.option("--list", "list_file", type=PATH, help="Train on exactly the images of a list file "
                     "(e.g. a run's train_list.tsv)."),
        click.option("--subset-images", type=int, help="Seeded subset of --data: N random images."),
        click.option("--subset-ids", type=int, help="Seeded subset of --data: N random identities."),
        click.option("--subset-per-id", type=int, help="S random images per identity (identities with fewer "
                     "are dropped and reported)."),
        click.option("--subset-seed", type=int, help="Seed of the subset. [default: 0]"),
        click.option("--val-ids", type=int, help="Identities held out for verification (accuracy at best "
                     "threshold and AUC at the start, every --eval-every steps and at the end). [default: 0]"),
        click.option("--val-pairs", type=int, help="Verification pairs, half genuine. [default: 1000]"),
        click.option("--eval-every", type=int, help="Steps between verifications (0: start and end). [default: 0]"),
        click.option("--real-data", type=PATH, help="Real images (folder per identity, RecordIO, ...); their "
                     "identities become extra classes after the synthetic ones."),
        click.option("--real-format", type=click.Choice(FORMAT_CHOICES), help="How to read --real-data. [default: auto]"),
        click.option("--domain-mixup", type=float, metavar="PSI", help="Train on PSI*synthetic + (1-PSI)*real "
                     "pixels with labels mixed the same way (needs --real-data and arcface/cosface)."),
        click.option("--init", type=PATH, help="Start the backbone from this checkpoint or run folder (a new "
                     "head is made for the new classes)."),
        click.option("--freeze", help="Freeze backbone layers while fine-tuning: N first blocks (nn4small2 has 9, "
                     "inception_resnet_v1 17, the iresnets 11), or comma-separated layer names (e.g. "
                     "stem,inception_3a)."),
        click.option("--backbone-lr-mult", type=float, help="Backbone learning rate = lr * this (e.g. 0.1 "
                     "when fine-tuning). [default: 1]"),
        click.option("--resume", is_flag=True, default=None, help="Continue the run in --out from its "
                     "checkpoint.pt, with its saved config (options given here override it)."),
        click.option("--device", help="cpu or cuda (torchrun for several GPUs). [default: cpu]"),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
                     help="Autocast precision. [default: bf16 (fp16 if unsupported) on cuda, fp32 on cpu]"),
        click.option("--threads", type=int, help="Torch threads. On a machine busy with other jobs use 1: "
                     "spinning OpenMP threads then cost several times their worth. [default: all cores]"),
        click.option("--workers", type=int, help="Data-loader processes. [default: 1 on 2 cores, else cores/2 up to 8]"),
        click.option("--checkpoint-every", type=int, help="Steps between checkpoints (and one at the end). [default: 1000]"),
        click.option("--log-every", type=int, help="Steps between log.csv rows. [default: 10]"),
        click.option("--seed", type=int, help="Seed of batches, held-out split and initialisation. [default: 0]"),
        click.option("--cache", "cache_dir", type=PATH, help="Folder for cached MTCNN landmarks of real images; "
                     "share one between runs on the same data. [default: RUN/cache]"),
        click.option("--real-preview", type=PATH, help="Real images (a folder per identity): 64 of them aligned "
                     "with MTCNN go to RUN/real_crops.png, beside RUN/train_crops.png (the first batch), to compare "
                     "the framing of the two domains."),
        click.option("--quiet", is_flag=True, default=None, help="No progress bar."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@click.command("train")
@_train_options
@click.pass_context
def train(ctx: click.Context, **values) -> None:
    """Train a face-recognition model and verify it on held-out identities.

    \b
    Examples:
      morphgen train --data syn1m --out runs/nn4 --steps 20000 --val-ids 100
      morphgen train --data casia --data-format folder --out runs/ft \\
          --init runs/nn4 --subset-ids 1000 --subset-per-id 10 --lr 1e-4
      morphgen train --data syn --real-data casia --domain-mixup 0.5 \\
          --arch iresnet50 --loss arcface --device cuda --out runs/mix
    """
    from recognition.train import train as run_training
    from recognition.train_config import TrainConfig

    given = {k: v for k, v in values.items()
             if v is not None and ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    from_file = TrainConfig.read_yaml(given["config"]) if given.get("config") else {}
    out = Path(str(given.get("out") or from_file.get("out") or "run"))
    base = {}
    if (given.get("resume") or from_file.get("resume") is True) and (out / "config.json").is_file():
        base = read_mapping(out / "config.json", "the run's config")
        if base.get("sampler") == "pk" or base.get("online"):  # saved as P x K before it was left out: not an option
            base.pop("batch_size", None)
    base.update(from_file)
    for k, v in given.items():
        if k == "config":
            continue
        if k == "online_set":
            base[k] = _key_values(v, "--online-set")
        else:
            k, v = TrainConfig.field_value(k, v)  # --no-align: align false, --quiet: progress false
            base[k] = str(v) if isinstance(v, Path) else v
    cfg = TrainConfig.from_dict(base)
    try:
        summary = run_training(cfg, say=click.echo)
    except KeyboardInterrupt:
        if not Path(cfg.out).is_dir():  # stopped before the run folder was made: --resume would find none
            click.echo(f"interrupted before the run began: nothing was written to {cfg.out}; run the same command "
                       "again", err=True)
            raise SystemExit(130) from None
        click.echo(f"interrupted: the same command with --resume continues the run in {cfg.out} from its last "
                   f"checkpoint (one every {cfg.checkpoint_every} steps; from the start if none was saved yet)",
                   err=True)
        raise SystemExit(130) from None
    if summary["val_end"]:
        v = summary["val_end"]
        click.echo(f"verification on held-out identities: accuracy {v['accuracy']:.4f}, AUC {v['auc']:.4f} "
                   f"({v['pairs']} pairs)")


def _key_values(items, flag: str) -> dict:
    """('ids=300', 'photo=off') -> {'ids': 300, 'photo': 'off'}: numbers and true/false as
    in a YAML config, everything else as text (so 'off' stays a spec, not YAML's false)."""
    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r}: write KEY=VALUE, e.g. appearance=full")
        val = val.strip()
        for kind in (int, float):
            try:
                val = kind(val)
                break
            except ValueError:
                pass
        out[key.strip().replace("-", "_")] = {"true": True, "false": False}.get(val, val) if isinstance(val, str) else val
    return out


@click.command("embed")
@click.option("--model", "run", required=True, type=PATH, help="Run folder (or checkpoint.pt) of `morphgen train`.")
@click.option("--images", required=True, type=PATH, help="Image folder: morphgen dataset (aligned with its "
              "landmarks), folder tree (aligned with MTCNN), or RecordIO.")
@click.option("--out", required=True, type=PATH, help="Output .npz: embeddings, files, identities, skipped.")
@click.option("--flip", is_flag=True, help="Add the embedding of the mirrored crop (then re-normalise).")
@click.option("--no-align", is_flag=True, help="Resize whole images instead of aligning faces.")
@click.option("--data-format", type=click.Choice(FORMAT_CHOICES), default="auto", show_default=True,
              help="How to read --images.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Images per forward pass.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--cache", type=PATH, help="Folder for cached MTCNN landmarks. [default: .morphgen_cache beside --out]")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def embed(run: Path, images: Path, out: Path, flip: bool, no_align: bool, data_format: str, batch_size: int,
          device: str, cache: Path | None, quiet: bool) -> None:
    """Write L2-normalised embeddings of every face image under --images."""
    from recognition.embed import embed as run_embed

    s = run_embed(run, images, out, flip=flip, align=not no_align, data_format=data_format,
                  batch_size=batch_size, device=device, cache_dir=cache, progress=not quiet)
    click.echo(f"{s['images']} embeddings of dimension {s['dim']} ({s['arch']}) -> {s['out']}")
    skipped = {k: v for k, v in s["report"].items() if v}
    if skipped:
        click.echo("skipped: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in skipped.items()))

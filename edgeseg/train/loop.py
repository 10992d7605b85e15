"""The training loop: AdamW + cosine, CE+Dice, AMP on CUDA, DDP under torchrun (layer 3).

Resumable: ``last.pt`` (written at the end of every epoch, together with best.pt and metrics.csv:
all of them or none) holds optimizer, scheduler, step, epoch and the run's recipe; each epoch's
sampling is seeded by (seed, epoch), so a resumed run replays the interrupted epoch and ends on
the same step count. A resumed run goes on with the recipe stored in last.pt (``train.resume``).
"""
from __future__ import annotations

import contextlib
import csv
import ctypes
import io
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from edgeseg.data.transforms import SegDataset, eval_transform, normalize, train_transform
from edgeseg.errors import CheckpointError, EdgesegError
from edgeseg.fsutil import atomic_path, check_output
from edgeseg.models.checkpoint import (Checkpoint, ModelInfo, checkpoint_bytes, load_checkpoint, load_fitting,
                                       upgrade_state)
from edgeseg.recipe import Recipe, recipe_with
from edgeseg.evaluation.accumulate import evaluate
from edgeseg.data.datasets import class_list
from edgeseg.runtime.torch_runner import TorchRunner
from edgeseg.train.losses import SegLoss
from edgeseg.train.resume import DATA_ROOT_RECORDED, given_keys, resume_point, resumed_recipe, stored_recipe
from edgeseg.train.setup import build_for_training, model_info, open_splits, weights_normalization


@dataclass
class TrainResult:
    out_dir: Path
    best: dict
    last: dict
    steps: int


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _dist_setup(device: torch.device) -> tuple[int, int]:
    """(rank, world size); initialises the process group when run under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def cosine_lambda(total: int, warmup: int):
    """LR multiplier: linear warm-up, then cosine decay to 1% at ``total`` steps."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))
    return f


RUN_FILES = ("best.pt", "last.pt", "metrics.csv")
#: metrics.csv's columns before the per-class ``iou_<class>`` ones (the header every edgeseg run has written)
METRICS_COLUMNS = ("epoch", "step", "train_loss", "miou", "pixel_accuracy", "boundary_iou")


def is_run_file(path: Path) -> bool:
    """Whether ``path`` (one of ``RUN_FILES``) is a file an edgeseg run writes: a checkpoint carrying edgeseg's
    checkpoint marker, or a metrics.csv whose header starts ``epoch,step`` and names only metrics.csv's columns.
    Nothing else (a user's own model or log, a file that cannot be read) is ever replaced by a run."""
    if not path.is_file():
        return False
    if path.suffix == ".csv":
        try:
            with path.open(encoding="utf-8", newline="") as f:
                header = next(csv.reader([f.readline(4096)]), [])
        except (OSError, UnicodeDecodeError, csv.Error):
            return False
        return header[:2] == ["epoch", "step"] and all(c in METRICS_COLUMNS or c.startswith("iou_") for c in header)
    try:
        load_checkpoint(path)
    except CheckpointError:  # not a torch file, not edgeseg's format, or not one that loads as weights
        return False
    return True


def check_run_dir(out_dir: str | Path, *, resume: bool, force: bool) -> Path:
    """Refuse (exit 2) a run folder that cannot be written, or that holds a run, unless ``resume`` or ``force``.

    Only ``RUN_FILES`` are ever written there; with ``force`` an earlier run's files are replaced
    (metrics.csv starts over), and other files in the folder are left alone. A folder in a run file's place,
    or a file there that an edgeseg run did not write (``is_run_file``), is refused whatever the flags: edgeseg
    only replaces what it wrote.
    """
    if resume and force:
        raise EdgesegError("--resume continues a run and --force starts it over; give one of them")
    out_dir = check_output(out_dir, is_dir=True, what="--out")
    present = [n for n in RUN_FILES if (out_dir / n).exists() or (out_dir / n).is_symlink()]
    for name in present:
        if (out_dir / name).is_dir():
            raise EdgesegError(f"{out_dir / name} is a folder; edgeseg train writes its {name} there and never replaces "
                               "a folder: move it away or choose another --out")
    foreign = [n for n in present if not is_run_file(out_dir / n)]
    if foreign:
        what, them = ("is not an edgeseg run file", "it") if len(foreign) == 1 else ("are not edgeseg run files", "them")
        raise EdgesegError(f"--out {out_dir}: {', '.join(foreign)} {what} (edgeseg train writes {', '.join(RUN_FILES)} "
                           f"and only replaces its own); move {them} away or choose another --out")
    if present and not (resume or force):
        raise EdgesegError(f"--out {out_dir} already holds a run ({', '.join(present)}); pass --resume to continue it, "
                           "--force to start over (replaces those files), or choose a new --out")
    return out_dir


def train(recipe: Recipe | None, *, out_dir: str | Path, data_root: str | None = None, resume: bool = False,
          force: bool = False, progress: bool = True, overrides: list[str] | tuple[str, ...] | None = None
          ) -> TrainResult:
    """Train ``recipe``; writes last.pt, best.pt and metrics.csv into ``out_dir`` (see ``check_run_dir``).

    The data folder (``data_root``, else ``data.root``) is stored in the checkpoints' recipe as an absolute
    path. A new run from an edgeseg checkpoint (``model.weights``) takes the checkpoint's mean/std where the
    recipe sets none (``weights_normalization``). With ``resume`` the run goes on as it was started, with the
    recipe stored in last.pt (``resumed_recipe``): ``overrides`` are the ``a.b=v`` settings given on top of the
    recipe file (the CLI's --set), compared with the run's; None compares every field of ``recipe``. ``recipe``
    None (``resume`` only): the run's own recipe with ``overrides`` applied. A run that already trained all its
    epochs trains nothing and says so.
    """
    if recipe is None and not resume:
        raise EdgesegError("a new run needs a recipe: --recipe FILE.yaml, or a bundled recipe's name")
    out_dir = check_run_dir(out_dir, resume=resume, force=force)
    ckpt = resume_point(out_dir / "last.pt") if resume else None
    if recipe is None:
        if data_root is None and not ckpt.train_state.get(DATA_ROOT_RECORDED):
            raise EdgesegError(f"--resume: {ckpt.path} was saved before runs recorded their data folder; give --data "
                               "DIR (the folder it trained on), or the --recipe it was started with")
        recipe = stored_recipe(ckpt, overrides or ())
    recipe = with_absolute_root(recipe, data_root)
    if ckpt is not None:
        recipe = resumed_recipe(ckpt, recipe, given_keys(overrides, data_root), data_given=data_root is not None)
        if int(ckpt.train_state["epoch"]) >= recipe.train.epochs:
            return _finished(ckpt, progress)
    else:
        recipe, note = weights_normalization(recipe)
        if note and progress and int(os.environ.get("RANK", "0")) == 0:
            _progress(False).console.print(note, soft_wrap=True, markup=False, highlight=False)
    fresh = not out_dir.exists()
    try:
        return _run(_setup(recipe, out_dir, ckpt), progress)
    except BaseException:
        if fresh:  # a run that wrote no checkpoint leaves no folder behind either
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only when empty
        raise


def with_absolute_root(recipe: Recipe, data_root: str | None) -> Recipe:
    """``recipe`` with ``data.root`` set to ``data_root`` (when given) as an absolute path, so the checkpoints
    name the data the run used wherever they are read from (export calibrates on it)."""
    root = data_root if data_root is not None else recipe.data.root
    if root is None:
        return recipe
    return recipe_with(recipe.to_dict(), [("data.root", os.path.abspath(root))])


def _finished(ckpt: Checkpoint, progress: bool) -> TrainResult:
    """A resumed run that has already trained all its epochs: nothing to train, said once."""
    state = ckpt.train_state
    if progress and int(os.environ.get("RANK", "0")) == 0:
        _progress(False).console.print(
            f"{ckpt.path.parent}: the run already finished (epoch {state['epoch']} of {state['epoch']}, step "
            f"{state['step']}); nothing to train. To train it further: --resume --set train.epochs=N (N > {state['epoch']})",
            soft_wrap=True, markup=False, highlight=False)
    return TrainResult(ckpt.path.parent, dict(state["best"]), dict(ckpt.metrics), int(state["step"]))


def _run(run: "_Run", progress: bool) -> TrainResult:
    """Train ``run`` from its start epoch to its last, validating and saving after each."""
    bar = _progress(progress and run.rank == 0)
    last_metrics: dict = {}
    with bar:
        task = bar.add_task("train", total=run.total, completed=run.step, loss=float("nan"), ips=0.0)
        for epoch in range(run.start_epoch, run.recipe.train.epochs):
            losses = _train_epoch(run, epoch, bar, task)
            if run.rank == 0:
                last_metrics = _end_epoch(run, epoch, losses, bar)
            if run.world > 1:
                dist.barrier()
    if run.world > 1:
        dist.destroy_process_group()
    return TrainResult(run.out_dir, run.best, last_metrics, run.step)


@dataclass
class _Run:
    """One training run as ``_setup`` built it; ``step`` and ``best`` advance as it trains."""

    recipe: Recipe
    out_dir: Path
    resume: bool
    device: torch.device
    rank: int
    world: int
    info: ModelInfo
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    train_ds: SegDataset
    val_src: object
    steps_per_epoch: int
    total: int
    start_epoch: int
    step: int
    best: dict
    ddp_model: torch.nn.Module
    use_amp: bool
    scaler: torch.amp.GradScaler
    loss_fn: SegLoss


def _placement(name: str) -> tuple[torch.device, int, int]:
    """(device, rank, world size); under torchrun on CUDA, each process on its own GPU (LOCAL_RANK)."""
    device = _device(name)
    rank, world = _dist_setup(device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    return device, rank, world


def _train_dataset(recipe: Recipe, info: ModelInfo, train_src) -> SegDataset:
    """The training split under the recipe's augmentations."""
    a = recipe.data.augment
    return SegDataset(train_src, train_transform(info.input_size, hflip=a.hflip, scale=a.scale, rotate=a.rotate,
                                                 color=a.color, corrupt=a.corrupt))


def _setup(recipe: Recipe, out_dir: Path, resume: Checkpoint | None) -> _Run:
    """Device, data, model, optimizer and schedule for ``recipe``; restored from last.pt (``resume``) when given."""
    t = recipe.train
    device, rank, world = _placement(t.device)
    train_src, val_src = open_splits(recipe)
    info = model_info(recipe, train_src.classes)
    if resume is not None:
        check_resumed_classes(resume, info.classes)
    torch.manual_seed(t.seed)
    # a resumed run's weights come from last.pt: the recipe's starting weights are not read (nor downloaded)
    model = build_for_training(info, None if resume is not None else recipe.model.weights).to(device)
    train_ds = _train_dataset(recipe, info, train_src)
    steps_per_epoch = t.steps_per_epoch or max(1, len(train_ds) // (t.batch_size * world))
    total = steps_per_epoch * t.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(total, warmup=min(100, total // 10 + 1)))
    start_epoch, step, best = 0, 0, {"miou": -1.0}
    if resume is not None:
        start_epoch, step, best = _restore(resume, model, opt, sched)
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model  # after the restore
    use_amp = t.amp and device.type == "cuda"
    return _Run(recipe, out_dir, resume is not None, device, rank, world, info, model, opt, sched, train_ds, val_src,
                steps_per_epoch, total, start_epoch, step, best, ddp_model, use_amp,
                torch.amp.GradScaler("cuda", enabled=use_amp), SegLoss(t.dice_weight, t.boundary_weight))


TRIM_EVERY = 20  # steps between returns of freed heap memory to the system (``release_free_heap``)


def release_free_heap() -> None:
    """Hand freed heap memory back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    Rendering synthetic samples (Pillow, numpy) between training steps fragments glibc's heap: freed
    blocks stay mapped, and a 4000-sample parts run grew by ~15 MB per step (24 GB after 1450 steps,
    then swapped) though nothing was leaked. Trimming every ``TRIM_EVERY`` steps keeps it flat.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _train_epoch(run: _Run, epoch: int, bar, task) -> list[float]:
    """One epoch (``steps_per_epoch`` optimizer steps), shown on ``bar``; the loss of each step."""
    loader = _loader(run.train_ds, run.recipe.train, epoch, run.steps_per_epoch, run.world, run.rank)
    run.model.train()
    seen, t0, losses = 0, time.perf_counter(), []
    for batch_index, (images, masks) in enumerate(loader):
        if batch_index >= run.steps_per_epoch:  # DistributedSampler yields a full pass
            break
        losses.append(_train_step(run, images, masks))
        if run.step % TRIM_EVERY == 0:
            release_free_heap()
        seen += images.shape[0] * run.world
        bar.update(task, advance=1, loss=losses[-1], ips=seen / (time.perf_counter() - t0))
        if run.rank == 0 and not bar.console.is_terminal and run.step % 50 == 0:  # logs/CI: no live bar
            bar.console.log(f"step {run.step}/{run.total} loss {losses[-1]:.4f} "
                            f"{seen / (time.perf_counter() - t0):.1f} img/s")
    return losses


def _train_step(run: _Run, images, masks) -> float:
    """One optimizer and scheduler step on a batch; its loss."""
    x = normalize(images.to(run.device), run.info.mean, run.info.std)
    y = masks.to(run.device)
    with torch.autocast(run.device.type, enabled=run.use_amp):
        loss = run.loss_fn(run.ddp_model(x), y)
    run.opt.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.opt)
    run.scaler.update()
    run.sched.step()
    run.step += 1
    return loss.item()


def _end_epoch(run: _Run, epoch: int, losses: list[float], bar) -> dict:
    """Validate, append the epoch to metrics.csv, save best.pt (when val mIoU improved) and last.pt, log
    the epoch (rank 0 only); the epoch's metrics."""
    metrics = _validate(run.model, run.info, run.val_src)
    metrics.update(epoch=epoch + 1, step=run.step, train_loss=round(sum(losses) / max(1, len(losses)), 5))
    rec = run.recipe.to_dict()
    improved = metrics["miou"] > run.best["miou"]
    best = dict(metrics) if improved else run.best
    state = {"optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(), "epoch": epoch + 1,
             "step": run.step, "best": best, DATA_ROOT_RECORDED: True}
    # An epoch's files replace the previous ones all together or not at all: each is written under a temporary
    # name first, and renamed into place only once all are written (a full disk leaves the previous epoch's
    # run, or for the first epoch nothing); last.pt, where a resume starts, is renamed last. The run folder
    # and its files appear with the first epoch's results; a new run (--force) starts metrics.csv over then.
    with contextlib.ExitStack() as stack:
        last_tmp = stack.enter_context(atomic_path(run.out_dir / "last.pt"))
        best_tmp = stack.enter_context(atomic_path(run.out_dir / "best.pt")) if improved else None
        csv_tmp = stack.enter_context(atomic_path(run.out_dir / "metrics.csv"))
        csv_tmp.write_text(_csv_text(run.out_dir / "metrics.csv", metrics, run.info.classes,
                                     start_over=not run.resume and epoch == run.start_epoch), encoding="utf-8")
        if best_tmp is not None:
            best_tmp.write_bytes(checkpoint_bytes(run.model, run.info, recipe=rec, metrics=best))
        last_tmp.write_bytes(checkpoint_bytes(run.model, run.info, recipe=rec, metrics=metrics, train_state=state))
    run.best = best
    bar.console.log(f"epoch {epoch + 1}/{run.recipe.train.epochs} step {run.step} loss {metrics['train_loss']:.4f} "
                    f"val mIoU {metrics['miou']:.4f} boundary IoU {metrics['boundary_iou']:.4f}")
    return metrics


def _loader(ds, t, epoch: int, steps: int, world: int, rank: int) -> DataLoader:
    g = torch.Generator().manual_seed(t.seed * 10007 + epoch)
    torch.manual_seed(t.seed * 10007 + epoch + 1)  # augmentation randomness (workers=0)
    if world > 1:
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=t.seed)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(ds, replacement=True, num_samples=steps * t.batch_size, generator=g)
    return DataLoader(ds, batch_size=t.batch_size, sampler=sampler, num_workers=t.workers, drop_last=True,
                      generator=g, persistent_workers=False)


def check_resumed_classes(ckpt: Checkpoint, classes: tuple[str, ...]) -> None:
    """CheckpointError (exit 2) when the data's ``classes`` differ from those the run in last.pt trained on, in
    names or order: going on would give its outputs other meanings."""
    if tuple(ckpt.info.classes) != tuple(classes):
        raise CheckpointError(f"--resume: the run in {ckpt.path.parent} trains the classes {class_list(ckpt.info.classes)} "
                              f"but its data now lists {class_list(classes)}; resume with data labelled as the run's "
                              "(classes in that order), or train into a fresh --out (--weights "
                              f"{ckpt.path} to start from its weights)")


def _restore(ckpt: Checkpoint, model, opt, sched) -> tuple[int, int, dict]:
    """Load ``ckpt`` (last.pt, from ``resume_point``) into model, optimizer and scheduler; (epoch, step, best)
    to continue from.

    Weights that do not fit the model (e.g. --data now names a dataset with other classes) are a
    CheckpointError naming the file and the mismatched keys.
    """
    path = ckpt.path
    if upgrade_state(model, ckpt.state_dict).keys() != ckpt.state_dict.keys():
        raise CheckpointError(f"--resume: {path} was written by an earlier edgeseg whose model layout differs, so "
                              "its optimizer state does not fit; start a new run from its weights with "
                              f"--weights {path} --out NEW_DIR")
    load_fitting(model, ckpt.state_dict, f"--resume: {path} does not fit the model its recipe builds",
                 "the model or the data's classes changed since this run began (e.g. --data names another dataset); "
                 "resume with the run's data, or train into a fresh --out")
    opt.load_state_dict(ckpt.train_state["optimizer"])
    sched.load_state_dict(ckpt.train_state["scheduler"])
    return int(ckpt.train_state["epoch"]), int(ckpt.train_state["step"]), dict(ckpt.train_state["best"])


def _validate(model, info, val_src) -> dict:
    model.eval()
    runner = TorchRunner(model, input_size=info.input_size, mean=info.mean, std=info.std,
                         device=str(next(model.parameters()).device))
    metrics = evaluate(runner.run, val_src, info.input_size, info.classes).summary()
    return {k: metrics[k] for k in ("miou", "pixel_accuracy", "boundary_iou", "per_class_iou")}


def _csv_text(path: Path, row: dict, classes, *, start_over: bool) -> str:
    """metrics.csv (``path``) with one epoch's ``row`` added: the rows of earlier epochs are kept (none when
    ``start_over``), any of this epoch or later dropped (a resumed run replays the epoch it was stopped in)."""
    flat = {k: v for k, v in row.items() if k != "per_class_iou"}
    flat.update({f"iou_{c}": row["per_class_iou"].get(c) for c in classes})
    cols = [*METRICS_COLUMNS] + [f"iou_{c}" for c in classes]
    earlier = []
    if not start_over and path.exists():
        with path.open(newline="", encoding="utf-8") as f:
            earlier = [r for r in csv.DictReader(f) if (r.get("epoch") or "").isdigit() and int(r["epoch"]) < row["epoch"]]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(earlier)
    w.writerow({c: flat.get(c) for c in cols})
    return buf.getvalue()


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.1f} img/s"),
                    TimeRemainingColumn(), disable=not enabled)

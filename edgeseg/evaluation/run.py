"""``edgeseg eval``: metrics of any model on a dataset or the built-in synthetic set (layer 3)."""
from __future__ import annotations

from edgeseg.evaluation.slices import check_slice_ids, read_slices, slice_report
from edgeseg.data.clips import is_clip_dataset, open_clips
from edgeseg.data.datasets import builtin_source, check_data_classes, open_source
from edgeseg.errors import DataError
from edgeseg.metrics import SegMetrics
from edgeseg.runtime.base import Runner
from edgeseg.evaluation.accumulate import predict_source
from edgeseg.evaluation.temporal import evaluate_clips, smooth_params
from edgeseg.runtime.loader import ModelView, open_model
from edgeseg.runtime.stabilizer import SmoothCfg
from edgeseg.ui import console, print_table


def evaluate_model(model: str | None, *, data_root: str | None = None, split: str | None = None, count: int = 200,
                   slices_file: str | None = None, pick: str | None = None, smooth: SmoothCfg | bool = False) -> dict:
    """mIoU, per-class IoU, pixel accuracy, Boundary IoU (and slices) as a JSON-ready dict.

    ``split`` picks a split of ``data_root`` (default 'val'); the built-in set has none. On a clip
    dataset (``data.clips``: one folder of ordered frames and masks per clip) the metrics cover every
    frame and ``temporal`` holds the flicker; ``smooth`` runs the frames through the stabilizer (clips
    only). Inputs are checked (split, slices file, smoothing, model, dataset) before any image is predicted.
    """
    given = _given_slices(data_root, split, slices_file, smooth)
    runner, view = open_model(model, pick=pick)
    with runner:
        return _evaluate(runner, view, data_root, split, count, given, smooth)


def evaluate_runner(runner: Runner, view: ModelView, *, data_root: str | None = None, split: str | None = None,
                    count: int = 200, slices_file: str | None = None, smooth: SmoothCfg | bool = False) -> dict:
    """``evaluate_model`` of a model that is already open (the runner is left open)."""
    return _evaluate(runner, view, data_root, split, count, _given_slices(data_root, split, slices_file, smooth), smooth)


def _given_slices(data_root: str | None, split: str | None, slices_file: str | None, smooth=False) -> dict | None:
    """The slices of ``slices_file`` (None when not given), after checking that ``split`` has a dataset and
    that smoothing has clips to smooth."""
    if data_root is None and split is not None:
        raise DataError(f"--split {split}: the built-in synthetic eval set has no splits; "
                        "pass --data DIR to evaluate a split of a dataset")
    clips = data_root is not None and is_clip_dataset(data_root)
    if smooth and not clips:
        raise DataError(f"--smooth stabilizes video: {data_root or 'the built-in eval set'} is not a clip dataset; "
                        "pass --data CLIPS (one folder of frames and masks per clip, e.g. edgeseg data synth CLIPS --clips 8)")
    if clips and (split is not None or slices_file):
        raise DataError(f"{data_root} is a clip dataset: --split and --slices do not apply to it")
    return read_slices(slices_file) if slices_file else None


def _evaluate(runner: Runner, view: ModelView, data_root: str | None, split: str | None, count: int,
              given: dict | None, smooth: SmoothCfg | bool = False) -> dict:
    """The metrics dict of ``evaluate_model`` for an open runner (``given``: slices read from a file, or None)."""
    if data_root is not None and is_clip_dataset(data_root):
        return _evaluate_clips(runner, view, data_root, smooth)
    if data_root is None:  # synthetic samples carry their own slice attributes
        check_builtin_matches(view)
        source = builtin_source("eval", view.task, count, view.input_size)
        slices = given if given is not None else {source.get(i)[2]: source.attrs(i) for i in range(len(source))}
    else:
        check_data_classes(data_root, view.classes, view.source)
        source = open_source(data_root, split or "val", classes=view.classes, val_fraction=view.val_fraction)
        slices = given or {}
    if given is not None:
        check_slice_ids(given, _ids(source))
    preds, masks, ids, _ = predict_source(runner.run, source, view.input_size)
    if masks is None:
        raise DataError(f"{data_root}: split '{split}' has images without masks; cannot evaluate")
    metrics = SegMetrics(len(view.classes), view.classes)
    metrics.update(preds, masks)
    result = {"model": view.source, "format": view.format, "precision": view.precision,
              "data": data_root or f"built-in synthetic {view.task} eval set", **metrics.summary()}
    if slices:
        result["slices"] = slice_report(preds, masks, ids, slices, view.classes)
    return result


def _ids(source) -> list[str]:
    """The image ids of ``source``, in order (a dataset folder's without reading its images)."""
    pairs = getattr(source, "pairs", None)
    return [p.id for p in pairs] if pairs is not None else [source.get(i)[2] for i in range(len(source))]


def _evaluate_clips(runner: Runner, view: ModelView, data_root: str, smooth: SmoothCfg | bool) -> dict:
    """Metrics over every frame of a clip dataset, plus ``temporal`` (flicker, clips, frames, smooth)."""
    _, clips = open_clips(data_root, classes=view.classes)
    seg, flicker = evaluate_clips(runner.run, clips, view.input_size, view.classes, smooth)
    return {"model": view.source, "format": view.format, "precision": view.precision, "data": data_root,
            **seg.summary(), "temporal": {**flicker.summary(), "smooth": smooth_params(smooth)}}


def check_builtin_matches(view: ModelView) -> None:
    """DataError (exit 2) when no built-in synthetic set has the model's classes: its labels would mean
    something else, and a score on them would be noise (``--data`` must name the model's own data)."""
    if view.task is None:
        from edgeseg.data.synth import TASKS

        builtin = "; ".join(f"{t} ({', '.join(c)})" for t, c in TASKS.items())
        raise DataError(f"{view.source}: its classes ({', '.join(view.classes)}) match no built-in synthetic set "
                        f"[{builtin}]; pass --data DIR with labelled images of its classes")


def print_eval(result: dict) -> None:
    """Print the metrics (and slice table) of ``evaluate_model``."""
    console.print(f"[bold]{result['model']}[/] on {result['data']} ({result['images']} images)")
    rows = [["mIoU", result["miou"]], ["pixel accuracy", result["pixel_accuracy"]], ["boundary IoU", result["boundary_iou"]]]
    rows += [[f"IoU {k}", v] for k, v in result["per_class_iou"].items()]
    if "temporal" in result:
        t = result["temporal"]
        smooth = "stabilized" if t["smooth"] else "raw"
        rows += [[f"flicker ({smooth}, {t['clips']} clips, {t['frames']} frames)", t["flicker"]],
                 ["flicker in boundary band", t["boundary_flicker"]]]
    print_table("metrics", ["metric", "value"], [[k, _fmt(v)] for k, v in rows])
    for attr, rep in result.get("slices", {}).items():
        print_table(f"slice: {attr} (worst {rep['worst']}, gap {_fmt(rep['gap'])})", ["value", "images", "IoU"],
                    [[v, rep["images"][v], _fmt(x)] for v, x in rep["iou"].items()])


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

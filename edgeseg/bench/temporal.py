"""``edgeseg bench --clips``: every file's flicker on a clip dataset, raw and through the stabilizer, so a
file that flickers more than its fp32 sibling shows up (layer 3). Shown and recorded, not gated."""
from __future__ import annotations

from edgeseg.data.clips import open_clips
from edgeseg.errors import ArtifactError, MissingExtra
from edgeseg.evaluation.temporal import evaluate_clips, smooth_params
from edgeseg.runtime.stabilizer import SmoothCfg

COLUMNS = ["artifact", "mIoU", "flicker", "flicker --smooth", "boundary flicker", "boundary --smooth", "mIoU --smooth"]


def check_clips(clips_dir: str, model: dict) -> list:
    """The clips of ``clips_dir`` (``data.clips.Clip``), checked against the benchmarked model's classes before
    any timing."""
    return open_clips(clips_dir, classes=tuple(model["classes"]))[1]


def clip_flicker(targets, clips, clips_dir: str, size: tuple[int, int], classes, threads: int) -> dict:
    """The bench JSON's ``temporal`` block: per target, metrics and flicker on ``clips``, raw and smoothed."""
    cfg = SmoothCfg()
    rows = []
    for t in targets:
        if t.skipped:
            continue
        row = {"artifact": t.name, "format": t.format, "precision": t.precision}
        try:
            runner = t.make_runner(threads)
        except (MissingExtra, ArtifactError) as exc:
            rows.append({**row, "skipped": str(exc)})
            continue
        with runner:
            for key, smooth in (("raw", None), ("smooth", cfg)):
                seg, flicker = evaluate_clips(runner.run, clips, size, classes, smooth)
                s = flicker.summary()
                row[key] = {"miou": seg.summary()["miou"], "flicker": s["flicker"],
                            "boundary_flicker": s["boundary_flicker"]}
        rows.append(row)
    frames = sum(len(c.source) for c in clips)
    return {"data": clips_dir, "clips": len(clips), "frames": frames, "threads": threads,
            "smooth": smooth_params(cfg), "results": rows}


def flicker_rows(block: dict) -> list[list[str]]:
    """Table rows (``COLUMNS``) of a ``temporal`` block."""
    def f(v):
        return "n/a" if v is None else f"{v:.4f}"
    rows = []
    for r in block["results"]:
        if "skipped" in r:
            rows.append([r["artifact"], r["skipped"]] + [""] * (len(COLUMNS) - 2))
            continue
        raw, sm = r["raw"], r["smooth"]
        rows.append([r["artifact"], f(raw["miou"]), f(raw["flicker"]), f(sm["flicker"]), f(raw["boundary_flicker"]),
                     f(sm["boundary_flicker"]), f(sm["miou"])])
    return rows

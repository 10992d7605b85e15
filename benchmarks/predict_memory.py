"""Peak memory of ``edgeseg predict`` per pixel, for every output mode with and without ``--refine``.

Each measurement runs in a fresh Python process: it loads the model and warms it up on a small
image, reads its resident memory (the baseline), then reads, segments, renders and saves one large
generated photo exactly as ``edgeseg predict`` does, and reports the peak resident memory
(``resource.getrusage(...).ru_maxrss``, KB on Linux) minus the baseline, in bytes per pixel.
Where Linux allows it the peak is reset at the baseline (``/proc/self/clear_refs``), so a
transient peak while loading the model is not counted. The work is done in bands of rows whose
float64 temporaries cost a fixed few tens of MB: on small photos (below ~1 MP) that constant
dominates the bytes per pixel, so measure at 1.5 MP or more.

    python benchmarks/predict_memory.py --size 8000x6000 --output blur --refine on
    python benchmarks/predict_memory.py --size 1500x1000 --json out/predict_memory.json   # every mode, both ways

The parent process stays small (it imports neither numpy nor torch): with vfork the child's
``ru_maxrss`` starts at the parent's size.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUTPUTS = ("mask", "alpha", "cutout", "blur", "replace", "overlay")
HERE = Path(__file__).resolve()


# ----------------------------------------------------------------------------------------------
# child processes: generate the photo, measure one (mode, refine)
# ----------------------------------------------------------------------------------------------


def make_photo(path: Path, width: int, height: int, seed: int = 0) -> None:
    """A synthetic portrait of ``width`` x ``height``: a rendered scene scaled up, plus sensor noise, as JPEG."""
    import numpy as np
    from PIL import Image

    from edgeseg.data import synth

    small = synth.render("portrait", (max(64, height // 8), max(64, width // 8)), seed).image
    img = Image.fromarray(small).resize((width, height), Image.BICUBIC)
    rng = np.random.default_rng(seed)
    arr = np.asarray(img).copy()
    for y in range(0, height, 512):  # noise in bands: the generator stays small too
        band = arr[y: y + 512]
        band[:] = np.clip(band + rng.normal(0, 6, band.shape), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=92)


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(model: str, photo: Path, output: str, refine: bool, background: Path) -> dict:
    """Peak RSS over the baseline while predicting ``photo`` once (runs in the child process)."""
    import gc
    import io
    import resource

    import numpy as np

    from edgeseg.apply.predict import predict_image, render
    from edgeseg.data.images import load_image
    from edgeseg.runtime.loader import open_model

    runner, view = open_model(model)
    with runner:
        bg = load_image(background) if output == "replace" else None
        warm = np.full((96, 80, 3), 128, np.uint8)
        warm[20:70, 20:60] = 30
        render(output, warm, predict_image(runner.run, warm, view.input_size, refine=refine), bg).save(io.BytesIO(), "PNG")
        gc.collect()
        base_kb = _rss_kb()
        reset = _reset_peak()
        t0 = time.perf_counter()
        image = load_image(photo)
        h, w = image.shape[:2]
        pred = predict_image(runner.run, image, view.input_size, refine=refine)
        with tempfile.TemporaryDirectory() as tmp:
            render(output, image, pred, bg).save(Path(tmp) / "out.png", format="PNG")
        seconds = time.perf_counter() - t0
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    grow = (peak_kb - base_kb) * 1024
    return {"output": output, "refine": refine, "width": w, "height": h, "baseline_mb": round(base_kb / 1024, 1),
            "peak_mb": round(peak_kb / 1024, 1), "growth_mb": round(grow / 2**20, 1),
            "bytes_per_pixel": round(grow / (w * h), 1), "seconds": round(seconds, 2), "peak_reset": reset}


# ----------------------------------------------------------------------------------------------
# parent
# ----------------------------------------------------------------------------------------------


def _child(*args: str, timeout: float) -> str:
    res = subprocess.run([sys.executable, str(HERE), *args], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    if res.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    return res.stdout


def run(model: str, width: int, height: int, outputs, refines, workdir: Path, timeout: float) -> list[dict]:
    """Measure every (output, refine) in its own process; returns one result dict each."""
    photo, bg = workdir / f"photo-{width}x{height}.jpg", workdir / "background.jpg"
    if not photo.exists():
        _child("--make-photo", str(photo), "--size", f"{width}x{height}", timeout=timeout)
    if not bg.exists():
        _child("--make-photo", str(bg), "--size", "1200x900", timeout=timeout)
    results = []
    for output in outputs:
        for refine in refines:
            out = _child("--measure", str(photo), "--model", model, "--output", output, "--background", str(bg),
                         "--refine", "on" if refine else "off", timeout=timeout)
            results.append(json.loads(out.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{output:8s} refine={'on ' if refine else 'off'} peak +{r['growth_mb']:8.1f} MB "
                  f"= {r['bytes_per_pixel']:6.1f} B/px  ({r['seconds']:.1f} s)", file=sys.stderr, flush=True)
    return results


def markdown(results: list[dict]) -> str:
    rows = ["| output | refine | size | peak RSS growth MB | bytes / pixel | seconds |", "|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r['output']} | {'yes' if r['refine'] else 'no'} | {r['width']}x{r['height']} | "
                    f"{r['growth_mb']:.0f} | {r['bytes_per_pixel']:.1f} | {r['seconds']:.1f} |")
    return "\n".join(rows)


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="checkpoint, exported file or export dir [packaged model]")
    ap.add_argument("--size", default="1500x1000", help="WIDTHxHEIGHT of the generated photo")
    ap.add_argument("--output", choices=OUTPUTS, action="append", help="output mode (repeatable) [all]")
    ap.add_argument("--refine", choices=("on", "off", "both"), default="both")
    ap.add_argument("--workdir", help="where the generated photos are kept [a temporary folder]")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", help="also write the results as JSON")
    ap.add_argument("--make-photo", help=argparse.SUPPRESS)
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--background", help=argparse.SUPPRESS)
    args = ap.parse_args()
    width, height = _size(args.size)
    refines = {"on": [True], "off": [False], "both": [False, True]}[args.refine]
    if args.make_photo:
        return make_photo(Path(args.make_photo), width, height)
    if args.measure:
        result = measure(args.model, Path(args.measure), args.output[0], refines[0], Path(args.background))
        return print(json.dumps(result))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = run(args.model, width, height, args.output or OUTPUTS, refines, workdir, args.timeout)
    print(markdown(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        payload = {"size": [width, height], "model": args.model, "results": results}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Does ``--refine`` improve edges? Boundary IoU of the default model, refined vs unrefined.

Renders synthetic portraits whose hair has thin strands at a higher resolution than the
model's input (as phone photos are), segments them with ``edgeseg.apply.predict`` both ways,
and prints a Markdown table (and writes JSON with ``--json``).

    python benchmarks/refine_eval.py --count 40 --size 512 --json out/refine.json
"""
from __future__ import annotations

import argparse
import json
import time

from edgeseg.apply.predict import predict_image
from edgeseg.data import synth
from edgeseg.metrics import SegMetrics
from edgeseg.runtime.loader import open_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint / exported file (default: packaged model)")
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--json")
    args = ap.parse_args()
    runner, view = open_model(args.model)
    results = {}
    samples = []
    i = 0
    while len(samples) < args.count:  # only images whose hair has thin strands
        s = synth.render("portrait", args.size, synth.sample_seed(args.seed, i))
        i += 1
        if s.attrs["hair_type"] == "strands":
            samples.append(s)
    for refine in (False, True):
        m = SegMetrics(2, view.classes)
        t0 = time.perf_counter()
        for s in samples:
            m.update(predict_image(runner.run, s.image, view.input_size, refine=refine).classes, s.mask)
        results["refined" if refine else "unrefined"] = {"boundary_iou": round(m.boundary_iou(), 4),
                                                         "person_iou": round(float(m.iou()[1]), 4),
                                                         "ms_per_image": round((time.perf_counter() - t0) * 1000 / len(samples), 1)}
    print(f"{len(samples)} synthetic portraits with thin hair strands, {args.size}x{args.size}, model input "
          f"{view.input_size[1]}x{view.input_size[0]} ({view.source})\n")
    print("| | Boundary IoU | person IoU | ms / image |\n|---|---|---|---|")
    for k, v in results.items():
        print(f"| {k} | {v['boundary_iou']:.4f} | {v['person_iou']:.4f} | {v['ms_per_image']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"images": len(samples), "size": args.size, **results}, f, indent=2)


if __name__ == "__main__":
    main()

"""How often does the latency gate fail on an unchanged model, and how many runs stop that?

Times the same artifacts ``--repeats`` (M) times for each run count N in ``--runs-list``,
each timing made as ``edgeseg bench`` makes one: ``--sessions`` (S) fresh loads of N runs,
the median over loads. Every pair (an earlier
repeat as the baseline, a later one as the new run) is one simulated gate check; it is a false
alarm when normalized p50 grew by more than ``--max-slowdown`` (R). For each N it reports the
false-alarm rate per artifact and for the whole gate (any artifact over R fails the gate), and
prints the smallest N whose gate rate is below ``--target-rate``.

It also reports the rate with the gate's re-timing (``edgeseg bench --confirm``, the default):
for triples (baseline i, run j, re-timing k; i < j < k) the gate fails only when some artifact
is over R in both j and k.

Pairs share repeats, so they are not independent: treat the rates as estimates, and use the
same thread count and machine type as the CI job.

    python benchmarks/flap_check.py out/flap --export-dir out/bench --threads 1 --repeats 20
    python benchmarks/flap_check.py out/flap2 --from-json out/flap.json --max-slowdown 1.2  # re-analyse, no timing
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from common import cv, md_table, run_main, select_artifacts, timing_image, write_outputs

from edgeseg.bench.harness import bench_targets, host_info, reference_checkpoint
from edgeseg.bench.latency_reference import CalibrationPool
from edgeseg.bench.latency import combine_sessions, time_interleaved
from edgeseg.errors import EdgesegError, MissingExtra


def make_targets(manifest, arts, with_reference: bool) -> list:
    """The bench Targets of the artifacts (and the PyTorch reference), as ``edgeseg bench`` builds them."""
    ckpt = reference_checkpoint(manifest) if with_reference else None
    if with_reference and ckpt is None:
        print("no reference: the export's checkpoint is not available here")
    return bench_targets([(manifest, a) for a in arts], ckpt)


def collect(manifest, targets: list, runs_list, args) -> dict:
    """normalized p50 per N (as str), target and repeat: {N: {target: [M values]}}."""
    image = timing_image(manifest)
    out = {str(n): {} for n in runs_list}
    t0 = time.perf_counter()
    with CalibrationPool() as pool:
        for rep in range(args.repeats):
            for t in targets:
                per_n = {n: [] for n in runs_list}
                for _ in range(args.sessions):  # fresh loads, as edgeseg bench --sessions does
                    try:
                        runner = t.make_runner(args.threads)
                        calib = None if runner.latency_note else pool.get(t.format, t.precision, args.threads)
                    except MissingExtra as exc:
                        if rep == 0:
                            print(f"skipping {t.name}: {exc}")
                        break
                    with runner:
                        if calib is None:  # not timed here (e.g. the Core ML reference runner off macOS)
                            if rep == 0:
                                print(f"skipping {t.name}: {runner.latency_note}")
                            break
                        for n in runs_list:
                            per_n[n].append(time_interleaved(runner, image, calib, runs=n, warmup=args.warmup))
                for n, timings in per_n.items():
                    if len(timings) == args.sessions:
                        out[str(n)].setdefault(t.name, []).append(combine_sessions(timings)[1])
            print(f"repeat {rep + 1}/{args.repeats} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def false_alarms(by_artifact: dict, max_slowdown: float) -> dict:
    """Pairs (earlier i, later j): rate of ratio > R per artifact and for the gate as a whole."""
    names = list(by_artifact)
    m = min(len(v) for v in by_artifact.values())
    pairs = list(itertools.combinations(range(m), 2))
    ratios = {a: [by_artifact[a][j] / by_artifact[a][i] for i, j in pairs] for a in names}
    per_artifact = {a: {"false_alarm_rate": sum(r > max_slowdown for r in ratios[a]) / len(pairs),
                        "max_ratio": max(ratios[a]), "cv": cv(by_artifact[a])} for a in names}
    gate_fails = sum(any(ratios[a][k] > max_slowdown for a in names) for k in range(len(pairs)))
    triples = list(itertools.combinations(range(m), 3))
    v = by_artifact
    confirmed = sum(any(v[a][j] > max_slowdown * v[a][i] and v[a][k] > max_slowdown * v[a][i] for a in names)
                    for i, j, k in triples)
    return {"pairs": len(pairs), "gate_false_alarm_rate": gate_fails / len(pairs), "triples": len(triples),
            "confirmed_gate_false_alarm_rate": confirmed / len(triples) if triples else None,
            "per_artifact": per_artifact}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="writes OUT.json and OUT.md")
    ap.add_argument("--export-dir", default="out/bench")
    ap.add_argument("--artifact", action="append", metavar="FORMAT:PRECISION", help="repeatable [all in the manifest]")
    ap.add_argument("--reference", action="store_true",
                    help="also time the PyTorch fp32 reference (the gate checks it too)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20, help="M timings per N (>= 2)")
    ap.add_argument("--runs-list", default="10,20,40,80", help="run counts N to try")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--sessions", type=int, default=3, help="fresh loads per timing (edgeseg bench --sessions)")
    ap.add_argument("--max-slowdown", type=float, default=1.15)
    ap.add_argument("--target-rate", type=float, default=0.05)
    ap.add_argument("--from-json", metavar="FILE", help="re-analyse the timings of an earlier run's OUT.json (no timing)")
    args = ap.parse_args()
    if args.repeats < 2:
        ap.error("--repeats must be at least 2 (a baseline and a later run)")
    runs_list = sorted(int(n) for n in args.runs_list.split(","))

    if args.from_json:
        earlier = json.loads(Path(args.from_json).read_text())
        data, host = earlier["normalized_p50"], earlier["host"]
        for key in ("export_dir", "threads", "sessions", "repeats", "runs_list", "warmup"):
            setattr(args, key, earlier["settings"][key])
        runs_list = args.runs_list
    else:
        manifest, arts = select_artifacts(args.export_dir, args.artifact)
        data, host = collect(manifest, make_targets(manifest, arts, args.reference), runs_list, args), host_info()
    results = {n: false_alarms(by_art, args.max_slowdown) for n, by_art in data.items() if by_art}
    if not results:
        raise EdgesegError("nothing could be timed (no runtime available for the chosen artifacts)")
    passing = [int(n) for n, r in results.items() if r["gate_false_alarm_rate"] < args.target_rate]
    smallest = min(passing) if passing else None

    rows = []
    for n, r in results.items():
        rows += [[n, name, r["pairs"], a["false_alarm_rate"], a["max_ratio"], a["cv"]]
                 for name, a in r["per_artifact"].items()]
        rows.append([n, "**whole gate**", r["pairs"], r["gate_false_alarm_rate"], "", ""])
        rows.append([n, "**whole gate, re-timed (--confirm)**", r["triples"], r["confirmed_gate_false_alarm_rate"], "", ""])
    verdict = (f"smallest N with a gate false-alarm rate below {args.target_rate:.0%}: {smallest}" if smallest else
               f"no N in {runs_list} got the gate false-alarm rate below {args.target_rate:.0%}; try larger N")
    markdown = (f"# flap check\n\n{args.repeats} timings per N of an unchanged model ({args.sessions} fresh load(s) of N runs "
                f"each, median over loads), {args.threads} thread(s); "
                f"false alarm = normalized p50 of a later timing > {args.max_slowdown}x an earlier one.\n\n"
                + md_table(["N", "artifact", "pairs (triples)", "false-alarm rate", "max ratio", "CV"], rows)
                + f"\n\n**{verdict}**\n")
    print("\n" + markdown)
    settings = {"export_dir": args.export_dir, "targets": list(next(iter(results.values()))["per_artifact"]),
                "threads": args.threads, "sessions": args.sessions, "repeats": args.repeats, "runs_list": runs_list, "warmup": args.warmup,
                "max_slowdown": args.max_slowdown, "target_rate": args.target_rate}
    doc = {"settings": settings, "host": host, "smallest_runs": smallest, "results": results,
           "normalized_p50": data}
    print("wrote " + ", ".join(map(str, write_outputs(args.out, doc, markdown))))


if __name__ == "__main__":
    run_main(main)

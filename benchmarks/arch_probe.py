"""Compare the exports of several models side by side: does int8 pay, and by how much?

``edgeseg bench`` times one model per run and normalizes each precision by its own calibration
workload, so its normalized p50s cannot say "int8 is 0.6x fp32" or "this model's int8 is 0.7x
that model's fp32". This script times every fp32/int8 ONNX and TFLite file of every export
directory given in ONE process, interleaved: each round runs every file once, in a shuffled
order, so load drift on a shared machine hits all files alike. Each session loads every file
afresh; a ratio is computed from each session's p50s and the median over sessions is reported.

Per model it reports params, MACs, the int8 TFLite file's size, its QUANTIZE/DEQUANTIZE ops
(at the graph's input/output, int8->int8 requantizations, float<->int8 boundaries), XNNPACK
partitions, p50s, int8/fp32 per runtime, int8 TFLite / the reference's fp32 TFLite, and GMAC/s.

    .venv/bin/python benchmarks/arch_probe.py out/probe --reference out/exp/today out/exp/candidate1 out/exp/candidate2
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

from common import md_table, run_main, timing_image, write_outputs

from edgeseg.errors import EdgesegError
from edgeseg.manifest import Manifest, read_manifest
from edgeseg.runtime.loader import runner_for_artifact

PICKS = (("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32"), ("onnx", "int8"))


def quant_ops(path: Path) -> dict:
    """Count a TFLite file's QUANTIZE/DEQUANTIZE ops by role, as ``edgeseg models`` does (``int8_audit``):
    ``io`` (the input's conversion, the output's), ``requant`` (int8 -> int8 rescale, runs in XNNPACK)
    and ``float`` (a boundary between int8 and float compute inside the graph)."""
    from edgeseg.export.int8_audit import integer_check, tflite_graph

    return integer_check(tflite_graph(path.read_bytes()))["qdq"]


def graph_facts(manifest: Manifest) -> dict:
    """Params, MACs and the int8 TFLite file's size, Q/DQ ops and XNNPACK partitions."""
    from edgeseg.export.tflite_convert import xnnpack_partitions

    facts = {"model": manifest.model["name"], "arch": manifest.model.get("architecture"),
             "params": manifest.model.get("params"), "macs": manifest.model.get("macs")}
    art = manifest.find("tflite", "int8")
    if art is not None:
        path = art.verified_file()
        facts.update(int8_tflite_kb=round(path.stat().st_size / 1024), qdq=quant_ops(path),
                     xnnpack_partitions=xnnpack_partitions(path.read_bytes())[0])
    return facts


def one_session(items: list[tuple[str, object, object]], image, *, rounds: int, warmup: int, threads: int, seed: int) -> dict:
    """Load every (key, manifest, artifact) afresh, then time ``rounds`` interleaved rounds; p50 ms per key."""
    runners = {key: runner_for_artifact(art, man, threads) for key, man, art in items}
    batch = image[None]
    try:
        for runner in runners.values():
            for _ in range(warmup):
                runner.run(batch)
        samples: dict[str, list[float]] = {key: [] for key in runners}
        order, rng = list(runners), random.Random(seed)
        for _ in range(rounds):
            rng.shuffle(order)
            for key in order:
                t0 = time.perf_counter()
                runners[key].run(batch)
                samples[key].append((time.perf_counter() - t0) * 1000)
    finally:
        for runner in runners.values():
            runner.close()
    return {key: statistics.median(v) for key, v in samples.items()}


def ratios(p50: dict, names: list[str], reference: str) -> dict:
    """Per model: int8/fp32 per runtime, and its int8 TFLite over the reference's fp32 TFLite."""
    out = {}
    for name in names:
        r = {f"{fmt}_int8_over_fp32": p50[f"{name}:{fmt}:int8"] / p50[f"{name}:{fmt}:fp32"]
             for fmt in ("tflite", "onnx") if f"{name}:{fmt}:int8" in p50 and f"{name}:{fmt}:fp32" in p50}
        if f"{name}:tflite:int8" in p50:
            r["tflite_int8_over_reference_fp32"] = p50[f"{name}:tflite:int8"] / p50[f"{reference}:tflite:fp32"]
        out[name] = r
    return out


def median_over(sessions: list[dict]) -> dict:
    """Key-wise median of a list of same-shaped (possibly nested) dicts of numbers."""
    first = sessions[0]
    if isinstance(first, dict):
        return {k: median_over([s[k] for s in sessions]) for k in first}
    return round(statistics.median(sessions), 4)


def collect(dirs: list[str]) -> tuple[list[str], dict, list]:
    """Model names, their manifests, and the (key, manifest, artifact) items to time."""
    names, manifests, items = [], {}, []
    for d in dirs:
        man = read_manifest(d)
        name = Path(os.path.abspath(d)).name
        if name in manifests:
            raise EdgesegError(f"two export directories are named {name!r}; give each model its own folder name")
        names.append(name)
        manifests[name] = man
        for fmt, prec in PICKS:
            art = man.find(fmt, prec)
            if art is not None:
                items.append((f"{name}:{fmt}:{prec}", man, art))
    return names, manifests, items


def _pair(a, b) -> str:
    return "/".join("-" if v is None else f"{v:.2f}" for v in (a, b))


def _num(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def report(names, facts, p50, rel) -> str:
    """One markdown row per model; '-' where a file or a number is missing."""
    header = ["model", "params M", "MMACs", "int8 TFLite KB", "Q/DQ io/requant/float", "XNNPACK partitions",
              "TFLite fp32/int8 ms", "TFLite int8/fp32", "ORT fp32/int8 ms", "ORT int8/fp32", "int8 TFLite / ref fp32 TFLite",
              "GMAC/s TFLite fp32/int8"]
    rows = []
    for n in names:
        f, r = facts[n], rel[n]
        ms = {k.split(":", 1)[1]: v for k, v in p50.items() if k.startswith(n + ":")}
        gmacs = {k: f["macs"] / 1e6 / ms[k] if k in ms and f["macs"] else None for k in ("tflite:fp32", "tflite:int8")}
        q = f.get("qdq", {})
        rows.append([n, f"{(f['params'] or 0) / 1e6:.3f}", f"{(f['macs'] or 0) / 1e6:.0f}", f.get("int8_tflite_kb", "-"),
                     f"{q.get('io', '-')}/{q.get('requant', '-')}/{q.get('float', '-')}", f.get("xnnpack_partitions", "-"),
                     _pair(ms.get("tflite:fp32"), ms.get("tflite:int8")), _num(r.get("tflite_int8_over_fp32")),
                     _pair(ms.get("onnx:fp32"), ms.get("onnx:int8")), _num(r.get("onnx_int8_over_fp32")),
                     _num(r.get("tflite_int8_over_reference_fp32")),
                     "/".join("-" if v is None else f"{v:.0f}" for v in gmacs.values())])
    return md_table(header, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output stem: writes OUT.json and OUT.md")
    ap.add_argument("dirs", nargs="+", help="export directories, one model each")
    ap.add_argument("--reference", required=True, help="export directory whose fp32 TFLite is the speed reference")
    ap.add_argument("--rounds", type=int, default=30, help="timed runs per file per session")
    ap.add_argument("--sessions", type=int, default=3, help="fresh loads of every file")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.rounds < 3 or args.sessions < 1 or args.threads < 1 or args.warmup < 0:
        raise EdgesegError("--rounds must be >= 3, --sessions and --threads >= 1, --warmup >= 0")
    names, manifests, items = collect([args.reference, *args.dirs])
    reference = names[0]
    if f"{reference}:tflite:fp32" not in {k for k, _, _ in items}:
        raise EdgesegError(f"{args.reference}: no fp32 TFLite file to use as the reference")
    doc, md = measure(names, manifests, items, reference, rounds=args.rounds, sessions=args.sessions,
                      warmup=args.warmup, threads=args.threads)
    publish(args.out, doc, md)


def measure(names: list[str], manifests: dict, items: list, reference: str, *, rounds: int, sessions: int, warmup: int,
            threads: int) -> tuple[dict, str]:
    """Time ``items`` in ``sessions`` interleaved sessions; (the results document, its markdown table)."""
    facts = {n: graph_facts(manifests[n]) for n in names}
    image = timing_image(manifests[reference])
    per_session = []
    for s in range(sessions):
        per_session.append(one_session(items, image, rounds=rounds, warmup=warmup, threads=threads, seed=s))
        print(f"session {s + 1}/{sessions} done", flush=True)
    p50 = median_over(per_session)
    rel = median_over([ratios(s, names, reference) for s in per_session])
    doc = {"threads": threads, "rounds": rounds, "sessions": sessions, "reference": reference,
           "models": facts, "p50_ms": p50, "ratios": rel, "per_session_p50_ms": per_session}
    return doc, report(names, facts, p50, rel)


def publish(out: str, doc: dict, md: str) -> None:
    """Write OUT.json and OUT.md and print the table."""
    js, mdp = write_outputs(out, doc, md)
    print(md)
    print(f"wrote {js} and {mdp}")


if __name__ == "__main__":
    run_main(main)

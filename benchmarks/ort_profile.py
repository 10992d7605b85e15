"""Where ONNX Runtime spends an exported model's time, fp32 against int8, node by node.

Runs the fp32 and int8 ``.onnx`` of an export with ONNX Runtime's own profiler (CPU provider, the
session's default graph optimizations, 1 thread) and sums kernel time per operator type and per node,
so you can see which layers int8 makes slower rather than faster (on x86, ONNX Runtime's fast int8
depthwise kernel takes only multiples of 16 channels; a convolution over 3 input channels cannot use
its fast int8 convolution either). The timings are profiler times (they include its overhead):
compare the two columns, not the absolute numbers with ``edgeseg bench``.

    .venv/bin/python benchmarks/ort_profile.py out/bench benchmarks/results/ort_profile_default_x86_64-2core
"""
from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from common import md_table, run_main, select_artifacts, write_outputs

from edgeseg.errors import require


def profile(paths: dict, runs: int, warmup: int) -> dict:
    """{key: {"total_us", "ops": {op type: us per run}, "nodes": [{name, op, output, us}] slowest first}} for
    ``paths`` {key: .onnx path}, their runs interleaved so that load on the machine falls on all alike."""
    ort = require("onnxruntime", "onnx", "profiling ONNX models")
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for key, path in paths.items():
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            opts.enable_profiling = True
            opts.profile_file_prefix = str(Path(tmp) / key)
            sessions[key] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = next(iter(sessions.values())).get_inputs()[0]
        feed = np.random.default_rng(0).normal(0, 1, inp.shape).astype(np.float32)
        for _ in range(warmup + runs):
            for session in sessions.values():
                session.run(None, {session.get_inputs()[0].name: feed})
        events = {key: json.loads(Path(s.end_profiling()).read_text()) for key, s in sessions.items()}
    return {key: _summary(ev, warmup, runs) for key, ev in events.items()}


def _summary(events: list, warmup: int, runs: int) -> dict:
    """Kernel time per timed run by op type and by node (the profiler records every run: each node's first
    ``warmup`` events, the warm-up runs', are left out)."""
    ops: dict = defaultdict(float)
    nodes: dict = defaultdict(float)
    seen: dict = defaultdict(int)
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        seen[e["name"]] += 1
        if seen[e["name"]] <= warmup:
            continue
        args = e["args"]
        ops[args["op_name"]] += e["dur"]
        shape = next(iter(args.get("output_type_shape", [{}])[0].items()), ("", []))
        nodes[(e["name"][:-len("_kernel_time")], args["op_name"], f"{shape[0]} {shape[1]}")] += e["dur"]
    return {"total_us": sum(ops.values()) / runs,
            "ops": {k: v / runs for k, v in sorted(ops.items(), key=lambda kv: -kv[1])},
            "nodes": [{"name": n, "op": op, "output": out, "us": us / runs}
                      for (n, op, out), us in sorted(nodes.items(), key=lambda kv: -kv[1])]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export_dir")
    ap.add_argument("out", help="writes OUT.json and OUT.md")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--top", type=int, default=12, help="slowest nodes listed per file")
    args = ap.parse_args()
    manifest, arts = select_artifacts(args.export_dir, ["onnx:fp32", "onnx:int8"])
    result = profile({art.precision: art.file for art in arts}, args.runs, args.warmup)
    fp32, int8 = result["fp32"], result["int8"]
    ops = sorted(set(fp32["ops"]) | set(int8["ops"]), key=lambda k: -max(fp32["ops"].get(k, 0), int8["ops"].get(k, 0)))
    md = [f"# ONNX Runtime profile, fp32 vs int8: {manifest.model.get('name', args.export_dir)}", "",
          f"`benchmarks/ort_profile.py`, 1 thread, {args.runs} runs each after {args.warmup} warm-up, the two "
          "files' runs interleaved; kernel time per run in microseconds (profiler time, so compare the "
          "columns, not with `edgeseg bench`).", "",
          f"Total: fp32 {fp32['total_us']:.0f} us, int8 {int8['total_us']:.0f} us "
          f"(int8/fp32 {int8['total_us'] / fp32['total_us']:.2f}).", "",
          md_table(["op type", "fp32 us", "int8 us"],
                   [[k, round(fp32["ops"].get(k, 0)), round(int8["ops"].get(k, 0))] for k in ops])]
    for prec, res in result.items():
        md += ["", f"Slowest {prec} nodes:", "",
               md_table(["node", "op", "output", "us"],
                        [[n["name"], n["op"], n["output"], round(n["us"])] for n in res["nodes"][:args.top]])]
    js, mdp = write_outputs(args.out, {"export_dir": args.export_dir, "runs": args.runs, **result}, "\n".join(md))
    print("\n".join(md))
    print(f"wrote {js} and {mdp}")


if __name__ == "__main__":
    run_main(main)

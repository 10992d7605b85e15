"""``make bench``: export the packaged default model and gate its latency and parity.

Reads ``benchmarks/config.yaml``, exports the default model into the configured export
directory (re-using it when its manifest was made from the packaged checkpoint and lists
every configured file), then runs ``edgeseg bench`` on it, writing the JSON and the report
and gating against the machine type's baseline. Both steps run the real CLI in a subprocess,
so this behaves exactly like typing the commands.

    python benchmarks/run_bench.py                    # exit 0 ok, 1 gate failed, 2 bad input
    python benchmarks/run_bench.py --update-baseline  # record this machine's baseline instead

Baselines are only comparable on the same machine type; create one per type.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "benchmarks" / "config.yaml"
EDGESEG = [sys.executable, "-m", "edgeseg.cli"]


def load_config(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def export_is_current(export_dir: Path, formats, precisions) -> tuple[bool, str]:
    """(True, '') when ``export_dir`` holds every configured file exported from the packaged checkpoint."""
    from edgeseg.errors import ArtifactError
    from edgeseg.manifest import MANIFEST_NAME, read_manifest
    from edgeseg.models.checkpoint import DEFAULT_CHECKPOINT

    if not (export_dir / MANIFEST_NAME).is_file():
        return False, "no manifest yet"
    try:
        manifest = read_manifest(export_dir)
    except ArtifactError as exc:
        return False, str(exc)
    want = hashlib.sha256(DEFAULT_CHECKPOINT.read_bytes()).hexdigest()
    if manifest.model.get("checkpoint", {}).get("sha256") != want:
        return False, "made from a different checkpoint than the packaged default"
    for fmt in formats:
        for prec in precisions:
            art = manifest.find(fmt, prec)
            if art is None or not art.file.exists():
                return False, f"{fmt}/{prec} missing"
    return True, ""


def edgeseg(*args: str) -> int:
    """Run ``edgeseg ARGS...`` (this interpreter's CLI) from the repository root; its exit code."""
    print("+ edgeseg " + " ".join(args), flush=True)
    return subprocess.call(EDGESEG + list(args), cwd=ROOT)


def warn_if_other_machine(baseline: Path, bench_json: Path) -> None:
    """Baselines hold for one machine type; say so when this run's host differs from the baseline's."""
    try:
        old, new = (json.loads(p.read_text())["host"] for p in (baseline, bench_json))
    except (OSError, ValueError, KeyError):
        return
    if (old.get("cpu"), old.get("cores")) != (new.get("cpu"), new.get("cores")):
        print(f"note: baseline {baseline} was recorded on {old.get('cpu')} x{old.get('cores')}, this run on "
              f"{new.get('cpu')} x{new.get('cores')}: the comparison is not meaningful", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(DEFAULT_CONFIG))
    ap.add_argument("--update-baseline", action="store_true", help="write this run to the baseline instead of gating")
    args = ap.parse_args()
    cfg = load_config(Path(args.config))
    config_arg = "" if Path(args.config).resolve() == DEFAULT_CONFIG else f" --config {args.config}"
    exp, bench = cfg["export"], cfg["bench"]
    export_dir, baseline = ROOT / exp["dir"], ROOT / bench["baseline"]

    if not args.update_baseline and not baseline.is_file():
        print(f"no baseline for this machine type yet: {bench['baseline']}\n"
              f"create it on this machine type with:  python benchmarks/run_bench.py{config_arg} --update-baseline\n"
              f"and commit it.", file=sys.stderr)
        return 2

    current, why = export_is_current(export_dir, exp["formats"], exp["precisions"])
    if current:
        print(f"re-using export {exp['dir']} (packaged checkpoint, all files present)")
    else:
        print(f"exporting to {exp['dir']} ({why})")
        rc = edgeseg("export", "--out", exp["dir"], "--formats", ",".join(exp["formats"]),
                     "--precisions", ",".join(exp["precisions"]), "--calib-count", str(exp["calib_count"]),
                     "--parity-images", str(exp["parity_images"]), "--stress", exp.get("stress", "gate"))
        if rc != 0:
            return rc

    bench_args = ["bench", exp["dir"], "--threads", ",".join(map(str, bench["threads"])), "--runs", str(bench["runs"]), "--sessions", str(bench.get("sessions", 3)),
                  "--warmup", str(bench["warmup"]), "--parity-images", str(bench["parity_images"]),
                  "--json", bench["json"], "--report", bench["report_dir"], "--baseline", bench["baseline"],
                  "--max-slowdown", str(bench["max_slowdown"])]
    if bench.get("gate_threads"):
        bench_args += ["--gate-threads", ",".join(map(str, bench["gate_threads"]))]
    if args.update_baseline:
        baseline.parent.mkdir(parents=True, exist_ok=True)
        bench_args.append("--update-baseline")
    rc = edgeseg(*bench_args)
    if not args.update_baseline:
        warn_if_other_machine(baseline, ROOT / bench["json"])
    return rc


if __name__ == "__main__":
    sys.exit(main())

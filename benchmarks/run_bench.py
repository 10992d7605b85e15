"""``make bench``: export the packaged default model and gate its latency and parity.

Reads ``benchmarks/config.yaml``, exports the default model into the configured export
directory and those of ``export.also`` (each re-used when its manifest was made from the
packaged checkpoint and lists every configured file), then runs ``edgeseg bench`` on all of
them in one run, writing the JSON and the report and gating against the machine type's
baseline. Both steps run the real CLI in a subprocess, so this behaves exactly like typing the
commands. ``export.also`` exists because one ``edgeseg export`` takes one precision list for
all its formats: ExecuTorch (fp32, int8; no fp16) is exported beside the others, not with them.

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


SHARED_EXPORT_KEYS = ("calib_count", "parity_images", "stress")


def export_jobs(exp: dict) -> list[dict]:
    """The exports of the config's ``export`` section: the main one, then each of ``export.also`` (which
    takes ``calib_count``, ``parity_images`` and ``stress`` from the main one unless it sets its own)."""
    main = {k: v for k, v in exp.items() if k != "also"}
    jobs = [main] + [{**{k: main[k] for k in SHARED_EXPORT_KEYS if k in main}, **extra} for extra in exp.get("also") or []]
    dirs = [j["dir"] for j in jobs]
    if len(set(dirs)) != len(dirs):
        print(f"error: config export dirs repeat ({', '.join(dirs)}); give each export its own dir", file=sys.stderr)
        raise SystemExit(2)
    return jobs


def ensure_export(job: dict) -> int:
    """Export the packaged model as ``job`` says, unless its dir already holds that export; the exit code."""
    current, why = export_is_current(ROOT / job["dir"], job["formats"], job["precisions"])
    if current:
        print(f"re-using export {job['dir']} (packaged checkpoint, all files present)")
        return 0
    print(f"exporting to {job['dir']} ({why})")
    from edgeseg.export.pipeline import calibrated_exporters, load_exporters

    # --calib-count only where a file is calibrated on images: export refuses an option it would leave unused
    calibrates = calibrated_exporters(load_exporters(job["formats"], job["precisions"]), job["precisions"])
    calib = ("--calib-count", str(job["calib_count"])) if calibrates else ()
    return edgeseg("export", "--out", job["dir"], "--formats", ",".join(job["formats"]),
                   "--precisions", ",".join(job["precisions"]), *calib,
                   "--parity-images", str(job["parity_images"]), "--stress", job.get("stress", "gate"))


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
    jobs, baseline = export_jobs(exp), ROOT / bench["baseline"]

    if not args.update_baseline and not baseline.is_file():
        print(f"no baseline for this machine type yet: {bench['baseline']}\n"
              f"create it on this machine type with:  python benchmarks/run_bench.py{config_arg} --update-baseline\n"
              f"and commit it.", file=sys.stderr)
        return 2

    for job in jobs:
        rc = ensure_export(job)
        if rc != 0:
            return rc

    bench_args = ["bench", *(job["dir"] for job in jobs), "--threads", ",".join(map(str, bench["threads"])), "--runs", str(bench["runs"]), "--sessions", str(bench.get("sessions", 3)),
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

"""``edgeseg bench`` from parsed options to its outcome (layer 3).

The click command parses its options into ``BenchOptions`` and calls ``run_bench_command``, which
runs four steps: check everything that can be checked before any timing (``prepare_bench``), time
and check the files (``measure``), show and write the results (``publish``), gate on parity and
the baseline (``gate``). Lines go out through the caller's ``echo`` and JSON files through its
``write_json(path, doc)`` (a no-op for a path of None), so the CLI keeps its own output. A bad
option or input is an EdgesegError (exit 2), a failed gate a GateFailed (exit 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgeseg.bench import harness
from edgeseg.bench.gate import check_options, compare, load_baseline, over_limit, parity_failures, weights_note
from edgeseg.bench.report import COLUMNS, check_report_output, flicker_table, int8_summary, table_rows, write_report
from edgeseg.bench.temporal import check_clips, clip_flicker
from edgeseg.errors import EdgesegError, GateFailed
from edgeseg.fsutil import check_json_output
from edgeseg.ui import print_table

Echo = Callable[[str], None]
WriteJson = Callable[[str | None, dict], None]


@dataclass(frozen=True)
class BenchOptions:
    """``edgeseg bench``'s options as click parsed them (field names are the click parameter names)."""

    paths: tuple[str, ...]
    data_dir: str | None
    threads: tuple[int, ...]
    runs: int
    warmup: int
    sessions: int
    parity_images: int | None
    json_out: str | None
    report_dir: str | None
    baseline: str | None
    max_slowdown: float
    update_baseline: bool
    gate_threads: tuple[int, ...] | None
    confirm: bool
    device: str
    benchmark_binary: str | None
    use_gpu: bool
    slices_file: str | None
    clips_dir: str | None = None


@dataclass
class BenchSetup:
    """What ``prepare_bench`` checked: the plan, the thread counts whose latency is gated (None: all) and
    the baseline to gate against (None without ``--baseline`` or with ``--update-baseline``)."""

    plan: harness.BenchPlan
    gated: frozenset[int] | None
    old: dict | None
    clips: list | None = None  # --clips, opened and checked against the model's classes


def run_bench_command(opts: BenchOptions, *, echo: Echo, write_json: WriteJson) -> None:
    """Run ``edgeseg bench``: checks before any timing, timing and parity, table, JSON, report, gate."""
    setup = prepare_bench(opts)
    doc, outcome = measure(opts, setup, echo)
    publish(opts, doc, outcome, echo, write_json)
    gate(opts, setup, doc, echo, write_json)


def _check_modes(opts: BenchOptions) -> None:
    """Refuse ``--update-baseline`` without a file and a device that is not host or android with a binary."""
    if opts.update_baseline and not opts.baseline:
        raise EdgesegError("--update-baseline needs --baseline FILE (where to write it)")
    if opts.device != "host" and not opts.device.startswith("android"):
        raise EdgesegError(f"--device must be host or android[:SERIAL], got {opts.device!r}")
    if opts.device != "host" and not opts.benchmark_binary:
        raise EdgesegError("--device android needs --benchmark-binary PATH (TFLite's benchmark_model for the phone)")
    if opts.device != "host" and opts.clips_dir:
        raise EdgesegError("--clips measures flicker by running the files on this host; drop --device, or --clips")


def _check_outputs(opts: BenchOptions) -> None:
    """Refuse output locations that cannot be written (``--json``, the baseline to update, ``--report``) or that
    hold a file of an output's name that edgeseg did not write."""
    for out, what in ((opts.json_out, "--json"), (opts.baseline if opts.update_baseline else None, "--baseline")):
        if out:
            check_json_output(out, what=what)
    if opts.report_dir:
        check_report_output(opts.report_dir)


def prepare_bench(opts: BenchOptions) -> BenchSetup:
    """Check the options, output locations, every file (``plan_bench``) and the baseline; nothing is timed."""
    _check_modes(opts)
    req = harness.BenchRequest(tuple(opts.paths), opts.data_dir, opts.threads, opts.runs, opts.warmup,
                               sessions=opts.sessions, parity_images=opts.parity_images, slices_file=opts.slices_file)
    gated = check_options(opts.threads, opts.gate_threads, opts.max_slowdown)
    _check_outputs(opts)
    plan = harness.plan_bench(req)
    old = None
    if opts.baseline and not opts.update_baseline:
        old = load_baseline(opts.baseline, model=plan.model, threads=opts.threads, latency_threads=gated)
    clips = check_clips(opts.clips_dir, plan.pairs[0][0].model) if opts.clips_dir else None
    return BenchSetup(plan, gated, old, clips)


def _echo_result(r: dict, echo: Echo) -> None:
    timing = f"{r['latency_ms']['p50']:.2f} ms" if "latency_ms" in r else r.get("skipped") or r.get("latency_skipped", "")
    echo(f"  {r['artifact']} x{r['threads']}: {timing}")


def _retimer(old: dict, max_slowdown: float, gated, echo: Echo):
    """``run_bench``'s ``recheck``: the results over the baseline's limit, each announced as it is re-timed."""
    def recheck(results: list[dict]) -> list[dict]:
        over = over_limit(old, results, max_slowdown, gated)
        for r in over:
            echo(f"  re-timing {r['artifact']} x{r['threads']} (over {max_slowdown:.2f}x the baseline)")
        return over
    return recheck


def measure(opts: BenchOptions, setup: BenchSetup, echo: Echo) -> tuple[dict, harness.BenchOutcome | None]:
    """Time and check every file: on this host, echoing each result (and with ``--confirm`` and a baseline,
    re-timing those over its limit), or on an Android phone. (bench JSON, host outcome or None)."""
    if opts.device != "host":
        doc = harness.run_android(setup.plan, serial=opts.device.partition(":")[2] or None,
                                  binary=opts.benchmark_binary, use_gpu=opts.use_gpu)
        return doc, None
    recheck = None
    if setup.old is not None and opts.confirm:
        recheck = _retimer(setup.old, opts.max_slowdown, setup.gated, echo)
    outcome = harness.run_bench(setup.plan, on_result=lambda r: _echo_result(r, echo), recheck=recheck)
    if setup.clips is not None:
        outcome.doc["temporal"] = _flicker(opts, setup)
    return outcome.doc, outcome


def _flicker(opts: BenchOptions, setup: BenchSetup) -> dict:
    """``--clips``: every file's (and the PyTorch model's, when here) flicker, raw and smoothed."""
    plan, model = setup.plan, setup.plan.pairs[0][0].model
    targets = harness.bench_targets(plan.pairs, plan.checkpoint)
    size = (model["input"]["height"], model["input"]["width"])
    return clip_flicker(targets, setup.clips, opts.clips_dir, size, model["classes"], opts.threads[0])


def publish(opts: BenchOptions, doc: dict, outcome: harness.BenchOutcome | None, echo: Echo,
            write_json: WriteJson) -> None:
    """Print the results table and int8 summary, write ``--json`` and the ``--report`` folder."""
    print_table("bench", COLUMNS, table_rows(doc))
    summary = int8_summary(doc)
    if summary:
        echo(summary)
    flicker = flicker_table(doc)
    if flicker:
        print_table(*flicker)
    write_json(opts.json_out, doc)
    if opts.report_dir:
        write_report(doc, opts.report_dir, None if outcome is None or outcome.sample_images is None
                     else (outcome.sample_images, outcome.sample_preds))
        echo(f"report: {Path(opts.report_dir) / 'report.md'}")


def gate(opts: BenchOptions, setup: BenchSetup, doc: dict, echo: Echo, write_json: WriteJson) -> None:
    """GateFailed on a parity failure; then write the baseline (``--update-baseline``) or gate against it."""
    failures = parity_failures(doc["results"])
    if failures:
        raise GateFailed("; ".join(failures) + (" (baseline not written)" if opts.update_baseline else ""))
    if opts.baseline and opts.update_baseline:
        write_json(opts.baseline, doc)
        echo(f"baseline updated: {opts.baseline}")
    elif opts.baseline:
        note = weights_note(setup.old["model"], doc["model"])
        if note:
            echo(note)
        result = compare(setup.old, doc, opts.max_slowdown, setup.gated)
        print_table(f"gate vs {opts.baseline} (max slowdown {opts.max_slowdown:.2f}x, normalized p50)",
                    ["result", "old", "new", "ratio", "re-timed", "agreement", "status"],
                    [[r["key"], r["old"], r["new"], r["ratio"], r["retimed_ratio"], r.get("agreement"), r["status"]]
                     for r in result.rows])
        if not result.passed:
            raise GateFailed("; ".join(result.failures))
        echo("gate passed")

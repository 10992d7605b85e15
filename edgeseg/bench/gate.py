"""The CI gate: compare a bench run with a committed baseline (layer 3).

Results match by (format, precision, runtime, threads). The gate fails when a matching
result's normalized p50 grew by more than ``max_slowdown``, when parity failed, and when a row
cannot be checked: a baseline result missing from the run, a run result missing from the
baseline, a timing or parity check the baseline has and the run lacks, a file whose parity could
not be checked (``unchecked``: no usable stored reference) or that its runtime could not run.
Results of runtimes that are not timed (``latency_skipped``, e.g. the Core ML reference runner off
macOS) are gated on parity only. The PyTorch reference rows (``format`` pytorch) need the
checkpoint, which an export directory copied elsewhere may lack: their latency is gated when both
runs timed them, and a run or baseline without them is shown (``not timed``), not failed.

Everything that can be known before timing is checked before timing (``check_options``,
``load_baseline``): a limit that is not a finite ratio above 1, gate threads the run does not
time, a baseline of another model or schema, malformed baseline rows.

A result over the limit may carry a ``confirmation`` (``edgeseg bench`` re-times it with fresh
loads before gating, ``--confirm``): it is SLOWER only when the re-timing is over the limit too.
A real slowdown shows in both timings; a burst of load on a shared machine rarely does.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.errors import EdgesegError

SCHEMA_VERSION = 2  # of the bench JSON; 2 added ``model``, the benchmarked model's identity
RERECORD = "re-record the baseline with --update-baseline"


def result_key(r: dict) -> tuple:
    return (r["format"], r["precision"], r.get("runtime", r["format"]), int(r["threads"]))


def key_label(k: tuple) -> str:
    return f"{k[0]}/{k[1]}/{k[2]}/{k[3]}t"


def is_positive_number(v) -> bool:
    """True for a finite number above 0 (not a bool, not NaN)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


@dataclass
class GateResult:
    rows: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def check_limit(max_slowdown: float) -> float:
    """``max_slowdown`` when it is a finite ratio above 1; EdgesegError otherwise."""
    if not (is_positive_number(max_slowdown) and max_slowdown > 1.0):
        raise EdgesegError(f"--max-slowdown must be a finite ratio above 1 (e.g. 1.15), got {max_slowdown}")
    return float(max_slowdown)


def check_options(threads, gate_threads, max_slowdown: float) -> frozenset[int] | None:
    """The thread counts whose latency is gated (None: all), after refusing a limit that is not a
    finite ratio above 1 and ``--gate-threads`` values that ``--threads`` does not time."""
    check_limit(max_slowdown)
    if not gate_threads:
        return None
    extra = sorted(set(gate_threads) - set(threads))
    if extra:
        raise EdgesegError(f"--gate-threads {','.join(map(str, extra))} not in --threads {','.join(map(str, threads))}; "
                           "gate only thread counts this run times")
    return frozenset(gate_threads)


def load_bench_json(path: str | Path) -> dict:
    """Read a bench JSON file; EdgesegError naming it if it is missing or has no results list."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgesegError(f"baseline not found: {path} (create one with --update-baseline)") from None
    except OSError as exc:
        raise EdgesegError(f"{path}: cannot read it ({exc.strerror}); give a readable bench JSON file") from None
    except ValueError as exc:  # bad JSON or UTF-8
        raise EdgesegError(f"{path}: not an edgeseg bench JSON ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise EdgesegError(f"{path}: not an edgeseg bench JSON (no results list)")
    return doc


def is_reference_row(r: dict) -> bool:
    """True for a PyTorch reference result (timed only where the checkpoint is)."""
    return r.get("format") == "pytorch"


def row_problem(r) -> str:
    """Why a baseline result cannot be gated against ('' when it can; a skipped PyTorch reference row is fine)."""
    if not isinstance(r, dict):
        return "is not an object"
    for name in ("format", "precision"):
        if not isinstance(r.get(name), str):
            return f"has no {name}"
    if type(r.get("threads")) is not int or r["threads"] < 1:
        return "has no thread count"
    if not isinstance(r.get("runtime", ""), str):
        return "has a runtime that is not a string"
    if "skipped" in r:
        return "" if is_reference_row(r) else f"was skipped when the baseline was recorded ({r['skipped']})"
    if "normalized_p50" in r and not is_positive_number(r["normalized_p50"]):
        return f"has normalized_p50 {r['normalized_p50']!r}, not a positive number"
    if "normalized_p50" not in r and "latency_skipped" not in r:
        return "has neither normalized_p50 nor latency_skipped"
    if not isinstance(r.get("parity", {}), dict):
        return "has a parity that is not an object"
    return ""


def check_baseline(doc: dict, path: str | Path, *, model: dict, threads, latency_threads=None) -> dict:
    """``doc`` when this run can be gated against it; EdgesegError naming ``path`` and the fix otherwise.

    Refused: another ``schema_version``; no model identity, or another model of another network
    (``model["sha256"]`` and ``model["network"]``, see ``same_network``); a
    malformed, skipped or repeated result; thread counts other than ``threads``; a gated thread
    count (``latency_threads``) with no timed result; no results at all.
    """
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise EdgesegError(f"{path}: schema_version {doc.get('schema_version')!r}, this edgeseg reads {SCHEMA_VERSION}; "
                           f"{RERECORD}")
    old = doc.get("model")
    if not isinstance(old, dict) or not isinstance(old.get("sha256"), str):
        raise EdgesegError(f"{path}: records no model identity; {RERECORD}")
    if old["sha256"] != model["sha256"] and not same_network(old, model):
        what = "another network (architecture, options, input, classes or normalization)" if old.get("network") else \
            "another model"
        raise EdgesegError(f"{path}: a baseline of {what}: {old.get('name')!r} (sha256 {old['sha256'][:12]}...), this run "
                           f"benchmarks {model.get('name')!r} (sha256 {model['sha256'][:12]}...); gate against a baseline "
                           f"of the same network, or {RERECORD}")
    seen = set()
    for i, r in enumerate(doc["results"]):
        problem = row_problem(r) or ("repeats an earlier result" if result_key(r) in seen else "")
        if problem:
            raise EdgesegError(f"{path}: result {i} {problem}; {RERECORD}")
        seen.add(result_key(r))
    if not seen:
        raise EdgesegError(f"{path}: no results to gate against; {RERECORD}")
    recorded = sorted({k[3] for k in seen})
    if set(recorded) != set(threads):
        raise EdgesegError(f"{path}: recorded at --threads {','.join(map(str, recorded))}, this run times "
                           f"{','.join(map(str, threads))}; use the same --threads, or {RERECORD}")
    timed = {result_key(r)[3] for r in doc["results"] if "normalized_p50" in r}
    untimed = sorted(set(latency_threads or ()) - timed)
    if untimed:
        raise EdgesegError(f"--gate-threads {','.join(map(str, untimed))}: {path} has no timed result at that thread "
                           f"count; gate other thread counts, or {RERECORD}")
    return doc


def same_network(old: dict, model: dict) -> bool:
    """Whether two model identities (``Manifest.model_identity``) are one network, whatever its weights: a
    retrained checkpoint is gated on latency against the baseline of the one before (a dense network's speed
    does not depend on its weights' values); parity is each run's own, against its own PyTorch model."""
    return isinstance(old.get("network"), str) and old["network"] == model.get("network")


def weights_note(old: dict, model: dict) -> str:
    """A line for a gate whose baseline was recorded from other weights of the same network ('' otherwise)."""
    if old.get("sha256") == model.get("sha256"):
        return ""
    return (f"note: the baseline was recorded from other weights of this network (checkpoint sha256 "
            f"{str(old.get('sha256'))[:12]}..., this run {str(model.get('sha256'))[:12]}...): latency is compared, "
            "parity is this run's own")


def load_baseline(path: str | Path, *, model: dict, threads, latency_threads=None) -> dict:
    """Read a baseline and check this run can be gated against it (``check_baseline``)."""
    return check_baseline(load_bench_json(path), path, model=model, threads=threads, latency_threads=latency_threads)


def compare(baseline: dict, current: dict, max_slowdown: float, latency_threads=None) -> GateResult:
    """Old/new/ratio rows for every baseline and every current result, and the reasons the gate fails.

    ``latency_threads`` (a set of thread counts, None = all) limits the latency check to those
    results; the others still show their ratio (status ``info``) and are gated on parity.
    Each row's ``result`` is the matching result of ``current`` (None when missing).
    """
    check_limit(max_slowdown)
    now = {result_key(r): r for r in current["results"] if "skipped" not in r}
    out = GateResult()
    for old in baseline["results"]:
        if "skipped" in old:  # nothing to gate against (check_baseline refuses such baselines)
            continue
        k = result_key(old)
        gated = latency_threads is None or k[3] in latency_threads
        row, failures = gate_row(key_label(k), old, now.pop(k, None), max_slowdown, gated)
        out.rows.append(row)
        out.failures += failures
    for k, new in now.items():
        reference = is_reference_row(new)
        out.rows.append({"key": key_label(k), "old": None, "new": new.get("normalized_p50"), "ratio": None,
                         "retimed_ratio": None, "agreement": (new.get("parity") or {}).get("agreement_miou"),
                         "status": "not in baseline" if reference else "NEW", "result": new})
        if not reference:
            out.failures.append(f"{key_label(k)}: in this run but not in the baseline; {RERECORD}")
    return out


def parity_problem(parity: dict) -> str:
    """Why a result's parity block does not pass ('' when it passed): below threshold, the runtime could not
    run the file, or parity could not be checked (a block that is neither passed nor failed never passes)."""
    if parity.get("passed") is True:
        return ""
    if "error" in parity:
        return f"parity failed: {parity.get('runtime')} cannot run it ({parity['error']})"
    if parity.get("passed") is False:
        return "; ".join(_failed_checks(parity)) or "parity failed"
    return f"parity not checked: {parity.get('unchecked') or parity.get('skipped') or 'no parity numbers'}"


def _failed_checks(parity: dict) -> list[str]:
    """Which of a failed parity block's checks failed: agreement, GT mIoU drop, gated stress agreement."""
    why = []
    if parity.get("agreement_miou") is not None and parity["agreement_miou"] < parity.get("threshold", 0):
        why.append(f"parity agreement {parity['agreement_miou']} below {parity['threshold']}")
    gt, ref_gt, limit = parity.get("gt_miou"), parity.get("reference_gt_miou"), parity.get("max_gt_drop_points")
    if None not in (gt, ref_gt, limit) and (ref_gt - gt) * 100 > limit:
        why.append(f"GT mIoU {(ref_gt - gt) * 100:.2f} points below PyTorch's (at most {limit})")
    stress = parity.get("stress") or {}
    if stress.get("gated") and stress.get("passed") is False:
        why.append(f"stress agreement {stress.get('agreement_miou')} below {stress.get('threshold')}")
    return why


def parity_failures(results: list[dict]) -> list[str]:
    """The parity gate of one bench run: one line per reason, naming the files (each once, whatever its
    thread counts). Every result with a parity block is judged (``parity_problem``); phone results carry none."""
    by_reason: dict[str, list[str]] = {}
    for r in results:
        problem = parity_problem(r["parity"]) if "parity" in r else ""
        if problem and r["artifact"] not in by_reason.setdefault(problem, []):
            by_reason[problem].append(r["artifact"])
    return [f"{', '.join(names)}: {problem}" for problem, names in by_reason.items()]


def gate_row(label: str, old: dict, new: dict | None, max_slowdown: float, gated: bool) -> tuple[dict, list[str]]:
    """One gate row (old, new, ratio, re-timed ratio, agreement, status) and why it fails, if it does.

    A check the baseline has and ``new`` cannot answer (no timing, no parity, no result) fails.
    """
    row = {"key": label, "old": old.get("normalized_p50"), "new": None, "ratio": None, "retimed_ratio": None,
           "agreement": None, "status": "ok", "result": new}
    if new is None and is_reference_row(old):
        return {**row, "status": "not timed"}, []  # its checkpoint is not here: parity never needs it
    if new is None:
        return {**row, "status": "MISSING"}, [f"{label}: in the baseline but not in this run"]
    parity = new.get("parity") or {}
    row.update(new=new.get("normalized_p50"), agreement=parity.get("agreement_miou"))
    failures = []
    if "normalized_p50" in old:  # untimed runtimes (latency_skipped) are gated on parity only
        if not (is_positive_number(old["normalized_p50"]) and is_positive_number(new.get("normalized_p50"))):
            why = new.get("latency_skipped") or f"normalized p50 {old['normalized_p50']!r} -> {new.get('normalized_p50')!r}"
            row["status"] = "UNCHECKED"
            failures.append(f"{label}: latency cannot be compared ({why})")
        else:
            row["ratio"] = ratio = round(new["normalized_p50"] / old["normalized_p50"], 3)
            if "confirmation" in new:
                row["retimed_ratio"] = round(new["confirmation"]["normalized_p50"] / old["normalized_p50"], 3)
            retimed = row["retimed_ratio"]
            if not gated:
                row["status"] = "info"
            elif ratio > max_slowdown and retimed is not None and retimed <= max_slowdown:
                row["status"] = "ok (re-timed)"
            elif ratio > max_slowdown:
                row["status"] = "SLOWER"
                again = "" if retimed is None else f", re-timed {retimed:.2f}x"
                failures.append(f"{label}: normalized p50 {ratio:.2f}x the baseline{again} (limit {max_slowdown:.2f}x)")
    if parity and parity_problem(parity):
        row["status"] = "PARITY" if parity.get("passed") is False else "UNCHECKED"
        failures.append(f"{label}: {parity_problem(parity)}")
    elif old.get("parity") and not parity:
        row["status"] = "UNCHECKED"
        failures.append(f"{label}: parity was checked in the baseline but not in this run (no PyTorch reference: "
                        "is the checkpoint recorded in the manifest still there, unchanged?)")
    return row, failures


def over_limit(baseline: dict, results: list[dict], max_slowdown: float, latency_threads=None) -> list[dict]:
    """The results whose latency the gate would fail (what ``edgeseg bench --confirm`` re-times)."""
    gate = compare(baseline, {"results": results}, max_slowdown, latency_threads)
    return [row["result"] for row in gate.rows if row["status"] == "SLOWER"]

"""The CI gate: compare a bench run with a committed baseline (layer 3).

Results match by (format, precision, runtime, threads). The gate fails when a matching
result's normalized p50 grew by more than ``max_slowdown``, when parity failed, or when an
artifact in the baseline is missing from the run. Results of runtimes that are not timed
(``latency_skipped``, e.g. the Core ML reference runner off macOS) are gated on parity only.

A result over the limit may carry a ``confirmation`` (``edgeseg bench`` re-times it with fresh
loads before gating, ``--confirm``): it is SLOWER only when the re-timing is over the limit too.
A real slowdown shows in both timings; a burst of load on a shared machine rarely does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.errors import EdgesegError


def result_key(r: dict) -> tuple:
    return (r["format"], r["precision"], r.get("runtime", r["format"]), int(r["threads"]))


@dataclass
class GateResult:
    rows: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def load_bench_json(path: str | Path) -> dict:
    """Read a bench JSON file; EdgesegError naming it if it is missing or malformed."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        doc["results"]  # noqa: B018 - presence check
        return doc
    except FileNotFoundError:
        raise EdgesegError(f"baseline not found: {path} (create one with --update-baseline)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise EdgesegError(f"{path}: not an edgeseg bench JSON ({exc.__class__.__name__})") from None


def compare(baseline: dict, current: dict, max_slowdown: float, latency_threads=None) -> GateResult:
    """Old/new/ratio rows for every baseline result, and the reasons the gate fails (if any).

    ``latency_threads`` (a set of thread counts, None = all) limits the latency check to those
    results; the others still show their ratio (status ``info``) and are gated on parity.
    Each row's ``result`` is the matching result of ``current`` (None when missing).
    """
    if max_slowdown <= 1.0:
        raise EdgesegError(f"--max-slowdown must be > 1.0 (a ratio, e.g. 1.15), got {max_slowdown}")
    now = {result_key(r): r for r in current["results"] if "skipped" not in r}
    out = GateResult()
    for old in baseline["results"]:
        if "skipped" in old:
            continue
        k = result_key(old)
        label = f"{k[0]}/{k[1]}/{k[2]}/{k[3]}t"
        new = now.get(k)
        if new is None:
            out.rows.append({"key": label, "old": old.get("normalized_p50"), "new": None, "ratio": None,
                             "retimed_ratio": None, "status": "MISSING", "result": None})
            out.failures.append(f"{label}: in the baseline but not in this run")
            continue
        ratio, retimed, status = None, None, "ok"
        if "normalized_p50" in old and "normalized_p50" in new:  # untimed runtimes are gated on parity only
            ratio = round(new["normalized_p50"] / old["normalized_p50"], 3)
            if "confirmation" in new:
                retimed = round(new["confirmation"]["normalized_p50"] / old["normalized_p50"], 3)
            if latency_threads is not None and k[3] not in latency_threads:
                status = "info"
            elif ratio > max_slowdown and retimed is not None and retimed <= max_slowdown:
                status = "ok (re-timed)"
            elif ratio > max_slowdown:
                status = "SLOWER"
                again = "" if retimed is None else f", re-timed {retimed:.2f}x"
                out.failures.append(f"{label}: normalized p50 {ratio:.2f}x the baseline{again} (limit {max_slowdown:.2f}x)")
        parity = new.get("parity") or {}
        if parity.get("passed") is False:
            status = "PARITY"
            out.failures.append(f"{label}: parity agreement {parity.get('agreement_miou')} below {parity.get('threshold')}")
        out.rows.append({"key": label, "old": old.get("normalized_p50"), "new": new.get("normalized_p50"), "ratio": ratio,
                         "retimed_ratio": retimed, "agreement": parity.get("agreement_miou"), "status": status,
                         "result": new})
    return out


def over_limit(baseline: dict, results: list[dict], max_slowdown: float, latency_threads=None) -> list[dict]:
    """The results whose latency the gate would fail (what ``edgeseg bench --confirm`` re-times)."""
    gate = compare(baseline, {"results": results}, max_slowdown, latency_threads)
    return [row["result"] for row in gate.rows if row["status"] == "SLOWER"]

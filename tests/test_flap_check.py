"""benchmarks/flap_check.py's false-alarm arithmetic, with and without the gate's re-timing."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from flap_check import false_alarms  # noqa: E402


def test_false_alarm_rates_count_pairs_and_confirmed_triples():
    # baseline 1.0, then 1.2 twice (over 1.15x), then 1.0: pairs over the limit are (0,1) and (0,2);
    # with re-timing only the triple (0,1,2) fails, where both the run and its re-timing are over.
    res = false_alarms({"a": [1.0, 1.2, 1.2, 1.0], "b": [1.0, 1.0, 1.0, 1.0]}, 1.15)
    assert res["pairs"] == 6 and res["gate_false_alarm_rate"] == pytest.approx(2 / 6)
    assert res["triples"] == 4 and res["confirmed_gate_false_alarm_rate"] == pytest.approx(1 / 4)
    assert res["per_artifact"]["b"]["false_alarm_rate"] == 0 and res["per_artifact"]["a"]["max_ratio"] == pytest.approx(1.2)


def test_one_artifact_over_in_the_run_and_another_in_the_re_timing_is_not_a_confirmed_failure():
    # the gate re-times each result on its own: a result must be over the limit twice
    res = false_alarms({"a": [1.0, 1.3, 1.0], "b": [1.0, 1.0, 1.3]}, 1.15)
    assert res["gate_false_alarm_rate"] == 1.0  # (0,1) for a; (0,2) and (1,2) for b
    assert res["confirmed_gate_false_alarm_rate"] == 0

"""Benchmark a TFLite model on an Android phone with TensorFlow Lite's ``benchmark_model`` (layer 2).

``benchmark_model`` is the C++ tool from ``tensorflow/lite/tools/benchmark``. It is pushed to the phone
with adb together with the model, run there, and its output (stdout/stderr, or the same lines taken
from logcat) is parsed into one result dict. The parser accepts the output of TF 2.3 through
LiteRT (older logs lack the ``INFO:`` prefixes, the p5/median/p95 fields and the memory lines).

No phone is needed to use :func:`parse_benchmark_output` or :func:`build_commands`; only
:func:`check_adb` and :func:`run_on_device` talk to a device.
"""
from __future__ import annotations

import posixpath
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from edgeseg.errors import EdgesegError

DEFAULT_REMOTE_DIR = "/data/local/tmp/edgeseg"

_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"

# Header comments of our fixtures/saved logs: "# ..." lines at the very top. ("#threads used for
# CPU inference: [4]" is a real benchmark_model line, so only "# " and a bare "#" count.)
_HEADER_COMMENT = re.compile(r"^#(?: |$)")
# Prefixes that wrap the tool's own text: logcat (threadtime, Android Studio, brief) and severity tags.
_LINE_PREFIXES = (
    re.compile(r"^\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d+\s+\d+\s+\d+\s+[VDIWEF]\s+[^:]*?\s*:\s?"),
    re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d+\s+\d+-\d+\s+\S+\s+\S+\s+[VDIWEF]\s+"),
    re.compile(r"^[VDIWEF]/[^(:]+\(\s*\d+\):\s?"),
    re.compile(r"^(?:INFO|VERBOSE|WARNING|ERROR|DEBUG): "),
)

_SESSION = re.compile(rf"^Initialized session in ({_NUM})\s*ms")
_TIMINGS = re.compile(
    rf"^Inference timings in us: Init: ({_NUM}),+\s*First inference: ({_NUM}),+\s*"
    rf"Warmup \(avg\): ({_NUM}),+\s*Inference \(avg\): ({_NUM})"
)
_STATS_LINE = re.compile(r"^count=\d+")
_STATS_FIELD = re.compile(rf"(\w+)=({_NUM})")
_MEMORY_DELTA = re.compile(
    rf"^(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
    rf"init=({_NUM}) overall=({_NUM})"
)
_MEMORY_PEAK = re.compile(rf"^Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})")
_PARAM = re.compile(
    r"^(Num threads|#threads used for CPU inference|Graph|Use gpu|Use xnnpack|Use nnapi|"
    r"Min num runs|Min warmup runs)\s*:\s*\[(.*)\]\s*$",
    re.IGNORECASE,
)
_DELEGATE_CREATED = re.compile(r"^Created TensorFlow Lite (?:(\w+) delegate for \w+|delegate for (\w+))")
_DELEGATE_APPLIED = re.compile(
    r"^(?:Explicitly applied|Applied) (\w+) delegate"
    r"(?:, and the model graph will be (completely|partially) executed)?"
)
_DELEGATE_REPLACING = re.compile(
    r"Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \((\w+)\) node, yielding (\d+) partitions"
)
_DELEGATE_KERNELS = re.compile(r"^Created (\d+) GPU delegate kernels")
_ERROR_LIKE = re.compile(
    r"error|fail|abort|segmentation fault|not found|no such file|cannot link|permission denied|"
    r"unsupported",
    re.IGNORECASE,
)

# Delegate kernel class names in "Replacing ... with delegate (X)" -> the names the rest of the log uses.
_DELEGATE_CLASSES = {
    "TfLiteXNNPackDelegate": "XNNPACK",
    "TfLiteGpuDelegateV2": "GPU",
    "TfLiteGpuDelegate": "GPU",
    "TfLiteNnapiDelegate": "NNAPI",
    "TfLiteHexagonDelegate": "HEXAGON",
}
# "Use gpu: [1]" label (lower-cased) -> params key.
_PARAM_KEYS = {
    "num threads": "num_threads",
    "#threads used for cpu inference": "num_threads",
    "graph": "graph",
    "use gpu": "use_gpu",
    "use xnnpack": "use_xnnpack",
    "use nnapi": "use_nnapi",
    "min num runs": "num_runs",
    "min warmup runs": "warmup_runs",
}

_ADB_HINT = ("install Android platform-tools (apt-get install adb, or "
             "https://developer.android.com/tools/releases/platform-tools) and connect a phone "
             "with USB debugging enabled")


# --------------------------------------------------------------------------- parsing

def _strip_prefixes(line: str) -> str:
    for prefix in _LINE_PREFIXES:
        line = prefix.sub("", line, count=1)
    return line.strip()


def _clean_lines(text: str) -> list[str]:
    """The tool's own lines: header comments dropped, logcat and severity prefixes stripped."""
    lines = text.splitlines()
    while lines and _HEADER_COMMENT.match(lines[0]):
        lines.pop(0)
    return [_strip_prefixes(line) for line in lines]


def _first_match(pattern: re.Pattern, lines: list[str]) -> re.Match | None:
    return next((m for m in map(pattern.match, lines) if m), None)


def _us_to_ms(value: str | float) -> float:
    return float(value) / 1000.0


def _run_stats(lines: list[str]) -> dict[str, float]:
    """Fields of the last ``count=... avg=... std=...`` line: the measured runs (earlier ones are warmup)."""
    stats_lines = [line for line in lines if _STATS_LINE.match(line)]
    if not stats_lines:
        return {}
    return {key: float(value) for key, value in _STATS_FIELD.findall(stats_lines[-1])}


def _stat_ms(stats: dict[str, float], key: str) -> float | None:
    return _us_to_ms(stats[key]) if key in stats else None


def _latency(timings: re.Match, stats: dict[str, float]) -> dict[str, float | None]:
    """Latency summary in ms; mean comes from ``Inference (avg)``, spread from the run statistics.

    p5/p95 are present only when the log prints them (newer versions); p50 falls back to the mean.
    """
    mean = _us_to_ms(timings.group(4))
    median = _stat_ms(stats, "median")
    latency = {
        "mean": mean,
        "min": _stat_ms(stats, "min"),
        "max": _stat_ms(stats, "max"),
        "std": _stat_ms(stats, "std"),
        "p50": mean if median is None else median,
        "first": _us_to_ms(timings.group(2)),
        "warmup_mean": _us_to_ms(timings.group(3)),
    }
    latency.update({pct: _stat_ms(stats, pct) for pct in ("p5", "p95") if pct in stats})
    return latency


def _memory(lines: list[str]) -> dict[str, float | None]:
    """Memory lines in MB; ``peak`` is the periodic-monitoring peak, else the overall footprint."""
    delta = _first_match(_MEMORY_DELTA, lines)
    peak = _first_match(_MEMORY_PEAK, lines)
    init = float(delta.group(1)) if delta else None
    overall = float(delta.group(2)) if delta else None
    return {"init": init, "overall": overall, "peak": float(peak.group(1)) if peak else overall}


def _param_value(key: str, raw: str) -> str | int | bool:
    raw = raw.strip()
    if key.startswith("use_"):
        return raw.lower() in ("1", "true")
    if key == "graph":
        return raw
    try:
        return int(raw)
    except ValueError:
        return raw


def _params(lines: list[str]) -> dict:
    params: dict = {}
    for match in filter(None, map(_PARAM.match, lines)):
        key = _PARAM_KEYS[match.group(1).lower()]
        params.setdefault(key, _param_value(key, match.group(2)))
    return params


def _replaced_by(replacing: re.Match) -> str:
    """Delegate name of a ``Replacing ... with delegate (X)`` match (X's kernel class mapped to e.g. GPU)."""
    return _DELEGATE_CLASSES.get(replacing.group(3), replacing.group(3))


def _delegate_name(created: list[str], applied: re.Match | None, replacing: list[re.Match]) -> str | None:
    """The applied delegate, else the first created one that took nodes, else any that took or was created."""
    if applied:
        return applied.group(1)
    took = [_replaced_by(m) for m in replacing]
    return next((name for name in created if name in took), None) or next(iter(took + created), None)


def _delegate(lines: list[str]) -> dict:
    created = [m.group(1) or m.group(2) for m in filter(None, map(_DELEGATE_CREATED.match, lines))]
    applied = _first_match(_DELEGATE_APPLIED, lines)
    replacing = list(filter(None, map(_DELEGATE_REPLACING.search, lines)))
    kernels = _first_match(_DELEGATE_KERNELS, lines)
    name = _delegate_name(created, applied, replacing)
    replaced = next((m for m in replacing if _replaced_by(m) == name), None)
    return {
        "name": name,
        "created": created,
        "nodes_delegated": int(replaced.group(1)) if replaced else None,
        "nodes_total": int(replaced.group(2)) if replaced and replaced.group(2) else None,
        "partitions": int(replaced.group(4)) if replaced else None,
        "fully_delegated": (applied.group(2) == "completely") if applied and applied.group(2) else None,
        "gpu_kernels": int(kernels.group(1)) if kernels else None,
    }


def parse_params(text: str) -> dict:
    """The parameters ``benchmark_model`` echoes at the top (``Num threads: [4]``, ``Use gpu: [1]``...).

    Keys: num_threads, graph, use_gpu, use_xnnpack, use_nnapi, num_runs, warmup_runs. Recent versions
    echo only flags that differ from their defaults, so a key is absent when the log does not show it.
    """
    return _params(_clean_lines(text))


def parse_delegate(text: str) -> dict:
    """Which delegate ran the graph, and how much of it, from the TFLite delegate log lines.

    ``name`` (XNNPACK, GPU, NNAPI, ...) is the delegate that was applied (``Explicitly applied GPU
    delegate, ...``), else the first created one that took nodes (``Replacing N out of M node(s) with
    delegate (X) node, yielding K partitions``), else any named one; None when the log names none
    (plain CPU kernels, or an old log). Counts the log does not print are None.
    """
    return _delegate(_clean_lines(text))


def _shorten(line: str, limit: int = 200) -> str:
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _failure_hint(lines: list[str]) -> str:
    """``last error: <line>`` for the last error-looking line, else ``last line: <line>``."""
    meaningful = [line for line in lines if line]
    errors = [line for line in meaningful if _ERROR_LIKE.search(line)]
    if errors:
        return f"last error: {_shorten(errors[-1])}"
    return f"last line: {_shorten(meaningful[-1])}" if meaningful else "no output at all"


def parse_benchmark_output(text: str) -> dict:
    """Parse ``benchmark_model`` stdout (or its logcat lines) into a result dict.

    Returns ``{"latency_ms": {mean, min, max, std, p50, first, warmup_mean[, p5, p95]}, "runs",
    "init_ms", "peak_memory_mb", "memory_mb": {init, overall, peak}, "delegate": {...},
    "params": {...}}``. Times the tool prints in microseconds are converted to ms; a value the log
    does not print is None. ``p50`` is the printed median, else the mean.

    Raises EdgesegError (one line, quoting the last error-looking line) when the log has no
    ``Inference timings`` line, i.e. the tool failed or the log is truncated.
    """
    lines = _clean_lines(text)
    timings = _first_match(_TIMINGS, lines)
    if timings is None:
        raise EdgesegError(
            f"benchmark_model output has no inference timings (the run failed or the log is cut); "
            f"{_failure_hint(lines)}"
        )
    stats = _run_stats(lines)
    session = _first_match(_SESSION, lines)
    memory = _memory(lines)
    return {
        "latency_ms": _latency(timings, stats),
        "runs": int(stats["count"]) if "count" in stats else None,
        "init_ms": float(session.group(1)) if session else _us_to_ms(timings.group(1)),
        "peak_memory_mb": memory["peak"],
        "memory_mb": memory,
        "delegate": _delegate(lines),
        "params": _params(lines),
    }


# --------------------------------------------------------------------------- adb commands

def _adb(serial: str | None) -> list[str]:
    return ["adb", "-s", serial] if serial else ["adb"]


def _bool_flag(value: bool) -> str:
    return "true" if value else "false"


def _check_counts(threads: int, runs: int, warmup: int) -> None:
    if threads < 1 and threads != -1:
        raise EdgesegError(f"threads must be >= 1 (or -1 for the tool's default), got {threads}")
    if runs < 1:
        raise EdgesegError(f"runs must be >= 1, got {runs}")
    if warmup < 0:
        raise EdgesegError(f"warmup must be >= 0, got {warmup}")


def build_commands(*, model_path: str, binary_path: str, serial: str | None, threads: int,
                   use_gpu: bool, use_xnnpack: bool, runs: int, warmup: int,
                   remote_dir: str = DEFAULT_REMOTE_DIR) -> list[list[str]]:
    """The adb argv lists, in order: make the remote folder, push the binary and the model, chmod, run.

    Files keep their local names under ``remote_dir``. Words of the ``adb shell`` commands are
    shell-quoted (a no-op for ordinary paths), since adb joins them into one device shell line.
    """
    _check_counts(threads, runs, warmup)
    adb = _adb(serial)
    remote_bin = posixpath.join(remote_dir, Path(binary_path).name)
    remote_model = posixpath.join(remote_dir, Path(model_path).name)
    run = [
        remote_bin,
        f"--graph={remote_model}",
        f"--num_threads={threads}",
        f"--use_gpu={_bool_flag(use_gpu)}",
        f"--use_xnnpack={_bool_flag(use_xnnpack)}",
        f"--num_runs={runs}",
        f"--warmup_runs={warmup}",
    ]
    return [
        adb + ["shell", "mkdir", "-p", shlex.quote(remote_dir)],
        adb + ["push", str(binary_path), remote_bin],
        adb + ["push", str(model_path), remote_model],
        adb + ["shell", "chmod", "755", shlex.quote(remote_bin)],
        adb + ["shell"] + [shlex.quote(word) for word in run],
    ]


# --------------------------------------------------------------------------- device

def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _run(argv: list[str], timeout: float, *, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``argv``; a timeout, a missing program or (with ``check``) a failure is an EdgesegError."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EdgesegError(f"`{shlex.join(argv)}` timed out after {timeout:g} s") from None
    except OSError as exc:
        raise EdgesegError(f"cannot run `{argv[0]}`: {exc.strerror or exc}") from None
    if check and proc.returncode != 0:
        raise EdgesegError(f"`{shlex.join(argv)}` failed (exit {proc.returncode}): "
                           f"{_last_line(proc.stderr or proc.stdout)}")
    return proc


def _require_adb() -> str:
    adb = shutil.which("adb")
    if adb is None:
        raise EdgesegError(f"adb not found on PATH: {_ADB_HINT}")
    return adb


def _list_devices(adb: str) -> dict[str, str]:
    """``adb devices`` as {serial: state} (state: device, unauthorized, offline, ...)."""
    out = _run([adb, "devices"], timeout=30).stdout
    devices = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not line.startswith(("List of devices", "*")):
            devices[fields[0]] = fields[1]
    return devices


def _describe(devices: dict[str, str]) -> str:
    return ", ".join(f"{s} ({state})" for s, state in devices.items()) or "no devices"


def _pick_device(devices: dict[str, str], serial: str | None) -> str:
    """The serial to use; an EdgesegError saying what to connect or pass when there is none or several."""
    if serial is not None:
        state = devices.get(serial)
        if state is None:
            raise EdgesegError(f"no Android device with serial {serial} connected; "
                               f"`adb devices` shows: {_describe(devices)}")
        if state != "device":
            raise EdgesegError(f"Android device {serial} is {state}: unlock it and accept the "
                               f"USB debugging prompt, then retry")
        return serial
    ready = [s for s, state in devices.items() if state == "device"]
    if not ready:
        raise EdgesegError(f"no Android device connected and authorized; `adb devices` shows: "
                           f"{_describe(devices)}; connect a phone with USB debugging enabled")
    if len(ready) > 1:
        raise EdgesegError(f"several Android devices connected ({', '.join(ready)}); pass the serial of one")
    return ready[0]


def _device_model(adb: str, serial: str) -> str:
    out = _run([adb, "-s", serial, "shell", "getprop", "ro.product.model"], timeout=30).stdout
    return out.strip() or "unknown"


def _resolve_device(serial: str | None) -> tuple[str, str, str]:
    """(adb path, serial, device model) for the device to use."""
    adb = _require_adb()
    serial = _pick_device(_list_devices(adb), serial)
    return adb, serial, _device_model(adb, serial)


def check_adb(serial: str | None = None) -> str:
    """Check that adb is on PATH and the device is connected; return its model name.

    With ``serial`` None exactly one authorized device must be connected. Raises EdgesegError with a
    one-line message saying what to install or connect.
    """
    return _resolve_device(serial)[2]


def _require_file(path: str, what: str) -> None:
    if not Path(path).is_file():
        raise EdgesegError(f"{what} not found: {path}")


def run_on_device(*, model_path: str, binary_path: str, serial: str | None = None, threads: int = 4,
                  use_gpu: bool = False, use_xnnpack: bool = True, runs: int = 50, warmup: int = 5,
                  remote_dir: str = DEFAULT_REMOTE_DIR, push_timeout_s: float = 300.0,
                  run_timeout_s: float = 900.0) -> dict:
    """Push ``benchmark_model`` and the model to the phone, run it and parse its output.

    Returns :func:`parse_benchmark_output`'s dict plus ``device_model`` and ``serial``. A failed run
    raises EdgesegError quoting the tool's last error line.
    """
    _require_file(model_path, "TFLite model")
    _require_file(binary_path, "benchmark_model binary")
    adb, serial, device_model = _resolve_device(serial)
    *setup, bench = build_commands(model_path=model_path, binary_path=binary_path, serial=serial,
                                   threads=threads, use_gpu=use_gpu, use_xnnpack=use_xnnpack,
                                   runs=runs, warmup=warmup, remote_dir=remote_dir)
    for argv in setup:
        _run([adb] + argv[1:], timeout=push_timeout_s)
    proc = _run([adb] + bench[1:], timeout=run_timeout_s, check=False)
    result = parse_benchmark_output(proc.stdout + "\n" + proc.stderr)
    return {**result, "device_model": device_model, "serial": serial}

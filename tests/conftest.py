"""Shared fixtures: tiny recipes, a tiny trained checkpoint, one tiny export for the whole session
(read-only; ``copy_export`` gives a test its own copy to change), a CLI runner with real exit codes,
and slow steps run ahead in a background thread (``prefetched``)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# One intra-op thread per process: tests run tiny models, often in subprocesses beside each
# other, and oversubscribed OpenMP threads on a 2-core machine run up to 10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Tests interrupt subprocesses with SIGINT (Ctrl-C). A run started in the background by a non-interactive
# shell (``cmd &``, nohup) ignores SIGINT and hands SIG_IGN down to every child, where Python then never
# raises KeyboardInterrupt: handle it here, so the children start with the default disposition.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest
import yaml
from click.testing import CliRunner

from edgeseg.cli import main

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny",
    "model": {"arch": "unet_mobilenet_v3_small", "width": 0.5, "decoder_channels": [16, 16, 8, 8]},
    "data": {"task": "portrait", "input_size": [64, 64], "synth_train": 64, "synth_val": 8,
             "mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5]},
    "train": {"epochs": 1, "batch_size": 4, "steps_per_epoch": 40, "lr": 0.01},
    "export": {"max_gt_drop": 3.0},  # see SHARED_EXPORT_ARGS
}


def write_recipe(path: Path, overrides: dict | None = None) -> Path:
    """Write the tiny recipe (deep-merged with ``overrides``) to ``path``."""
    def merge(a, b):
        return {k: merge(a.get(k, {}), v) if isinstance(v, dict) else v for k, v in {**a, **b}.items()} if isinstance(a, dict) else b
    path.write_text(yaml.safe_dump(merge(TINY, overrides or {})))
    return path


@pytest.fixture
def cli():
    """Invoke the CLI in-process; returns click's Result (exit_code, output)."""
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    return invoke


_RUNNING: set = set()  # subprocesses of run_command still running (the prefetch thread's are killed at the end)


def run_command(cmd: list, cwd=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)``, killable from the session's end.

    Without ``cwd`` the command runs in the repository root, never in this process's current folder:
    a test may chdir into a folder it deletes later (``invoke_cli(cwd=...)``) while the prefetch thread
    starts a command, and a process whose working folder is gone fails in odd ways (oneMKL refuses to
    load libtorch_cpu.so: seen in CI)."""
    with subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=ROOT if cwd is None else cwd, env=env) as proc:
        _RUNNING.add(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            _RUNNING.discard(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_edgeseg(*args, cwd=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    """Run the real ``edgeseg`` console entry point in a subprocess."""
    return run_command([sys.executable, "-m", "edgeseg.cli", *args], cwd=cwd, timeout=timeout, env=env)


def signal_an_export(checkpoint: Path, out: Path, signum: int, *extra: str) -> dict:
    """``edgeseg export CHECKPOINT --out OUT`` (ONNX fp32, fp16, int8 of a tiny model) sent ``signum`` once its
    first file is written into staging: {first stdout line, exit code, stderr, whether OUT exists, what is left
    in OUT's parent folder}."""
    with subprocess.Popen([sys.executable, "-m", "edgeseg.cli", "export", str(checkpoint), "--out", str(out),
                           "--formats", "onnx", "--precisions", "fp32,fp16,int8", "--parity-images", "2", *extra],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        first = proc.stdout.readline()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=300)
    return {"first": first, "code": proc.returncode, "stderr": err, "out_exists": out.exists(),
            "left": sorted(p.name for p in out.parent.iterdir())}


def run_edgeseg_without(module: str, folder: Path, *args) -> subprocess.CompletedProcess:
    """``run_edgeseg`` in a process where ``import module`` fails, exactly as for a user without its extra
    (a package of that name that raises ImportError, first on PYTHONPATH; made under ``folder``)."""
    blocker = folder / "block" / module
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(f"raise ImportError('{module} is not installed here')\n")
    return run_edgeseg(*args, env={**os.environ, "PYTHONPATH": str(folder / "block")}, timeout=300)


# ---------------------------------------------------------------------------------------------
# Slow steps run ahead, beside the tests
#
# The tiny checkpoint, the shared export and a few other slow, self-contained steps are registered here
# and in test modules with ``prefetched``. When the session's tests are known, the steps some selected
# test needs (it uses the fixture of the same name) start in one background thread, in the order they
# were registered, each in subprocesses: they run on the machine's other core while the first tests
# run, and a test that needs one waits for it (or runs it, when no selected test asked for it ahead).

_STEPS: dict[str, Callable] = {}
_SECONDS: dict[str, float] = {}  # each step's rough duration: the steps test modules register run shortest first
_T0 = time.monotonic()


def prefetched(name: str, seconds: float = 60.0):
    """Register ``step(prefetch, folder) -> result`` as the slow step behind the fixture ``name``
    (``prefetch.get(name)`` returns the result). ``folder`` is the step's own new folder. The step runs
    its work in subprocesses (``run_edgeseg``, ``run_command``), never in this process: the tests run
    here meanwhile, and click's runner swaps sys.stdout for the whole process.

    The conftest's own steps run first, in the order registered (a later one may ``get`` an earlier one);
    the steps test modules register then run shortest first (``seconds``, a rough measure), so the modules
    waiting on quick steps start early and the suite does not end on one core waiting for a long step."""
    def register(step):
        assert name not in _STEPS, f"prefetched step {name!r} registered twice"
        _STEPS[name] = step
        _SECONDS[name] = seconds
        return step
    return register


def step_order() -> list[str]:
    """The registered steps in the order they run (see ``prefetched``): the conftest's own, then the others."""
    own = [n for n in _STEPS if _STEPS[n].__module__ == __name__]
    return own + sorted((n for n in _STEPS if n not in own), key=lambda n: _SECONDS[n])


class Prefetch:
    """The background thread running the registered steps that the selected tests need; ``get`` waits.

    ``add`` queues more steps later (those test modules register while they are collected, after a
    whole-suite run started the conftest's own steps; see ``pytest_sessionstart``)."""

    def __init__(self, tmp_path_factory, wanted: set):
        self._factory = tmp_path_factory
        self._queue: list[str] = []
        self._folders: dict = {}
        self._done: dict = {}
        self._results: dict = {}
        self._inline_locks: dict = {}
        self._lock = threading.Lock()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._running = False
        self.add(wanted)

    def add(self, wanted: set) -> "Prefetch":
        """Queue the registered steps in ``wanted`` not queued yet (in registration order); restart the
        thread if it has already finished the earlier ones."""
        new = [name for name in step_order() if name in wanted and name not in self._done]
        for name in new:  # folders and events are made here, not in the thread
            self._folders[name] = self._factory.mktemp(name)
            self._done[name] = threading.Event()
        with self._lock:
            self._queue.extend(new)
            restart = bool(new) and self._thread is not None and not self._running
        return self.start() if restart else self

    def start(self) -> "Prefetch":
        with self._lock:
            if not self._queue or self._running:
                return self
            self._running = True
            self._thread = threading.Thread(target=self._work, name="edgeseg-tests-prefetch", daemon=True)
        self._thread.start()
        return self

    def _run(self, name: str, folder: Path) -> None:
        started = time.monotonic()
        try:
            self._results[name] = (True, _STEPS[name](self, folder))
        except BaseException:  # the tests that need the step fail with its reason
            self._results[name] = (False, traceback.format_exc())
        log = os.environ.get("EDGESEG_PREFETCH_LOG")  # where the steps' timings go, to see what the suite waits on
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{name} started {started - _T0:.1f}s after the session began, took {time.monotonic() - started:.1f}s\n")

    def _work(self) -> None:
        while True:
            with self._lock:
                name = next((n for n in self._queue if not self._done[n].is_set()), None)
                if name is None:
                    self._running = False  # under the lock: add() sees it and restarts the thread
                    return
            if not self._closing:
                self._run(name, self._folders[name])
            self._done[name].set()

    def get(self, name: str):
        if name in self._done:
            self._done[name].wait()
        else:  # nobody asked ahead (a fixture requested by name at run time): run it here, once
            with self._lock:
                lock = self._inline_locks.setdefault(name, threading.Lock())
            with lock:
                if name not in self._results:
                    self._run(name, self._factory.mktemp(name))
        if name not in self._results:
            pytest.fail(f"{name}: not run (the session is ending)", pytrace=False)
        ok, value = self._results[name]
        if not ok:
            pytest.fail(f"{name} (a slow step run ahead, see conftest.prefetched) failed:\n{value}", pytrace=False)
        return value

    def close(self) -> None:
        """Stop after the running step; kill its subprocess (the tests that needed the rest have ended)."""
        self._closing = True
        for proc in list(_RUNNING):
            proc.kill()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=60)


def pytest_collection_modifyitems(session, config, items):
    """Run whole test modules in the order their prefetched steps finish: first the modules that need
    none, then those that need only the first step (the tiny checkpoint), and so on; each module keeps its
    place among equals and its own order. The first modules run while the background thread works."""
    order = {name: i for i, name in enumerate(step_order())}
    need: dict = {}  # module -> (latest step it needs, first position)
    for i, item in enumerate(items):
        module = item.nodeid.split("::")[0]
        last = max((order[n] for n in getattr(item, "fixturenames", ()) if n in order), default=-1)
        latest, first = need.get(module, (-1, i))
        need[module] = (max(latest, last), first)
    items.sort(key=lambda item: need[item.nodeid.split("::")[0]])  # stable: each module's own order is kept


_EARLY: dict = {}  # "prefetch" -> the Prefetch a whole-suite run started before collection


def pytest_sessionstart(session):
    """A whole-suite run (``make test``: no paths, no -k, -m or --lf) starts the conftest's own slow steps
    (the tiny checkpoint, the shared exports) now: collecting the suite imports torch, coremltools,
    executorch and the rest for about 40 s, and the steps run beside that on the other core."""
    config = session.config
    paths = {Path(a).resolve() for a in config.args}
    whole = paths <= {ROOT, ROOT / "tests"} and not (config.option.keyword or config.option.markexpr
                                                      or getattr(config.option, "lf", False)
                                                      or config.option.collectonly)
    factory = getattr(config, "_tmp_path_factory", None)
    if whole and factory is not None:
        _EARLY["prefetch"] = Prefetch(factory, set(_STEPS)).start()


@pytest.fixture(scope="session", autouse=True)
def prefetch(request, tmp_path_factory):
    """Starts the registered slow steps that the selected tests need (see ``prefetched``)."""
    wanted = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    runner = _EARLY.pop("prefetch", None)
    runner = Prefetch(tmp_path_factory, wanted).start() if runner is None else runner.add(wanted)
    yield runner
    runner.close()


@prefetched("tiny_checkpoint")
def _train_tiny(prefetch, folder: Path) -> Path:
    r = run_edgeseg("train", "--recipe", write_recipe(folder / "tiny.yaml"), "--out", folder)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return folder / "best.pt"


@pytest.fixture(scope="session")
def tiny_checkpoint(prefetch) -> Path:
    """A tiny binary portrait model trained for 40 steps (64x64): it predicts both classes."""
    return prefetch.get("tiny_checkpoint")


# ---------------------------------------------------------------------------------------------
# One tiny export per session, shared read-only

# Every format x precision of the tiny checkpoint. A 40-step model (validation mIoU 0.42) has small logit
# margins, so int8 flips more pixels than a trained one would: the int8 agreement thresholds are relaxed here
# and the tiny recipe allows a 3-point GT drop (the default model is held to 0.98, 0.95 on stress and 1 point
# by make demo). Measured on the tiny model, int8 agreement / stress / GT change: ONNX 0.947 / 0.818 / -0.96,
# TFLite 0.917 / 0.749 / -1.89, ExecuTorch 0.952 / 0.820 / -0.74 pt. 4 calibration images, minmax (the
# default method), as a plain ``--formats onnx --precisions int8 --calib-count 4`` export would calibrate.
SHARED_EXPORT_ARGS = ("--parity-images", "4", "--calib-count", "4", "--threshold", "int8=0.88",
                      "--stress-threshold", "int8=0.7")


@dataclass(frozen=True)
class SharedExport:
    """The session's export of the tiny checkpoint: its folder and what ``edgeseg export`` printed.

    Read-only: a test that changes files copies the folder first (``copy_export``); the fixture checks
    at the end of the session that no file under ``dir`` changed.
    """

    dir: Path
    stdout: str
    stderr: str

    @property
    def manifest(self):
        from edgeseg.manifest import read_manifest

        return read_manifest(self.dir)


@prefetched("shared_export")
def _export_tiny(prefetch, folder: Path) -> SharedExport:
    out = folder / "exp"
    r = run_edgeseg("export", prefetch.get("tiny_checkpoint"), "--out", out, *SHARED_EXPORT_ARGS)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return SharedExport(out, r.stdout, r.stderr)


@pytest.fixture(scope="session")
def shared_export(prefetch, tiny_checkpoint) -> SharedExport:
    """``edgeseg export`` of the tiny checkpoint to ONNX, TFLite and Core ML at fp32, fp16 and int8 (the
    defaults), run once per session through the real console entry point (a subprocess)."""
    export = prefetch.get("shared_export")
    before = tree_state(export.dir)
    yield export
    assert tree_state(export.dir) == before, f"a test changed the shared export {export.dir}: copy it with copy_export first"


@prefetched("executorch_export")
def _export_executorch(prefetch, folder: Path) -> Path:
    out = folder / "exp"
    r = run_edgeseg("export", prefetch.get("tiny_checkpoint"), "--out", out, "--formats", "executorch",
                    "--precisions", "fp32,int8", *SHARED_EXPORT_ARGS)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def executorch_export(prefetch, tiny_checkpoint) -> Path:
    """The tiny checkpoint exported to ExecuTorch fp32 and int8 (thresholds as the shared export; read-only)."""
    return prefetch.get("executorch_export")




def copy_export(src: Path, dest: Path, keep=None) -> Path:
    """Copy the export folder ``src`` to ``dest`` (created; it must not exist) for a test to change.

    ``keep``: (format, precision) pairs; only those artifacts are copied and listed in the copy's
    manifest (in the export's order), as if the export had made just those files: the same bytes,
    sha256 and parity, the same stored parity reference, calibration methods only for the formats kept.
    """
    from edgeseg.manifest import MANIFEST_NAME

    raw = json.loads((Path(src) / MANIFEST_NAME).read_text())
    if keep is not None:
        keep = set(keep)
        raw["artifacts"] = [a for a in raw["artifacts"] if (a["format"], a["precision"]) in keep]
        assert {(a["format"], a["precision"]) for a in raw["artifacts"]} == keep, f"{src} has not all of {sorted(keep)}"
        calibration = raw["model"].get("calibration") or {}
        if "methods" in calibration:
            int8 = {a["format"] for a in raw["artifacts"] if a["precision"] == "int8"}
            calibration["methods"] = {f: m for f, m in calibration["methods"].items() if f in int8}
    dest = Path(dest)
    dest.mkdir(parents=True)
    members = [a["path"] for a in raw["artifacts"]] + ([raw["parity_reference"]["path"]] if raw.get("parity_reference") else [])
    for rel in members:
        source = Path(src) / rel
        if source.is_dir():
            shutil.copytree(source, dest / rel)
        else:
            shutil.copy2(source, dest / rel)
    (dest / MANIFEST_NAME).write_text(json.dumps(raw, indent=2) + "\n")
    return dest


def invoke_cli(*args, cwd=None):
    """``edgeseg ARGS`` in-process (click's runner, exceptions propagate), from ``cwd`` when given;
    for module- and session-scoped fixtures (tests use the ``cli`` fixture)."""
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result_output: str) -> str:
    """Assert the output is a single 'error: ...' line without a traceback; return it."""
    lines = [ln for ln in result_output.strip().splitlines() if ln.strip()]
    assert "Traceback" not in result_output, result_output
    assert len(lines) == 1 and lines[0].startswith("error: "), result_output
    return lines[0]


def tree_state(*roots) -> dict:
    """Every file and folder under ``roots``: path -> (sha256 of the bytes | 'dir', mode). Missing roots map to None."""
    state: dict = {}
    for root in map(Path, roots):
        if not root.exists():
            state[str(root)] = None
            continue
        for p in [root, *sorted(root.rglob("*"))]:
            st = p.lstat()
            state[str(p)] = ("dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mode)
    return state


def assert_refused(cli, *args, watch=(), match: str | None = None) -> str:
    """Run ``edgeseg ARGS`` in-process and assert the bad-input contract: exit 2, one ``error:`` line on
    stderr, no traceback, and nothing under ``watch`` (folders or files) created, changed or removed.

    Returns the error line (``match``, when given, must occur in it).
    """
    before = tree_state(*watch)
    result = cli(*args)
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output}"
    line = one_line_error(result.stderr)
    if match is not None:
        assert match in line, line
    assert tree_state(*watch) == before, f"{args} changed files under {watch}"
    return line


@contextlib.contextmanager
def tmpfs(path: Path, options: str, why: str):
    """Mount a tmpfs with ``options`` on ``path`` for the block (root only; skips with ``why`` otherwise)."""
    if os.geteuid() != 0:
        pytest.skip(f"{why}, which needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"{why}, and mount failed: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write into: chmod 555 for a normal user; for root (CI), a read-only tmpfs mount."""
    ro = tmp_path / "read_only"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    with tmpfs(ro, "ro,size=64k", "root is denied a write only on a read-only mount"):
        yield ro


@pytest.fixture
def small_disk(tmp_path):
    """A 300 KB tmpfs: room for a few files, not for an export or a data set (mounting needs root)."""
    disk = tmp_path / "small"
    disk.mkdir()
    with tmpfs(disk, "size=300k", "a full disk is simulated with a small tmpfs mount"):
        yield disk

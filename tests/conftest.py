"""Shared fixtures: tiny recipes, a tiny trained checkpoint, a CLI runner with real exit codes."""
from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from pathlib import Path

# One intra-op thread per process: tests run tiny models, often in subprocesses beside each
# other, and oversubscribed OpenMP threads on a 2-core machine run up to 10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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


def run_edgeseg(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """Run the real ``edgeseg`` console entry point in a subprocess."""
    return subprocess.run([sys.executable, "-m", "edgeseg.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny binary portrait model trained for 40 steps (64x64): it predicts both classes."""
    out = tmp_path_factory.mktemp("tiny_run")
    recipe = write_recipe(out / "tiny.yaml")
    res = CliRunner().invoke(main, ["train", "--recipe", str(recipe), "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out / "best.pt"


@pytest.fixture(scope="session")
def tiny_parts_checkpoint(tmp_path_factory) -> Path:
    """A tiny 5-class parts model trained for 40 steps (64x64)."""
    out = tmp_path_factory.mktemp("tiny_parts_run")
    recipe = write_recipe(out / "tiny_parts.yaml", {"name": "tinyparts", "data": {"task": "parts"}})
    res = CliRunner().invoke(main, ["train", "--recipe", str(recipe), "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out / "best.pt"


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

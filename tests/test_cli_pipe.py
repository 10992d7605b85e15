"""A reader that closes edgeseg's stdout early (``edgeseg models | head -1``): a quiet exit 141 (128 + SIGPIPE, as
a shell reports a process killed by SIGPIPE), never 1, which means a failed gate."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT


def run_into_closed_pipe(*args) -> subprocess.CompletedProcess:
    """``edgeseg ARGS`` (a real process) whose stdout is a pipe nobody reads any more: the reader has gone
    before the first write, so every write meets a broken pipe whatever the timing."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "edgeseg.cli", *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT, timeout=300)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [
    ("models",),  # rich tables
    ("bench", "--help"),  # click's help of a command
    ("--version",),  # click's output before any command
])
def test_a_closed_stdout_exits_141_quietly(args):
    r = run_into_closed_pipe(*args)
    assert r.returncode == 141, r.stderr
    assert r.stderr == ""  # no traceback, no "Exception ignored ... BrokenPipeError"


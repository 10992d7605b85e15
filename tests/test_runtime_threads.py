"""One Runner shared by several threads (a web server's thread pool, ``ThreadPoolExecutor``): every
runtime's ``run`` gives what sequential calls give, raises nothing, and leaves the process-wide thread
settings (PyTorch's intra-op count, BLAS's) as they were. Real files: the committed latency reference
workload, exported to every format."""
from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from edgeseg.bench.latency_reference import ASSETS, INFO, calibration_net
from edgeseg.errors import MissingExtra
from edgeseg.manifest import read_manifest
from edgeseg.runtime.loader import runner_for_artifact
from edgeseg.runtime.torch_runner import TorchRunner

try:
    import threadpoolctl
except ImportError:  # optional for edgeseg: then BLAS's thread count is not checked
    threadpoolctl = None

THREADS, CALLS_PER_THREAD = 4, 10
PROCESS_THREADS = 2  # what the process-wide counts are set to during a test: no runner here asks for 2


def _images() -> list[np.ndarray]:
    """One distinct uint8 [1, H, W, 3] image per call, so a result handed to the wrong caller shows."""
    rng = np.random.default_rng(0)
    height, width = INFO.input_size
    return [rng.integers(0, 256, (1, height, width, 3), dtype=np.uint8) for _ in range(THREADS * CALLS_PER_THREAD)]


def _thread_counts() -> dict:
    """PyTorch's intra-op thread count and each loaded BLAS library's."""
    pools = threadpoolctl.threadpool_info() if threadpoolctl else []
    return {"torch": torch.get_num_threads(),
            **{pool["filepath"]: pool["num_threads"] for pool in pools if pool["user_api"] == "blas"}}


@contextlib.contextmanager
def _process_threads():
    """PyTorch's and BLAS's thread counts at PROCESS_THREADS inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(PROCESS_THREADS)
    limits = (threadpoolctl.threadpool_limits(PROCESS_THREADS, user_api="blas") if threadpoolctl
              else contextlib.nullcontext())
    try:
        with limits:
            yield
    finally:
        torch.set_num_threads(before)


def _check_shared_by_threads(open_runner) -> None:
    """The runner ``open_runner()`` opens, called from THREADS threads, agrees exactly with sequential calls."""
    images = _images()
    with _process_threads():
        before = _thread_counts()
        with open_runner() as runner:
            sequential = [runner.run(x) for x in images]
            with ThreadPoolExecutor(THREADS) as pool:
                threaded = list(pool.map(runner.run, images))  # re-raises the first exception of any call
        after = _thread_counts()  # libraries loaded meanwhile (by the runtime's import) are not compared
        assert {key: after[key] for key in before} == before, "a process-wide thread count changed"
    for i, (got, want) in enumerate(zip(threaded, sequential)):
        np.testing.assert_array_equal(got, want, err_msg=f"call {i}")


MANIFEST = read_manifest(ASSETS)


def _open_asset(fmt: str, precision: str):
    """The Runner the loader opens for one committed file here (Core ML: the reference interpreter off macOS)."""
    try:
        return runner_for_artifact(MANIFEST.find(fmt, precision), MANIFEST, 1)
    except MissingExtra as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("fmt,precision", [(a.format, a.precision) for a in MANIFEST.artifacts])
def test_exported_runner_is_safe_to_share_between_threads(fmt, precision):
    _check_shared_by_threads(lambda: _open_asset(fmt, precision))


def test_pytorch_runner_with_its_own_thread_count_is_safe_to_share_between_threads():
    net = calibration_net()
    _check_shared_by_threads(lambda: TorchRunner(net, input_size=INFO.input_size, mean=INFO.mean, std=INFO.std,
                                                 threads=1))


def test_opening_a_tflite_file_prints_only_what_is_not_litert_s_delegate_notice(tmp_path):
    """LiteRT's 'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.' landed on the stderr of predict,
    bench and inspect; anything else native code writes meanwhile still shows."""
    import subprocess
    import sys

    code = ("import os, edgeseg\n"
            "from edgeseg.compat import native_notices_dropped\n"
            f"edgeseg.load({str(ASSETS)!r}, format='tflite', precision='int8').close()\n"
            "with native_notices_dropped():\n"
            "    os.write(2, b'a native error\\n')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "XNNPACK" not in r.stderr and r.stderr.strip() == "a native error"


def test_notices_dropped_in_several_threads_at_once_lose_no_other_line():
    """Two threads pointing file descriptor 2 elsewhere at once restored it out of order: later stderr vanished."""
    import subprocess
    import sys

    code = ("import os, threading\n"
            "from edgeseg.compat import native_notices_dropped\n"
            "def write(i):\n"
            "    with native_notices_dropped():\n"
            "        os.write(2, b'line %d\\n' % i)\n"
            "threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]\n"
            "[t.start() for t in threads]\n"
            "[t.join() for t in threads]\n"
            "os.write(2, b'after\\n')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and sorted(r.stderr.splitlines()) == sorted(["after", *(f"line {i}" for i in range(8))])

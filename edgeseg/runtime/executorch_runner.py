"""ExecuTorch Runner: runs a ``.pte`` program with ``executorch.runtime`` (XNNPACK delegate) (layer 2).

ExecuTorch's CPU thread pool belongs to the process, not to a program: its size can only be changed
while no program method is loaded (resetting it under a loaded XNNPACK method crashes the process,
measured here with executorch 1.5.1). ``threads`` therefore resizes the pool when this is the only
open ExecuTorch runner, and asking two open runners for different sizes is an error.
"""
from __future__ import annotations

import threading

import numpy as np

from edgeseg.compat import install_log_filters
from edgeseg.errors import ArtifactError, EdgesegError, require
from edgeseg.manifest import Artifact, Manifest
from edgeseg.runtime.base import PIXELS_INT8, Runner, check_batch, float_input_nchw, int8_pixels_nchw
from edgeseg.ui import folded_output

_OPEN: dict[int, int | None] = {}  # id(runner) -> the pool size it asked for, for every open runner
_TORCH_THREADS: list[int] = []  # PyTorch's intra-op thread count before the first open runner set it to 1


class ExecuTorchRunner(Runner):
    runtime = "executorch"
    formats = ("executorch",)
    requires = ("executorch.runtime", "executorch")
    process_thread_pool = True

    def __init__(self, path: str, *, input_size, mean, std, expects: str = "normalized", threads: int | None = None):
        # A loaded method's planned memory is one buffer for every call: one execute at a time (executorch
        # 1.5.1's binding holds the GIL through execute anyway; the runtime does not promise it will)
        self._lock = threading.Lock()
        install_log_filters()  # before executorch imports torchao, whose Enum makes torch log a notice
        require(*self.requires, "running ExecuTorch programs")
        try:
            import torch

            # the runtime's C++ start-up log (cpuinfo probing, thread pool resets) goes to stderr: folded
            with folded_output(keep=(Exception,)):
                _claim_pool(self, threads)
                self.method = _load_method(path)
        except BaseException:
            self.close()
            raise
        self._torch = torch
        self.height, self.width = input_size
        self.mean, self.std, self.expects, self.threads = mean, std, expects, threads

    @classmethod
    def from_artifact(cls, art: Artifact, manifest: Manifest, threads: int | None = None, *,
                      spin: bool = True) -> "ExecuTorchRunner":
        m = manifest.model
        return cls(str(art.file), input_size=(m["input"]["height"], m["input"]["width"]), mean=m["mean"], std=m["std"],
                   expects=art.input.get("expects", "normalized"), threads=threads)

    def run(self, images: np.ndarray) -> np.ndarray:
        """Safe to call from several threads: one call at a time executes the method."""
        images = check_batch(images, self.height, self.width)
        if self.expects == PIXELS_INT8:
            x = int8_pixels_nchw(images)
        else:
            x = float_input_nchw(images, self.expects, self.mean, self.std)
        with self._lock:  # execute returns outputs that own their memory (measured with executorch 1.5.1)
            outs = [self.method.execute([self._torch.from_numpy(x[i:i + 1])])[0].numpy() for i in range(len(x))]
        return np.ascontiguousarray(np.concatenate(outs), dtype=np.float32)

    def close(self) -> None:
        with self._lock:  # after any run in progress
            self.method = None
        if _OPEN.pop(id(self), "closed") != "closed" and not _OPEN:
            _torch_threads(restore=True)


def _load_method(path: str):
    """The ``forward`` method of the program at ``path``; ArtifactError when ExecuTorch cannot load it."""
    from executorch.runtime import Runtime

    try:
        return Runtime.get().load_program(str(path)).load_method("forward")
    except Exception as exc:  # the runtime raises plain RuntimeError/ValueError for a bad program
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ArtifactError(f"{path}: ExecuTorch cannot load it ({first})") from None


def _claim_pool(runner: ExecuTorchRunner, threads: int | None) -> None:
    """Size the process's ExecuTorch pool for ``runner`` (``threads`` None: leave it as it is)."""
    others = {t for key, t in _OPEN.items() if key != id(runner)}
    if not _OPEN:
        _torch_threads(restore=False)
    _OPEN[id(runner)] = threads
    if threads is None:
        return
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool

    if _threadpool_get_thread_count() == threads:
        return
    if others:
        runner.close()
        raise EdgesegError(f"ExecuTorch's thread pool is shared by the process and in use by another program; "
                           f"close it before running one with {threads} threads")
    import gc

    gc.collect()  # methods of runners closed without a reference cycle broken yet hold the pool too
    _unsafe_reset_threadpool(threads)


def _torch_threads(*, restore: bool) -> None:
    """While any ExecuTorch program is open, PyTorch's own intra-op pool runs one thread.

    ExecuTorch computes on its own pool, but each execute also woke PyTorch's (by default one thread
    per core), which kept the other core busy: measured on the default model at 2 threads, 4.5 ms per
    run against 1.7 ms with PyTorch at one thread. Restored when the last runner closes.
    """
    import torch

    if restore:
        if _TORCH_THREADS:
            torch.set_num_threads(_TORCH_THREADS.pop())
    elif not _TORCH_THREADS:
        _TORCH_THREADS.append(torch.get_num_threads())
        torch.set_num_threads(1)

"""The Runner contract: one class per runtime, shared by parity and latency code (layer 2).

``run(images)`` takes uint8 RGB NHWC pixels and returns float32 NCHW logits at the model's
input resolution. Layout and normalization live inside each Runner, so callers never branch
on format. Runners do no timing.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod

import numpy as np

from edgeseg.errors import EdgesegError


class Runner(ABC):
    """Runs one model; subclasses name their ``runtime`` and the formats they load, and open a
    manifest entry with ``from_artifact`` (the loader's ``RUNNERS`` table says which class opens which format)."""

    runtime: str = ""
    formats: tuple[str, ...] = ()
    threads: int | None = None
    requires: tuple[str, str] | None = None  # (python module, pip extra that provides it)
    latency_note: str | None = None  # set when this runtime's speed says nothing about deployment (not timed)
    process_thread_pool: bool = False  # one CPU thread pool per process: open runners must agree on its size

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """(True, '') when this runtime can run here, else (False, why not)."""
        if cls.requires is None:
            return True, ""
        module, extra = cls.requires
        try:
            importlib.import_module(module)
            return True, ""
        except ImportError:
            return False, f"{module} is not installed (pip install 'edgeseg[{extra}]')"

    @classmethod
    def from_artifact(cls, art, manifest, threads: int | None = None, *, spin: bool = True) -> "Runner":
        """Open one manifest entry (already verified) with its recorded input contract."""
        raise NotImplementedError(f"{cls.__name__} does not open exported files")

    @abstractmethod
    def run(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] RGB -> float32 logits [N, C, H, W]. Safe to call from several threads at once:
        a Runner whose runtime is not thread-safe serializes its calls with a lock."""

    def close(self) -> None:
        """Release native resources (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_batch(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Validate a uint8 NHWC batch of the model's size; return it contiguous."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise EdgesegError(f"runner input must be uint8 [N,H,W,3], got {images.dtype} {list(images.shape)}")
    if images.shape[1:3] != (height, width):
        raise EdgesegError(f"runner input is {images.shape[2]}x{images.shape[1]}, model expects {width}x{height}")
    return np.ascontiguousarray(images)


PIXEL_RANGE = (0.0, 255.0)


def normalized_range(mean, std) -> tuple[float, float]:
    """The span of (pixel - mean) / std over every pixel value and channel: what an int8 input range
    must cover so that no pixel of any photo clips (calibration images rarely span it)."""
    low, high = PIXEL_RANGE
    return (min((low - float(m)) / float(s) for m, s in zip(mean, std)),
            max((high - float(m)) / float(s) for m, s in zip(mean, std)))


def folds_into_uint8_input(mean, std) -> bool:
    """One mean/std for all channels and an integer mean in 0..255 (``x / 255``, ``(x - 128) / 64``...):
    ``(pixel - mean) / std`` is then exactly the dequantization of a uint8 input with scale ``1 / std``
    and zero point ``mean``, so an int8 graph needs no normalization op (measured on the default model,
    1 thread: the in-graph one costs 0.33 of 3.07 ms)."""
    uniform = len({float(v) for v in mean}) == 1 and len({float(v) for v in std}) == 1
    return uniform and float(mean[0]).is_integer() and 0 <= float(mean[0]) <= 255 and float(std[0]) > 0


def normalize_nhwc(images: np.ndarray, mean, std) -> np.ndarray:
    """uint8 NHWC -> float32 NHWC (pixel - mean) / std."""
    return (images.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def float_input(images: np.ndarray, expects: str, mean, std) -> np.ndarray:
    """uint8 NHWC -> what a float input wants: normalized values, or float pixels 0..255."""
    if expects == "pixels":
        return images.astype(np.float32)
    return normalize_nhwc(images, mean, std)


#: ``expects`` of an int8 input that is ``pixel - 128`` (the uint8 pixel with its top bit flipped)
PIXELS_INT8 = "pixels_int8"


def int8_pixels_nchw(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> contiguous int8 NCHW ``pixel - 128``: what an int8 input whose quantization is the
    normalization (``expects: "pixels_int8"``) takes."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2) ^ np.uint8(0x80)).view(np.int8)


def float_input_nchw(images: np.ndarray, expects: str, mean, std) -> np.ndarray:
    """uint8 NHWC -> contiguous float32 NCHW, like ``float_input`` but transposed.

    The uint8 pixels are transposed first (a quarter of the bytes), then converted and
    normalized in place: ~0.1 ms for 256x256 against ~0.7 ms for normalize-then-transpose,
    which is time a latency benchmark would otherwise charge to the model.
    """
    x = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(np.float32)
    if expects != "pixels":
        x -= np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        x /= np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return x

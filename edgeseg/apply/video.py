"""Video in and out for ``edgeseg predict`` through PyAV (FFmpeg's libraries; the ``video`` extra)
(layer 3).

Decoding streams one frame at a time, so memory does not grow with the clip's length. Frames reach the
model upright: a phone video stores its frames sideways with a display rotation (its display matrix),
which is applied as they are decoded. The output keeps the input's frame count, stored size, display
rotation and frame rate (so it plays, and lines up with its source, in whichever player shows both): H.264 (libx264, yuv420p; yuv444p when a side
is odd, which 4:2:0 cannot hold) in an MP4 file, written beside its destination and renamed into
place when complete. A file with no video stream, a codec FFmpeg cannot decode, or data that ends
early (truncated) is a ``DataError``.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import numpy as np

from edgeseg.errors import DataError, require
from edgeseg.fsutil import atomic_path

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm")
OUTPUT_SUFFIX = ".mp4"
CODEC = "libx264"
CRF = "18"  # visually lossless: a mask or matte stays crisp


def _av():
    return require("av", "video", "reading and writing video")


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream (``frames`` 0 when it does not say, as MKV and
    WebM do not; ``duration_frames`` its duration times its rate then, 0 when that is unknown too).
    ``width`` and ``height`` are the stored frames'; ``rotation`` the counter-clockwise display rotation
    of its first frame, in degrees (0, 90, 180 or 270; a phone's portrait clip has 90 or 270)."""

    frames: int
    width: int
    height: int
    rate: Fraction
    duration_frames: int = 0
    rotation: int = 0


def _quarter_turns(degrees: float | None) -> int:
    """A display rotation (counter-clockwise degrees, as ``VideoFrame.rotation`` gives it) in quarter turns
    0-3; the nearest one for an angle that is not a multiple of 90 (mirroring is not applied)."""
    return int(round((degrees or 0) / 90)) % 4


def upright(frame: np.ndarray, rotation: int) -> np.ndarray:
    """A stored frame as it is displayed: turned ``rotation`` degrees counter-clockwise."""
    return np.rot90(frame, _quarter_turns(rotation))


def _unreadable(path: Path, exc: BaseException) -> DataError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return DataError(f"{path}: cannot read this video ({reason}); check that it is a complete video file "
                     "FFmpeg can decode (e.g. re-encode it to H.264 MP4)")


def probe_video(path: str | Path) -> VideoInfo:
    """Open ``path`` and check it has a decodable video stream; DataError (one line) if not."""
    av, path = _av(), Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: has no video stream; pass a video file (or images)")
            stream = container.streams.video[0]
            if stream.codec_context is None or not stream.codec_context.width:
                raise DataError(f"{path}: its video codec cannot be decoded here; re-encode it to H.264 MP4")
            rate = stream.average_rate or stream.guessed_rate or Fraction(30)
            seconds = container.duration / av.time_base if container.duration else 0.0
            first = next(container.decode(video=0), None)  # the display rotation travels with the frames
            return VideoInfo(int(stream.frames or 0), stream.codec_context.width, stream.codec_context.height,
                             Fraction(rate), int(seconds * float(rate)),
                             90 * _quarter_turns(first.rotation if first is not None else 0))
    except av.FFmpegError as exc:
        raise _unreadable(path, exc) from None


def read_frames(path: str | Path, expected: int = 0, duration_frames: int = 0) -> Iterator[np.ndarray]:
    """Yield the video's frames in order as uint8 RGB [H, W, 3], one at a time, upright (each turned by
    its display rotation).

    DataError when decoding fails part-way, when no frame at all could be decoded, or when the file is
    truncated: fewer than ``expected`` frames (the container's count) could be decoded, or, where the
    container keeps no count, fewer than half the ``duration_frames`` its duration promises (a variable
    frame rate makes that an estimate).
    """
    av, path = _av(), Path(path)
    count = 0
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                count += 1
                yield np.ascontiguousarray(upright(frame.to_ndarray(format="rgb24"), frame.rotation))
    except av.FFmpegError as exc:
        raise _unreadable(path, exc) from None
    if count == 0:
        raise DataError(f"{path}: no frame could be decoded (a damaged or truncated file); use a complete copy")
    if expected and count < expected:
        raise DataError(f"{path}: truncated: only {count} of its {expected} frames could be decoded; "
                        "use a complete copy of the file")
    if not expected and count < duration_frames / 2:
        raise DataError(f"{path}: truncated: only {count} frames could be decoded, of about {duration_frames} in its "
                        "duration; use a complete copy of the file")


class VideoWriter:
    """Encodes RGB (or greyscale) uint8 frames of one size into an H.264 MP4 at a fixed frame rate.

    ``width`` x ``height`` is the stored size; with a ``rotation`` (counter-clockwise degrees, a multiple of
    90) the file carries it as its display rotation, and ``write`` takes frames as displayed (upright),
    storing them turned back."""

    def __init__(self, container, width: int, height: int, rate: Fraction, rotation: int = 0):
        self._av = _av()
        self._container = container
        stream = container.add_stream(CODEC, rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        stream.options = {"crf": CRF}
        self._turns = _quarter_turns(rotation)
        if self._turns:
            stream.set_display_rotation(90 * self._turns)
        self._stream = stream

    def write(self, frame: np.ndarray) -> None:
        fmt = "gray" if frame.ndim == 2 else "rgb24"
        stored = np.ascontiguousarray(np.rot90(frame, -self._turns))
        packets = self._stream.encode(self._av.VideoFrame.from_ndarray(stored, format=fmt))
        self._container.mux(packets)

    def finish(self) -> None:
        self._container.mux(self._stream.encode(None))


@contextmanager
def video_writer(dest: str | Path, width: int, height: int, rate: Fraction, *, rotation: int = 0,
                 place: Callable[[Path], ContextManager[Path]] = atomic_path) -> Iterator[VideoWriter]:
    """A ``VideoWriter`` whose file appears at ``dest`` only when the block completes: it is written at the
    temporary path ``place(dest)`` yields, which becomes ``dest`` when that block ends (``atomic_path``, or
    ``edgeseg predict``'s own, which also lists it in the ledger)."""
    av = _av()
    with place(Path(dest)) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            writer = VideoWriter(container, width, height, rate, rotation)
            yield writer
            writer.finish()

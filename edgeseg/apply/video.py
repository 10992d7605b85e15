"""Video in and out for ``edgeseg predict`` through PyAV (FFmpeg's libraries; the ``video`` extra)
(layer 3).

Decoding streams one frame at a time, so memory does not grow with the clip's length. Frames reach the
model upright: a phone video stores its frames sideways with a display rotation (its display matrix),
which is applied as they are decoded. The output is H.264 (libx264, yuv420p; yuv444p when a side is
odd, which 4:2:0 cannot hold) in an MP4 file that keeps the input's frame count, stored size, display
rotation, pixel aspect ratio and each frame's time (a phone's variable frame rate included), so it
plays, and lines up with its source, in whichever player shows both; its first audio track goes along,
copied as it is (re-encoded to AAC where MP4 cannot hold its codec). It is written beside its
destination and renamed into place when complete. A file with no video stream, a codec FFmpeg cannot
decode, or data that ends early (truncated) is a ``DataError``.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
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
TIME_BASE = Fraction(1, 90000)  # the output's clock (MPEG's): any source's frame times fit it
AUDIO_CODEC = "aac"  # for an audio track MP4 cannot hold as it is (e.g. mu-law or ADPCM from an AVI)


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
    aspect: Fraction | None = None  # the pixel (sample) aspect ratio, when the file gives one other than 1:1


def _quarter_turns(degrees: float | None) -> int:
    """A display rotation (counter-clockwise degrees, as ``VideoFrame.rotation`` gives it) in quarter turns
    0-3; the nearest one for an angle that is not a multiple of 90 (mirroring is not applied)."""
    return int(round((degrees or 0) / 90)) % 4


def upright(frame: np.ndarray, rotation: int) -> np.ndarray:
    """A stored frame as it is displayed: turned ``rotation`` degrees counter-clockwise."""
    return np.rot90(frame, _quarter_turns(rotation))


def _seconds(ts, time_base) -> float:
    return float(ts * time_base) if ts is not None and time_base is not None else 0.0


def _start(container) -> float:
    """Where the first video stream starts, in seconds: the output's time 0 (video and sound)."""
    first = container.streams.video[0] if container.streams.video else None
    return _seconds(first.start_time, first.time_base) if first is not None else 0.0


def _reason(exc: BaseException) -> str:
    """FFmpeg's reason in one line (the exception's class name when it gives none)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__


def _unreadable(path: Path, exc: BaseException) -> DataError:
    return DataError(f"{path}: cannot read this video ({_reason(exc)}); check that it is a complete video file "
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
            aspect = stream.sample_aspect_ratio
            first = next(container.decode(video=0), None)  # the display rotation travels with the frames
            return VideoInfo(int(stream.frames or 0), stream.codec_context.width, stream.codec_context.height,
                             Fraction(rate), int(seconds * float(rate)),
                             90 * _quarter_turns(first.rotation if first is not None else 0),
                             Fraction(aspect) if aspect and aspect != 1 else None)
    except av.FFmpegError as exc:
        raise _unreadable(path, exc) from None


def read_frames(path: str | Path, expected: int = 0,
                duration_frames: int = 0) -> Iterator[tuple[float | None, np.ndarray]]:
    """Yield the video's frames in order, one at a time: ``(seconds, image)``, its presentation time from
    the start of the video stream (None when the file gives none) and the frame as uint8 RGB [H, W, 3],
    upright (turned by its display rotation).

    DataError when decoding fails part-way, when no frame at all could be decoded, or when the file is
    truncated: fewer than ``expected`` frames (the container's count) could be decoded, or, where the
    container keeps no count, fewer than half the ``duration_frames`` its duration promises (a variable
    frame rate makes that an estimate).
    """
    av, path = _av(), Path(path)
    count = 0
    try:
        with av.open(str(path)) as container:
            origin = _start(container)
            for frame in container.decode(video=0):
                count += 1
                seconds = frame.time - origin if frame.time is not None else None
                yield seconds, np.ascontiguousarray(upright(frame.to_ndarray(format="rgb24"), frame.rotation))
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


class _AudioTrack:
    """The first audio track of ``source``, carried into ``output`` in step with the video written there:
    its packets copied as they are, or decoded and re-encoded to AAC where MP4 cannot hold its codec.
    Times are kept relative to the source's first video frame, which the output starts with."""

    def __init__(self, output, source, origin: float):
        self._av = _av()
        self._output, self._origin = output, origin
        self._src = source.streams.audio[0]
        self._packets = source.demux(self._src)
        self._pending = None
        try:
            self._out = output.add_stream_from_template(self._src)
            self._encoder = None
        except ValueError:  # "'mp4' format does not support '<codec>' codec"
            ctx = self._src.codec_context
            # the standard layout for 1 or 2 channels (an AVI's says "1 channels", which AAC refuses)
            layout = {1: "mono", 2: "stereo"}.get(len(ctx.layout.channels), ctx.layout)
            self._out = output.add_stream(AUDIO_CODEC, rate=ctx.sample_rate)
            self._out.layout = layout
            self._encoder = self._av.AudioResampler(format=self._out.format, layout=layout, rate=ctx.sample_rate)
            self._samples: int | None = None  # the output's time of the next sound, in samples

    def until(self, seconds: float | None) -> None:
        """Write the track up to ``seconds`` (video time) of the output; all that is left for None."""
        if self._packets is None:
            return
        while True:
            packet = self._pending if self._pending is not None else next(self._packets, None)
            self._pending = None
            if packet is None:
                break
            if packet.dts is None and packet.size == 0:  # the demuxer's closing empty packet
                continue
            if seconds is not None and _seconds(packet.pts, packet.time_base) - self._origin > seconds:
                self._pending = packet
                return
            self._write(packet)
        self._packets = None
        if self._encoder is not None:
            self._encode(self._src.codec_context.decode(None))
            self._mux_resampled(self._encoder.resample(None))
            self._output.mux(self._out.encode(None))

    def _write(self, packet) -> None:
        if self._encoder is not None:
            self._encode(self._src.codec_context.decode(packet))
            return
        shift = round(self._origin / packet.time_base) if packet.time_base else 0
        if packet.pts is not None:
            packet.pts -= shift
        if packet.dts is not None:
            packet.dts -= shift
        packet.stream = self._out
        self._output.mux(packet)

    def _encode(self, frames) -> None:
        for frame in frames:
            if self._samples is None:  # the output's time of the first sound, in samples (< 0: before the video)
                self._samples = round((_seconds(frame.pts, frame.time_base) - self._origin) * frame.sample_rate)
            self._mux_resampled(self._encoder.resample(frame))

    def _mux_resampled(self, chunks) -> None:
        for chunk in chunks:
            start = self._samples or 0
            self._samples = start + chunk.samples
            if start < 0:  # sound from before the video's first frame is left out, as the copied track's edit list does
                if self._samples <= 0:
                    continue
                chunk = self._tail(chunk, -start)
                start = 0
            chunk.pts, chunk.time_base = start, Fraction(1, chunk.sample_rate)
            self._output.mux(self._out.encode(chunk))

    def _tail(self, chunk, skip: int):
        """``chunk`` without its first ``skip`` samples."""
        data = chunk.to_ndarray()
        channels = 1 if chunk.format.is_planar else len(chunk.layout.channels)
        tail = self._av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, skip * channels:]), format=chunk.format.name,
                                                layout=chunk.layout.name)
        tail.sample_rate = chunk.sample_rate
        return tail


class VideoWriter:
    """Encodes RGB (or greyscale) uint8 frames of one size into an H.264 MP4.

    ``width`` x ``height`` is the stored size; with a ``rotation`` (counter-clockwise degrees, a multiple of
    90) the file carries it as its display rotation, and ``write`` takes frames as displayed (upright),
    storing them turned back. Each frame is shown at the time ``write`` is given (its source's), else
    at ``rate`` frames a second; ``aspect`` is the pixel aspect ratio the file declares."""

    def __init__(self, container, width: int, height: int, rate: Fraction, rotation: int = 0,
                 aspect: Fraction | None = None, audio=None):
        self._av = _av()
        self._container = container
        self._rate, self._written, self._pts = rate, 0, -1
        stream = container.add_stream(CODEC, rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        stream.options = {"crf": CRF}
        stream.codec_context.time_base = TIME_BASE
        if aspect:
            stream.codec_context.sample_aspect_ratio = aspect
        self._turns = _quarter_turns(rotation)
        self._shown = (width, height) if self._turns % 2 else (height, width)  # a frame as displayed: rows, columns
        if self._turns:
            stream.set_display_rotation(90 * self._turns)
        self._stream = stream
        self._audio: _AudioTrack | None = audio(container) if audio else None

    def write(self, frame: np.ndarray, seconds: float | None = None) -> None:
        """Encode one frame (as displayed), shown at ``seconds`` (None: the next frame at the fixed rate)."""
        if frame.shape[:2] != self._shown:
            raise DataError(f"a frame of {frame.shape[1]}x{frame.shape[0]} where the video's first frame is "
                            f"{self._shown[1]}x{self._shown[0]} (as displayed): its size or display rotation changes "
                            "part-way; re-encode it to one size and rotation")
        fmt = "gray" if frame.ndim == 2 else "rgb24"
        stored = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(frame, -self._turns)), format=fmt)
        if seconds is None:
            seconds = float(self._written / self._rate)
        self._pts = max(round(seconds / TIME_BASE), self._pts + 1)  # strictly increasing, as H.264 needs
        stored.pts, stored.time_base = self._pts, TIME_BASE
        self._container.mux(self._stream.encode(stored))
        self._written += 1
        if self._audio:
            self._audio.until(seconds + float(1 / self._rate))

    def finish(self) -> None:
        self._container.mux(self._stream.encode(None))
        if self._audio:
            self._audio.until(None)


@contextmanager
def video_writer(dest: str | Path, width: int, height: int, rate: Fraction, *, rotation: int = 0,
                 aspect: Fraction | None = None, audio_from: str | Path | None = None,
                 place: Callable[[Path], ContextManager[Path]] = atomic_path) -> Iterator[VideoWriter]:
    """A ``VideoWriter`` whose file appears at ``dest`` only when the block completes: it is written at the
    temporary path ``place(dest)`` yields, which becomes ``dest`` when that block ends (``atomic_path``, or
    ``edgeseg predict``'s own, which also lists it in the ledger). With ``audio_from`` (the source video),
    its first audio track, if it has one, goes along."""
    av = _av()
    with ExitStack() as stack:
        audio = None
        if audio_from is not None:
            source = stack.enter_context(av.open(str(audio_from)))
            if source.streams.audio:
                origin = _start(source)
                audio = lambda output: _AudioTrack(output, source, origin)  # noqa: E731
        tmp = stack.enter_context(place(Path(dest)))
        try:
            with av.open(str(tmp), mode="w", format="mp4") as container:
                writer = VideoWriter(container, width, height, rate, rotation, aspect, audio)
                yield writer
                writer.finish()
        except av.FFmpegError as exc:  # e.g. a sound track whose packets FFmpeg cannot put into MP4
            raise DataError(f"cannot be written as MP4 ({_reason(exc)}); re-encode it to H.264 MP4 with AAC sound") from None

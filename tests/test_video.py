"""Video: the flicker metric, the temporal stabilizer, and ``edgeseg predict`` on video files (PyAV)."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import assert_refused
from PIL import Image

from edgeseg.apply.video import video_writer
from edgeseg.data.synth import render
from edgeseg.metrics import FlickerMetrics
from edgeseg.runtime.stabilizer import SmoothCfg, Stabilized, Stabilizer

# ------------------------------------------------------------------------------------------ metric


def test_flicker_of_a_static_clip_predicted_perfectly_is_zero():
    gt = np.zeros((8, 8), np.uint8)
    gt[2:6, 2:6] = 1
    m = FlickerMetrics()
    m.start_clip()
    for _ in range(4):
        m.update(gt, gt)
    assert m.summary()["flicker"] == 0.0 and m.summary()["boundary_flicker"] == 0.0
    assert (m.clips, m.frames, m.pairs) == (1, 4, 3)


def test_flicker_on_a_hand_made_three_frame_clip():
    # 4x4 frames. Ground truth: frame 1 -> 2 one pixel becomes person; frame 2 -> 3 unchanged.
    gt1 = np.zeros((4, 4), np.uint8)
    gt2 = gt1.copy()
    gt2[0, 0] = 1
    gt3 = gt2.copy()
    p1 = np.zeros((4, 4), np.uint8)
    p2 = p1.copy()
    p2[0, 0] = 1  # follows the ground truth: not flicker
    p2[3, 3] = 1  # changes where the ground truth does not: flicker
    p3 = p2.copy()
    p3[3, 3] = 0  # and back: flicker again
    p3[1, 1] = 1  # and one more
    m = FlickerMetrics()
    m.start_clip()
    for p, t in ((p1, gt1), (p2, gt2), (p3, gt3)):
        m.update(p, t)
    # pair 1: 15 stable pixels, 1 flickers; pair 2: 16 stable pixels, 2 flicker
    assert m.flicker() == pytest.approx((1 / 15 + 2 / 16) / 2)


def test_flicker_does_not_compare_frames_across_clips_and_skips_ignore_pixels():
    a = np.zeros((4, 4), np.uint8)
    b = np.ones((4, 4), np.uint8)
    m = FlickerMetrics()
    m.start_clip()
    m.update(a, a)
    m.start_clip()
    m.update(b, b)  # a new clip: no pair with the last frame of the previous one
    assert m.pairs == 0 and m.clips == 2
    ignored = np.full((4, 4), 255, np.uint8)
    m.update(b, ignored)
    m.update(a, ignored)  # every pixel ignored: the pair counts as 0 flicker over no pixels
    assert m.flicker() == 0.0


# ------------------------------------------------------------------------------------------ stabilizer


def _proba(fg: np.ndarray) -> np.ndarray:
    """[1, 2, H, W] probabilities from a foreground probability map."""
    return np.stack([1 - fg, fg])[None].astype(np.float32)


def test_stabilizer_follows_confident_pixels_at_once_and_damps_unsure_ones():
    s = Stabilizer(SmoothCfg(min_weight=0.3, hold=0.0))
    s.step(_proba(np.array([[0.0, 0.45]])))
    out = s.step(_proba(np.array([[1.0, 0.55]])))[0, 1, 0]
    assert out[0] == pytest.approx(1.0)  # certain now: taken as it is
    assert 0.45 < out[1] < 0.5  # unsure: mostly its history (the class does not flip)
    s.reset()
    assert s.step(_proba(np.array([[0.2, 0.7]])))[0, 1, 0] == pytest.approx([0.2, 0.7])


def test_stabilizer_holds_the_last_class_until_another_leads_by_more_than_hold():
    s = Stabilizer(SmoothCfg(min_weight=1.0, hold=0.3))  # no blending: the hold alone
    assert s.step(_proba(np.array([[0.4]])))[0, 1, 0, 0] == pytest.approx(0.4)  # shown: background
    held = s.step(_proba(np.array([[0.6]])))[0, 1, 0, 0]  # person leads by 0.2 < 0.3: still background
    assert held == pytest.approx(0.6 / 1.3) and held < 0.5
    assert s.step(_proba(np.array([[0.7]])))[0, 1, 0, 0] > 0.5  # leads by 0.4: switches
    out = s.step(_proba(np.array([[0.45]])))  # and now person is held in turn
    assert out[0, 1, 0, 0] > 0.5 and out.sum(1) == pytest.approx(1.0)


def test_stabilized_run_keeps_the_runner_contract_and_reduces_flicker_of_a_shimmering_edge():
    rng = np.random.default_rng(0)
    truth = np.zeros((16, 16), np.uint8)
    truth[:, 8:] = 1

    def shimmering(images):  # confident far from the edge; on the two columns beside it, right on average but noisy
        fg = np.where(truth == 1, 0.95, 0.05)
        fg[:, 7:9] += np.where(truth[:, 7:9] == 1, -0.33, 0.33) + rng.uniform(-0.2, 0.2, (16, 2))
        return np.log(_proba(fg))

    frames = np.zeros((1, 16, 16, 3), np.uint8)
    flicker = {}
    for smooth in (False, True):
        run = Stabilized(shimmering) if smooth else shimmering
        m = FlickerMetrics()
        for _ in range(20):
            logits = run(frames)
            assert logits.shape == (1, 2, 16, 16) and logits.dtype == np.float32
            m.update(logits[0].argmax(0), truth)
        flicker[smooth] = m.flicker()
    assert flicker[True] < 0.5 * flicker[False]


def test_stabilizer_parameters_are_checked():
    from edgeseg.errors import EdgesegError

    with pytest.raises(EdgesegError, match="min_weight"):
        SmoothCfg(min_weight=0)
    with pytest.raises(EdgesegError, match="gamma"):
        SmoothCfg(gamma=-1)


# ------------------------------------------------------------------------------------------ video files


def _write_clip(path: Path, frames: int = 8, size=(72, 96), rate=Fraction(25)) -> Path:
    """A small H.264 MP4 of a synthetic portrait panning sideways."""
    h, w = size
    base = render("portrait", (h, w + 2 * frames), 3).image
    with video_writer(path, w, h, rate) as writer:
        for i in range(frames):
            writer.write(np.ascontiguousarray(base[:, 2 * i:2 * i + w]))
    return path


def _video_facts(path: Path) -> tuple[int, int, int, Fraction, list[np.ndarray]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        return len(frames), s.codec_context.width, s.codec_context.height, s.average_rate, frames


@pytest.mark.parametrize("output", ["overlay", "alpha"])
def test_predict_on_a_video_keeps_frame_count_size_and_fps(cli, tmp_path, output):
    clip = _write_clip(tmp_path / "clip.mp4", frames=7, size=(72, 98), rate=Fraction(24))
    r = cli("predict", "default", clip, "--out", tmp_path / "out", "--output", output, "--smooth")
    assert r.exit_code == 0, r.output
    assert f"wrote 1 {output} video to" in r.output
    n, w, h, rate, frames = _video_facts(tmp_path / "out" / "clip.mp4")
    assert (n, w, h, rate) == (7, 98, 72, 24)
    if output == "alpha":  # a greyscale matte: the three channels agree (up to chroma rounding)
        f = frames[3].astype(int)
        assert np.abs(f[..., 0] - f[..., 1]).max() <= 3
    ledger = json.loads((tmp_path / "out" / ".edgeseg-predict.json").read_text())
    assert list(ledger["files"]) == ["clip.mp4"]


def test_a_phone_clip_stored_sideways_is_segmented_upright_and_keeps_its_display_rotation(cli, tmp_path):
    """A portrait phone video stores landscape frames and a display rotation (-90: turn clockwise to show).
    The model must see the person upright (as in the same clip stored upright), and the output keeps the
    stored size and the rotation, so it lines up with its source in any player."""
    h, w, frames = 96, 64, 3
    base = render("portrait", (h, w + 2 * frames), 5).image
    shown = [np.ascontiguousarray(base[:, 2 * i:2 * i + w]) for i in range(frames)]
    with video_writer(tmp_path / "upright.mp4", w, h, Fraction(25)) as writer:
        for f in shown:
            writer.write(f)
    with av.open(str(tmp_path / "phone.mp4"), "w", format="mp4") as c:  # as a phone writes it: stored sideways
        s = c.add_stream("libx264", rate=Fraction(25))
        s.width, s.height, s.pix_fmt, s.options = h, w, "yuv420p", {"crf": "18"}
        s.set_display_rotation(-90)
        for f in shown:
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(f, 1)), format="rgb24")))
        c.mux(s.encode(None))
    r = cli("predict", "default", tmp_path / "upright.mp4", tmp_path / "phone.mp4", "--out", tmp_path / "out",
            "--output", "alpha")
    assert r.exit_code == 0, r.output
    with av.open(str(tmp_path / "out" / "phone.mp4")) as c:
        s = c.streams.video[0]
        assert (s.codec_context.width, s.codec_context.height) == (h, w)
        decoded = list(c.decode(video=0))
        assert len(decoded) == frames and {f.rotation for f in decoded} == {-90}
        phone = [np.rot90(f.to_ndarray(format="rgb24"), -1)[..., 0].astype(int) for f in decoded]
    _, _, _, _, upright = _video_facts(tmp_path / "out" / "upright.mp4")
    for a, b in zip(phone, upright):
        assert a.shape == b.shape[:2] == (h, w)
        # the same matte, up to what two H.264 encodings of the input change (5 of 255 on average here;
        # segmented sideways, as before: 115)
        assert np.abs(a - b[..., 0]).mean() < 12


def _write_clip_with_sound(path: Path, fmt: str, vcodec: str, acodec: str, frames: int = 10, rate: int = 8000) -> Path:
    """A clip of ``frames`` frames at 25 fps (a synthetic portrait) and one second of a 440 Hz tone."""
    base = render("portrait", (64, 48), 2).image
    with av.open(str(path), "w", format=fmt) as c:
        v = c.add_stream(vcodec, rate=Fraction(25))
        v.width, v.height, v.pix_fmt = 48, 64, "yuv420p"
        a = c.add_stream(acodec, rate=rate)
        a.layout = "mono"
        for _ in range(frames):
            c.mux(v.encode(av.VideoFrame.from_ndarray(base, format="rgb24")))
        step, t = a.codec_context.frame_size or 800, 0
        while t < rate:
            tone = np.sin(np.arange(t, t + step) * 2 * np.pi * 440 / rate) * 0.5
            planar = a.format.name.endswith("p") or a.format.name == "flt"
            data = tone.astype(np.float32)[None] if planar else (tone * 30000).astype(np.int16)[None]
            frame = av.AudioFrame.from_ndarray(data, format=a.format.name, layout="mono")
            frame.sample_rate, frame.pts = rate, t
            c.mux(a.encode(frame))
            t += step
        c.mux(a.encode(None))
        c.mux(v.encode(None))
    return path


def _sound(path: Path) -> tuple[str, list[bytes], np.ndarray]:
    """The first audio track: its codec, its packets' bytes and its samples as float (-1..1)."""
    with av.open(str(path)) as c:
        codec = c.streams.audio[0].codec_context.name
        packets = [bytes(p) for p in c.demux(audio=0) if p.size]
    with av.open(str(path)) as c:
        parts = [f.to_ndarray().reshape(-1) for f in c.decode(audio=0)]
    samples = np.concatenate(parts).astype(np.float64)
    return codec, packets, samples / 32768 if np.abs(samples).max() > 2 else samples


def test_a_videos_sound_is_carried_over_as_it_is_or_re_encoded_where_mp4_cannot_hold_it(cli, tmp_path):
    """Background blur of a recording keeps its sound: AAC is copied packet for packet; mu-law from an
    AVI (which MP4 cannot hold) becomes AAC with the same length and loudness. Both used to be dropped."""
    aac = _write_clip_with_sound(tmp_path / "talk.mp4", "mp4", "libx264", "aac", rate=44100)
    mulaw = _write_clip_with_sound(tmp_path / "old.avi", "avi", "mpeg4", "pcm_mulaw")
    r = cli("predict", "default", aac, mulaw, "--out", tmp_path / "out", "--output", "blur")
    assert r.exit_code == 0, r.output
    codec, packets, samples = _sound(aac)
    assert _sound(tmp_path / "out" / "talk.mp4")[:2] == (codec, packets)
    assert _video_facts(tmp_path / "out" / "talk.mp4")[0] == 10
    _, _, before = _sound(mulaw)
    codec, _, after = _sound(tmp_path / "out" / "old.mp4")
    assert codec == "aac" and len(before) == 8000 and abs(len(after) - 8000) <= 1024
    rms = lambda x: float(np.sqrt((x ** 2).mean()))  # noqa: E731
    assert rms(after) == pytest.approx(rms(before), rel=0.05)


def test_a_variable_frame_rate_clip_keeps_each_frames_time_and_its_pixel_aspect_ratio(cli, tmp_path):
    """Phones record at a variable frame rate: each output frame is shown when its source frame is (they
    were written at the average rate: here the frames after a pause came up to 0.2 s early, the sound off
    the picture), and a declared pixel aspect ratio (4:3 here) is kept (it was lost: pictures squeezed)."""
    times_ms = [0, 40, 80, 200, 240, 280, 500, 540]
    image = render("portrait", (32, 48), 4).image
    with av.open(str(tmp_path / "vfr.mp4"), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=Fraction(25))
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
        s.codec_context.time_base, s.codec_context.sample_aspect_ratio = Fraction(1, 1000), Fraction(4, 3)
        for t in times_ms:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    r = cli("predict", "default", tmp_path / "vfr.mp4", "--out", tmp_path / "out", "--output", "overlay")
    assert r.exit_code == 0, r.output
    with av.open(str(tmp_path / "out" / "vfr.mp4")) as c:
        assert c.streams.video[0].sample_aspect_ratio == Fraction(4, 3)
        shown = [round(f.time * 1000) for f in c.decode(video=0)]
    assert shown == times_ms


def test_an_odd_sized_video_keeps_its_size(cli, tmp_path):
    clip = _write_clip(tmp_path / "odd.mp4", frames=3, size=(45, 61))
    r = cli("predict", "default", clip, "--out", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert _video_facts(tmp_path / "out" / "odd.mp4")[:3] == (3, 61, 45)


def test_a_truncated_or_non_video_file_is_one_line_exit_2_and_writes_nothing(cli, tmp_path):
    clip = _write_clip(tmp_path / "clip.mp4", frames=6)
    data = clip.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.mp4").write_text("not a video\n")
    for name in ("cut.mp4", "notes.mp4"):
        line = assert_refused(cli, "predict", "default", tmp_path / name, "--out", tmp_path / "out", watch=(tmp_path,),
                              match="cannot read this video")
        assert name in line


def test_a_killed_video_run_leaves_only_a_staging_folder_that_the_next_run_removes(tmp_path):
    """kill -9 while predict encodes a video: its temporary file is in a staging folder named with the
    process id, and the next predict into that folder removes it (one of a live run is never touched)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    clip = _write_clip(tmp_path / "long.mp4", frames=400, size=(96, 128))
    out = tmp_path / "vout"
    hidden = lambda: [p for p in out.iterdir() if p.name.startswith(".") and p.is_dir()] if out.is_dir() else []  # noqa: E731
    proc = subprocess.Popen([sys.executable, "-m", "edgeseg.cli", "predict", "default", clip, "--out", out,
                             "--output", "blur"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and not hidden():  # the run's temporary folder exists until the video is done
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "predict ended before it could be killed"
    assert hidden()
    Image.fromarray(render("portrait", 48, 1).image).save(tmp_path / "still.png")
    from conftest import run_edgeseg

    r = run_edgeseg("predict", "default", tmp_path / "still.png", "--out", out)
    assert r.returncode == 0, r.stderr
    assert hidden() == [] and sorted(p.name for p in out.iterdir()) == [".edgeseg-predict.json", "still.png"]


# ------------------------------------------------------------------------------------------ eval and bench on clips


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three synthetic portrait clips of 8 frames at 128x128."""
    from conftest import invoke_cli

    out = tmp_path_factory.mktemp("clips") / "clips"
    r = invoke_cli("data", "synth", out, "--clips", "3", "--frames", "8", "--size", "128", "--seed", "3")
    assert r.exit_code == 0, r.output
    return out


def test_eval_on_clips_reports_flicker_and_smooth_reduces_it(cli, clips, tmp_path):
    results = {}
    for smooth in ((), ("--smooth",)):
        r = cli("eval", "--data", clips, *smooth, "--json", tmp_path / f"eval{len(smooth)}.json")
        assert r.exit_code == 0, r.output
        assert "flicker" in r.output
        results[bool(smooth)] = json.loads((tmp_path / f"eval{len(smooth)}.json").read_text())
    raw, smoothed = results[False], results[True]
    assert raw["images"] == 24 and raw["temporal"]["clips"] == 3 and raw["temporal"]["frame_pairs"] == 21
    assert raw["temporal"]["smooth"] is None and smoothed["temporal"]["smooth"]["hold"] == SmoothCfg().hold
    assert 0 < smoothed["temporal"]["flicker"] < raw["temporal"]["flicker"]
    assert smoothed["miou"] > raw["miou"] - 0.01


def test_smooth_needs_clips_and_a_split_dataset_is_not_taken_for_clips(cli, clips, tmp_path):
    assert_refused(cli, "eval", "--smooth", match="not a clip dataset")
    split = tmp_path / "split"
    for name in ("train", "val"):
        (split / name).mkdir(parents=True)
        (split / name / "images").symlink_to(clips / "clip_000" / "images")
        (split / name / "masks").symlink_to(clips / "clip_000" / "masks")
    (split / "classes.txt").write_text((clips / "classes.txt").read_text())
    assert_refused(cli, "eval", "--data", split, "--smooth", match="not a clip dataset")
    r = cli("eval", "--data", split, "--json", tmp_path / "e.json")
    assert r.exit_code == 0, r.output
    assert "temporal" not in json.loads((tmp_path / "e.json").read_text())


def test_bench_clips_reports_each_files_flicker_raw_and_smoothed(cli, shared_export, tmp_path):
    from conftest import copy_export, invoke_cli

    exp = copy_export(shared_export.dir, tmp_path / "exp", keep=[("onnx", "fp32"), ("tflite", "int8")])
    small = tmp_path / "clips"
    assert invoke_cli("data", "synth", small, "--clips", "2", "--frames", "4", "--size", "64").exit_code == 0
    r = cli("bench", exp, "--threads", "1", "--runs", "3", "--warmup", "0", "--sessions", "1", "--parity-images", "2",
            "--clips", small, "--json", tmp_path / "bench.json", "--report", tmp_path / "report")
    assert r.exit_code == 0, r.output
    assert "Flicker on" in r.output and "flicker --smooth" in r.output
    for page in ("report.md", "report.html"):
        assert "Flicker on" in (tmp_path / "report" / page).read_text() and "flicker --smooth" in (tmp_path / "report" / page).read_text()
    block = json.loads((tmp_path / "bench.json").read_text())["temporal"]
    assert (block["clips"], block["frames"]) == (2, 8)
    rows = {row["artifact"]: row for row in block["results"]}
    assert set(rows) == {"pytorch-fp32", *(p.name for p in exp.glob("*-*.onnx")), *(p.name for p in exp.glob("*.tflite"))}
    for row in rows.values():
        for key in ("raw", "smooth"):
            assert 0 <= row[key]["flicker"] <= 1 and 0 <= row[key]["miou"] <= 1


def test_bench_clips_of_other_classes_is_refused_before_timing(cli, shared_export, tmp_path):
    from conftest import copy_export, invoke_cli

    exp = copy_export(shared_export.dir, tmp_path / "exp", keep=[("onnx", "fp32")])
    parts = tmp_path / "clips"
    assert invoke_cli("data", "synth", parts, "--task", "parts", "--clips", "1", "--frames", "2", "--size", "32").exit_code == 0
    assert_refused(cli, "bench", exp, "--threads", "1", "--clips", parts, watch=[tmp_path], match="classes")


def test_predict_smooth_on_a_folder_of_frames_stabilizes_them_in_name_order(cli, clips, tmp_path):
    frames = clips / "clip_001" / "images"
    flicker = {}
    for smooth in ((), ("--smooth",)):
        out = tmp_path / f"out{len(smooth)}"
        assert cli("predict", "default", frames, "--out", out, *smooth).exit_code == 0
        preds = [np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))]
        truth = [np.asarray(Image.open(p)) for p in sorted((clips / "clip_001" / "masks").glob("*.png"))]
        m = FlickerMetrics()
        for p, t in zip(preds, truth):
            m.update(p, t)
        assert m.frames == 8
        flicker[bool(smooth)] = m.flicker()
    assert flicker[True] < flicker[False]


def test_python_api_predicts_a_video_and_streams_frames_through_the_stabilizer(tmp_path):
    import edgeseg
    from edgeseg.errors import DataError

    clip = _write_clip(tmp_path / "clip.mp4", frames=5)
    frames = _video_facts(clip)[4]
    with edgeseg.load("default") as seg:
        written = seg.predict_video(clip, tmp_path / "out", output="alpha", smooth=True)
        assert written == tmp_path / "out" / "clip.mp4" and _video_facts(written)[:4] == (5, 96, 72, 25)
        (tmp_path / "cut.mp4").write_bytes(clip.read_bytes()[:2000])
        with pytest.raises(DataError, match="cannot read this video"):
            seg.predict_video(tmp_path / "cut.mp4", tmp_path / "out2")
        assert not (tmp_path / "out2").exists()
        stream = seg.stream()
        smoothed = [stream.predict(f) for f in frames]
        stream.reset()
        assert np.array_equal(stream.predict(frames[0]), seg.predict(frames[0]))  # a new clip starts afresh
        raw = [seg.predict(f) for f in frames]
    assert smoothed[0].shape == (72, 96) and np.array_equal(smoothed[0], raw[0])  # the first frame is not blended


def _write_mkv(path: Path, frames: int = 12, size=(96, 128)) -> Path:
    """An H.264 Matroska file: the container keeps no frame count, only its duration."""
    h, w = size
    with av.open(str(path), mode="w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            image = np.full((h, w, 3), (i * 20) % 256, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("keep", [0.66, 0.85])
def test_a_truncated_mkv_is_reported_exit_2_and_writes_nothing(cli, tmp_path, keep):
    """MKV/WebM keep no frame count: a cut file wrote a short video (exit 0), or, with no frame left, failed
    with a FileNotFoundError traceback (exit 1). It opens, so it fails as it is read: reported and skipped."""
    whole = _write_mkv(tmp_path / "whole.mkv")
    data = whole.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * keep)])
    r = cli("predict", "default", cut, "--out", tmp_path / "out")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    skipped = next(line for line in r.output.splitlines() if line.startswith("skipped "))
    assert f"{cut}: " in skipped and ("truncated: only" in skipped or "no frame could be decoded" in skipped), skipped
    assert "1 of 1 inputs could not be read" in r.output
    assert not (tmp_path / "out").exists()  # the folder predict made is gone with the half-written video
    r = cli("predict", "default", whole, "--out", tmp_path / "ok")  # the whole file: all 12 frames
    assert r.exit_code == 0, r.output
    assert _video_facts(tmp_path / "ok" / "whole.mp4")[0] == 12


def test_re_encoded_sound_that_starts_before_the_picture_stays_on_it(cli, tmp_path):
    """A MOV whose mu-law sound starts 0.5 s before its first frame: the sound from before the picture was kept
    and everything after it came 0.5 s late (1.5 s of sound under 1 s of video)."""
    path = tmp_path / "early.mov"
    image = render("portrait", (32, 32), 3).image
    with av.open(str(path), "w", format="mov") as c:
        v = c.add_stream("libx264", rate=Fraction(25))
        v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        v.codec_context.time_base = Fraction(1, 25)
        a = c.add_stream("pcm_mulaw", rate=8000)
        a.layout = "mono"
        for t in range(0, 12000, 800):  # 0 - 1.5 s
            tone = (np.sin(np.arange(t, t + 800) * 2 * np.pi * 440 / 8000) * 15000).astype(np.int16)[None]
            frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
            frame.sample_rate, frame.pts = 8000, t
            c.mux(a.encode(frame))
        for i in range(12, 37):  # 0.5 - 1.5 s
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            c.mux(v.encode(frame))
        c.mux(a.encode(None))
        c.mux(v.encode(None))
    r = cli("predict", "default", path, "--out", tmp_path / "out", "--output", "alpha")
    assert r.exit_code == 0, r.output
    codec, _, samples = _sound(tmp_path / "out" / "early.mp4")
    assert codec == "aac" and abs(len(samples) - 8000) <= 1024  # 1 s of sound under 1 s of picture (AAC: whole frames)


def test_a_frame_of_another_shape_is_a_data_error_and_nothing_is_written(tmp_path):
    """A display rotation that changes part-way gave a frame of the other shape: PyAV stretched it silently."""
    from edgeseg.errors import DataError

    with pytest.raises(DataError, match="its size or display rotation changes part-way"):
        with video_writer(tmp_path / "v.mp4", 64, 48, Fraction(25)) as writer:
            writer.write(np.zeros((48, 64, 3), np.uint8))
            writer.write(np.zeros((64, 48, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []

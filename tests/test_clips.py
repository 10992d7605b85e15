"""Tests for synthetic video clips and clip datasets (edgeseg.data.clips)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from edgeseg.data import clips, synth
from edgeseg.errors import DataError

SIZE = 48
FRAMES = 5


@pytest.fixture(scope="module")
def parts_clip():
    return clips.render_clip("parts", SIZE, FRAMES, 3)


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        x.image.tobytes() == y.image.tobytes() and x.mask.tobytes() == y.mask.tobytes() for x, y in zip(a, b))


# ---------------------------------------------------------------------------- rendering


def test_same_seed_is_bit_identical_and_another_seed_differs(parts_clip):
    assert _same(parts_clip, clips.render_clip("parts", SIZE, FRAMES, 3))
    other = clips.render_clip("parts", SIZE, FRAMES, 4)
    assert all(a.image.tobytes() != b.image.tobytes() and a.mask.tobytes() != b.mask.tobytes()
               for a, b in zip(parts_clip, other))


def test_a_longer_clip_starts_with_the_shorter_one(parts_clip):
    assert _same(parts_clip, clips.render_clip("parts", SIZE, FRAMES + 2, 3)[:FRAMES])


def test_shapes_classes_and_attrs():
    frames = clips.render_clip("parts", (40, 56), 3, 11)
    assert len(frames) == 3
    for sample in frames:
        assert sample.image.shape == (40, 56, 3) and sample.image.dtype == np.uint8
        assert sample.mask.shape == (40, 56) and sample.mask.dtype == np.uint8
        assert sample.mask.max() < len(synth.PARTS_CLASSES)
        assert sample.attrs == frames[0].attrs and tuple(sample.attrs) == synth.SLICE_KEYS
        assert all(v in synth.SLICE_VALUES[k] and v != synth.NO_PERSON for k, v in sample.attrs.items())


def test_portrait_masks_are_parts_foreground_of_the_same_frames(parts_clip):
    portrait = clips.render_clip("portrait", SIZE, FRAMES, 3)
    for p, q in zip(portrait, parts_clip):
        assert np.array_equal(p.image, q.image)
        assert np.array_equal(p.mask, (q.mask > 0).astype(np.uint8))


@pytest.mark.parametrize("seed", range(6))
def test_the_person_moves_a_little_in_every_frame(seed):
    frames = clips.render_clip("portrait", SIZE, 6, seed)
    assert all(s.mask.any() for s in frames)  # always a person
    changed = [np.mean(a.mask != b.mask) for a, b in zip(frames, frames[1:])]
    assert all(0 < c < 0.1 for c in changed), changed
    assert np.mean(changed) < 0.05, changed


def _still_pose(**changes) -> clips._Pose:
    pose = clips._Pose(shift=(0.0, 0.0), tilt=0.0, zoom=1.0, swing=(0.0, 0.0), camera=(0, 0), gain=1.0)
    return dataclasses.replace(pose, **changes)


@pytest.fixture(scope="module")
def scene():
    return clips._build_scene(np.random.default_rng(5), SIZE, SIZE)


def test_textures_stick_to_the_person(scene):
    """The same pose draws the same frame, and moving the subject moves its pixels unchanged."""
    rgb0, labels0 = (np.asarray(im) for im in clips._compose_frame(scene, _still_pose()))
    again = clips._compose_frame(scene, _still_pose())
    assert rgb0.tobytes() == np.asarray(again[0]).tobytes()
    rgb1, labels1 = (np.asarray(im) for im in clips._compose_frame(scene, _still_pose(shift=(4.0, 0.0))))
    person = (labels0[:, :-4] != synth.BG) & (labels0[:, :-4] != synth.OCCLUDER)
    assert person.sum() > 100
    assert np.array_equal(labels1[:, 4:][person], labels0[:, :-4][person])
    assert np.array_equal(rgb1[:, 4:][person], rgb0[:, :-4][person])


def test_camera_shake_moves_the_whole_frame(scene):
    rgb0, labels0 = (np.asarray(im) for im in clips._compose_frame(scene, _still_pose()))
    rgb1, labels1 = (np.asarray(im) for im in clips._compose_frame(scene, _still_pose(camera=(2, -1))))
    assert np.array_equal(rgb1[1:, :-2], rgb0[:-1, 2:])
    assert np.array_equal(labels1[1:, :-2], labels0[:-1, 2:])


def test_frames_never_show_where_the_figure_is_cut_off():
    """Every frame corner maps inside the person canvas (legs run off it)."""
    for size, seed in [((40, 96), 0), ((96, 40), 1), (SIZE, 2)]:
        rng = np.random.default_rng(seed)
        scene = clips._build_scene(rng, *reversed(synth._parse_size(size)))
        motion = clips._sample_motion(rng, min(scene.size))
        width, height = scene.size[0] + 2 * scene.pad, scene.size[1] + 2 * scene.pad
        for t in range(0, 200, 7):
            a, b, c, d, e, f = clips._person_transform(scene, motion.pose(t))
            for x in (0, scene.size[0]):
                for y in (0, scene.size[1]):
                    assert 0 <= a * x + b * y + c <= width and 0 <= d * x + e * y + f <= height


def test_arm_swing_changes_the_arms_and_no_random_draw():
    fig = synth._sample_figure(np.random.default_rng(0), 160, 160, "short")
    drawn = []
    for swing in [(0.0, 0.0), (20.0, -20.0)]:
        rng, labels = np.random.default_rng(9), Image.new("L", (160, 160))
        synth._draw_person(rng, ImageDraw.Draw(labels), fig, swing=swing)
        drawn.append((np.asarray(labels), rng.bit_generator.state))
    (still, state0), (swung, state1) = drawn
    assert state0 == state1 and not np.array_equal(still, swung)
    rng, labels = np.random.default_rng(9), Image.new("L", (160, 160))
    synth._draw_person(rng, ImageDraw.Draw(labels), fig)  # the default is no swing
    assert np.array_equal(np.asarray(labels), still)


# ---------------------------------------------------------------------------- writing and reading


def test_write_clips_layout_reads_back_with_open_clips(tmp_path):
    out = tmp_path / "clips"
    assert clips.write_clips(out, "parts", 2, 4, (40, 48), seed=7) == out
    assert sorted(p.name for p in out.iterdir()) == [clips.CLIPS_MARKER, "classes.txt", "clip_000", "clip_001"]
    marker = json.loads((out / clips.CLIPS_MARKER).read_text())
    digests = marker.pop("sha256")  # of every file written, so a rerun can tell the user's edits
    assert marker == {"task": "parts", "clips": 2, "frames": 4, "size": [40, 48], "seed": 7}
    on_disk = {rel: sha for rel, sha in synth.file_digests(out).items() if rel != clips.CLIPS_MARKER}
    assert len(digests) == 1 + 2 * 2 * 4 and digests == on_disk
    frame_names = [f"frame_{t:04d}.png" for t in range(4)]
    for sub in ("images", "masks"):
        assert sorted(p.name for p in (out / "clip_001" / sub).iterdir()) == frame_names
    assert clips.is_clip_dataset(out)
    classes, found = clips.open_clips(out)
    assert classes == synth.PARTS_CLASSES
    assert [c.name for c in found] == ["clip_000", "clip_001"]
    for k, clip in enumerate(found):
        expected = clips.render_clip("parts", (40, 48), 4, synth.sample_seed(7, k))
        assert len(clip.source) == 4 and clip.source.classes == synth.PARTS_CLASSES
        for t, sample in enumerate(expected):
            image, mask, frame_id = clip.source.get(t)
            assert frame_id == f"frame_{t:04d}"
            assert np.array_equal(image, sample.image) and np.array_equal(mask, sample.mask)
    with Image.open(out / "clip_000" / "masks" / frame_names[0]) as im:
        assert im.mode == "L"


def test_write_clips_replaces_its_own_earlier_output(tmp_path):
    out = tmp_path / "clips"
    clips.write_clips(out, "parts", 3, 3, 32, seed=1)
    clips.write_clips(out, "portrait", 1, 2, 32, seed=0)
    assert sorted(p.name for p in out.iterdir()) == [clips.CLIPS_MARKER, "classes.txt", "clip_000"]
    assert (out / "classes.txt").read_text().splitlines() == list(synth.PORTRAIT_CLASSES)
    assert len(list((out / "clip_000" / "images").iterdir())) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["clips"]  # no staging folder left behind


def test_write_clips_into_an_empty_folder(tmp_path):
    out = tmp_path / "clips"
    out.mkdir()
    clips.write_clips(out, "portrait", 1, 2, 32, seed=0)
    assert (out / "clip_000" / "masks" / "frame_0001.png").is_file()


@pytest.mark.parametrize("user_file", ["notes.txt", "clip_000/images/frame_0000.png", "classes.txt"])
def test_write_clips_refuses_a_users_folder_and_changes_nothing(tmp_path, user_file):
    from conftest import tree_state

    out = tmp_path / "mine"
    (out / user_file).parent.mkdir(parents=True, exist_ok=True)
    (out / user_file).write_text("mine")
    before = tree_state(tmp_path)
    with pytest.raises(DataError, match="choose an empty or new folder") as info:
        clips.write_clips(out, "portrait", 1, 2, 32, seed=0)
    assert "\n" not in str(info.value) and user_file.split("/")[0] in str(info.value)
    assert tree_state(tmp_path) == before


def test_write_clips_refuses_its_output_with_a_users_file_added(tmp_path):
    from conftest import tree_state

    out = tmp_path / "clips"
    clips.write_clips(out, "portrait", 1, 2, 32, seed=0)
    (out / "clip_000" / "images" / "holiday.jpg").write_bytes(b"mine")
    before = tree_state(tmp_path)
    with pytest.raises(DataError, match="holiday.jpg|clip_000"):
        clips.write_clips(out, "portrait", 1, 2, 32, seed=0)
    assert tree_state(tmp_path) == before


def test_write_clips_refuses_its_output_with_a_frame_the_user_changed(tmp_path):
    out = tmp_path / "clips"
    clips.write_clips(out, "portrait", 1, clips.MIN_FRAMES, 32, seed=0)
    frame = next((out / "clip_000" / "masks").iterdir())
    frame.write_bytes(frame.read_bytes() + b"\0")
    with pytest.raises(DataError, match=f"clip_000/masks/{frame.name} changed since"):
        clips.write_clips(out, "portrait", 1, clips.MIN_FRAMES, 32, seed=1)
    assert frame.read_bytes().endswith(b"\0")


def test_write_clips_and_write_dataset_do_not_replace_each_other(tmp_path):
    stills, videos = tmp_path / "stills", tmp_path / "videos"
    synth.write_dataset(stills, "portrait", 1, 32, seed=0)
    clips.write_clips(videos, "portrait", 1, 2, 32, seed=0)
    with pytest.raises(DataError, match="without --clips"):
        clips.write_clips(stills, "portrait", 1, 2, 32, seed=0)
    with pytest.raises(DataError, match="choose an empty or new folder"):
        synth.write_dataset(videos, "portrait", 1, 32, seed=0)


@pytest.mark.parametrize("task, n, frames, size, seed, match", [
    ("faces", 1, 2, 32, 0, "faces"),
    ("portrait", 0, 2, 32, 0, "clip count"),
    ("portrait", 1.5, 2, 32, 0, "clip count"),
    ("portrait", 1, 1, 32, 0, "frames"),
    ("portrait", 1, "4", 32, 0, "frames"),
    ("portrait", 1, 2, 8, 0, "size"),
    ("portrait", 1, 2, 32, -1, "seed"),
])
def test_bad_arguments_raise_before_writing(tmp_path, task, n, frames, size, seed, match):
    with pytest.raises(DataError, match=match) as info:
        clips.write_clips(tmp_path / "clips", task, n, frames, size, seed)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_render_clip_checks_its_arguments():
    with pytest.raises(DataError, match="frames"):
        clips.render_clip("portrait", 32, 1, 0)
    with pytest.raises(DataError, match="faces"):
        clips.render_clip("faces", 32, 2, 0)


def test_cli_writes_clips(tmp_path, cli):
    out = tmp_path / "clips"
    result = cli("data", "synth", out, "--clips", "2", "--frames", "3", "--size", "32", "--task", "parts")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote 2 parts clips x 3 frames (32x32) to {out}"
    classes, found = clips.open_clips(out)
    assert classes == synth.PARTS_CLASSES and [len(c.source) for c in found] == [3, 3]


def test_cli_frames_default_to_24(tmp_path, cli, monkeypatch):
    calls = []
    monkeypatch.setattr(clips, "write_clips", lambda *args: calls.append(args) or args[0])
    assert cli("data", "synth", tmp_path / "c", "--clips", "1", "--size", "32").exit_code == 0
    assert calls == [(str(tmp_path / "c"), "portrait", 1, 24, 32, 0)]


@pytest.mark.parametrize("args, match", [
    (["--frames", "3"], "--frames applies only with --clips"),
    (["--clips", "1", "--count", "5"], "--count does not apply with --clips"),
    (["--clips", "1", "--frames", "1"], "--frames"),
])
def test_cli_refuses_flags_that_do_not_combine(tmp_path, cli, args, match):
    from conftest import assert_refused

    assert_refused(cli, "data", "synth", tmp_path / "out", "--size", "32", *args, watch=[tmp_path], match=match)


@pytest.fixture
def written(tmp_path):
    root = tmp_path / "clips"
    clips.write_clips(root, "portrait", 2, 3, 32, seed=0)
    return root


def test_open_clips_takes_matching_classes_and_refuses_others(written):
    assert clips.open_clips(written, synth.PORTRAIT_CLASSES)[0] == synth.PORTRAIT_CLASSES
    with pytest.raises(DataError, match=r"\[background, person\] but the model predicts \[background, hair, skin") as info:
        clips.open_clips(written, synth.PARTS_CLASSES)
    assert "\n" not in str(info.value) and "make them agree" not in str(info.value)


def test_open_clips_without_classes_txt(written):
    (written / "classes.txt").unlink()
    with pytest.raises(DataError, match="no classes.txt"):
        clips.open_clips(written)
    assert clips.open_clips(written, ("bg", "fg"))[0] == ("bg", "fg")


def test_open_clips_refuses_a_frame_without_its_mask(written):
    (written / "clip_001" / "masks" / "frame_0001.png").unlink()
    with pytest.raises(DataError, match="clip 'clip_001'.*frame_0001.*needs a mask") as info:
        clips.open_clips(written)
    assert "\n" not in str(info.value)


def test_open_clips_refuses_a_clip_without_masks_folder(written):
    for p in (written / "clip_000" / "masks").iterdir():
        p.unlink()
    (written / "clip_000" / "masks").rmdir()
    with pytest.raises(DataError, match="clip 'clip_000'.*no masks/ folder"):
        clips.open_clips(written)


@pytest.mark.parametrize("keep, found", [(0, "no frames"), (1, "only 1 frame")])
def test_open_clips_refuses_short_clips(written, keep, found):
    for sub in ("images", "masks"):
        for p in sorted((written / "clip_000" / sub).iterdir())[keep:]:
            p.unlink()
    with pytest.raises(DataError, match=f"clip 'clip_000'.*{found}.*at least 2 frames"):
        clips.open_clips(written)


def test_open_clips_orders_frames_by_file_name(tmp_path):
    root = tmp_path / "real"
    frames = clips.render_clip("portrait", 32, 3, 0)
    for name, sample in zip(["b", "c", "a"], frames):
        for sub, array, mode in (("images", sample.image, "RGB"), ("masks", sample.mask, "L")):
            (root / "walk" / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array, mode).save(root / "walk" / sub / f"{name}.png")
    (root / ".hidden" / "images").mkdir(parents=True)  # e.g. a staging folder: not a clip
    classes, found = clips.open_clips(root, ("background", "person"))
    assert [c.name for c in found] == ["walk"]
    assert [found[0].source.get(i)[2] for i in range(3)] == ["a", "b", "c"]
    assert np.array_equal(found[0].source.get(0)[0], frames[2].image)


def test_is_clip_dataset(tmp_path, written):
    assert clips.is_clip_dataset(written)
    assert not clips.is_clip_dataset(written / "clip_000")  # an ordinary dataset: it has images/
    assert not clips.is_clip_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert not clips.is_clip_dataset(tmp_path / "empty")
    with pytest.raises(DataError, match="not a clip dataset"):
        clips.open_clips(written / "clip_000")
    with pytest.raises(DataError, match="not found"):
        clips.open_clips(tmp_path / "missing")

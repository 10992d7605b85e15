"""edgeseg predict on real files: every output mode, odd sizes, EXIF, RGBA/gray/16-bit, corrupt and
oversized inputs, output ownership (never a user's file), and peak memory per pixel."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeseg.apply.predict import LEDGER_NAME
from edgeseg.data import synth

from conftest import ROOT, assert_refused, one_line_error, prefetched, run_command


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    s = synth.render("portrait", (90, 70), 3)  # odd size, not the model's
    Image.fromarray(s.image).save(d / "odd.png")
    Image.fromarray(s.image).convert("L").save(d / "gray.png")
    Image.fromarray(s.image).convert("RGBA").save(d / "rgba.png")
    Image.fromarray((s.image[..., 0].astype(np.uint16) * 257)).save(d / "deep16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    Image.fromarray(s.image).save(d / "exif.jpg", exif=exif.tobytes())
    return d


@pytest.mark.parametrize("mode", ["mask", "alpha", "cutout", "blur", "replace", "overlay"])
def test_each_output_mode_writes_full_size_png(cli, tiny_checkpoint, photos, tmp_path, mode):
    bg = tmp_path / "bg.png"
    Image.fromarray(np.full((40, 50, 3), (0, 255, 0), np.uint8)).save(bg)
    args = ["predict", tiny_checkpoint, photos / "odd.png", "--out", tmp_path / "o", "--output", mode]
    if mode == "replace":
        args += ["--background", bg]
    res = cli(*args)
    assert res.exit_code == 0, res.output
    out = Image.open(tmp_path / "o" / "odd.png")
    assert out.size == (70, 90)
    assert out.mode == {"mask": "P", "alpha": "L", "cutout": "RGBA", "blur": "RGB", "replace": "RGB", "overlay": "RGB"}[mode]
    if mode == "mask":
        assert set(np.unique(np.asarray(out))) <= {0, 1}


def test_input_kinds_and_exif(cli, tiny_checkpoint, photos, tmp_path):
    res = cli("predict", tiny_checkpoint, photos, "--out", tmp_path / "o", "--output", "alpha")
    assert res.exit_code == 0, res.output
    for name in ("odd", "gray", "rgba", "deep16"):
        assert Image.open(tmp_path / "o" / f"{name}.png").size == (70, 90)
    assert Image.open(tmp_path / "o" / "exif.png").size == (90, 70)  # EXIF orientation applied


def test_corrupt_image_is_reported_and_the_rest_processed(cli, tiny_checkpoint, photos, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    Image.open(photos / "odd.png").save(folder / "good.png")
    res = cli("predict", tiny_checkpoint, folder, "--out", tmp_path / "o")
    assert res.exit_code == 2
    assert "skipped" in res.output and "broken.jpg" in res.output and "1 of 2 inputs" in res.output
    assert res.output.count("broken.jpg") == 1  # the reason does not repeat the path the line starts with
    assert (tmp_path / "o" / "good.png").is_file() and not (tmp_path / "o" / "broken.png").exists()


def test_predict_with_exported_file_matches_checkpoint(cli, tiny_checkpoint, shared_export, photos, tmp_path):
    assert cli("predict", shared_export.dir / "tiny-fp32.onnx", photos / "odd.png", "--out", tmp_path / "a").exit_code == 0
    assert cli("predict", tiny_checkpoint, photos / "odd.png", "--out", tmp_path / "b").exit_code == 0
    a = np.asarray(Image.open(tmp_path / "a" / "odd.png"))
    b = np.asarray(Image.open(tmp_path / "b" / "odd.png"))
    assert (a == b).mean() > 0.999


def test_predict_with_a_file_that_failed_parity_at_export_warns(cli, shared_export, photos, tmp_path):
    """A file whose export exited 1 (parity failed) was used without a word."""
    from conftest import copy_export

    export = copy_export(shared_export.dir, tmp_path / "e", keep=[("onnx", "fp32"), ("onnx", "int8")])
    raw = json.loads((export / "manifest.json").read_text())
    int8 = next(a for a in raw["artifacts"] if a["precision"] == "int8")
    int8["parity"].update(passed=False, agreement_miou=0.5)
    (export / "manifest.json").write_text(json.dumps(raw))
    res = cli("predict", export / "tiny-int8.onnx", photos / "odd.png", "--out", tmp_path / "a")
    assert res.exit_code == 0 and (tmp_path / "a" / "odd.png").is_file()
    assert (f"warning: {export / 'tiny-int8.onnx'} failed its parity gate at export (parity agreement 0.5 below "
            f"{int8['parity']['threshold']})") in res.output
    res = cli("predict", export, photos / "odd.png", "--out", tmp_path / "b")  # the folder: the file that passed
    assert res.exit_code == 0 and "warning" not in res.output


def test_replace_without_background_exits_2(cli, tiny_checkpoint, photos, tmp_path):
    res = cli("predict", tiny_checkpoint, photos / "odd.png", "--out", tmp_path / "o", "--output", "replace")
    assert res.exit_code == 2 and "--background" in one_line_error(res.output)


def test_a_background_for_another_output_and_a_folder_without_images_are_refused_with_the_fix(cli, tiny_checkpoint,
                                                                                                photos, tmp_path):
    """--background was silently ignored by --output mask; 'no images found' did not say which files it reads."""
    res = cli("predict", tiny_checkpoint, photos / "odd.png", "--out", tmp_path / "o", "--background", photos / "odd.png")
    assert res.exit_code == 2 and "--background is used only by --output replace, not --output mask" in res.output
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.heic").write_bytes(b"\0\0\0\x18ftypheic")
    res = cli("predict", tiny_checkpoint, tmp_path / "notes", "--out", tmp_path / "o")
    assert res.exit_code == 2 and ".jpg .jpeg .png" in one_line_error(res.output) and "HEIC" in res.output
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------
# ownership: edgeseg only replaces what it wrote
# ----------------------------------------------------------------------------------------------


def _folder(root: Path, photos: Path, *names: str) -> Path:
    """A folder holding copies of the odd-sized photo under ``names`` (sub/paths allowed, any image suffix)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.open(photos / "odd.png").convert("RGB").save(root / name)
    return root


def test_many_outputs_are_installed_in_batches_each_listed_with_its_sha256(cli, tiny_checkpoint, photos, tmp_path):
    """The ledger was rewritten after every file (quadratic: 2.3 ms a file at 3000); files now wait in the
    staging folder and are listed and renamed in batches, the last one when the run ends."""
    from edgeseg.apply.predict import read_ledger
    from edgeseg.fsutil import sha256_file

    names = [f"p{i:03d}.png" for i in range(70)]  # more than one batch of 64
    folder = _folder(tmp_path / "photos", photos, *names)
    res = cli("predict", tiny_checkpoint, folder, "--out", tmp_path / "o")
    assert res.exit_code == 0 and "wrote 70 mask images" in res.output, res.output
    ledger = read_ledger(tmp_path / "o")
    assert sorted(ledger) == names and all(sha256_file(tmp_path / "o" / n) == sha for n, sha in ledger.items())
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted([*names, LEDGER_NAME])  # no staging left


def test_out_equal_to_the_input_folder_is_refused_and_originals_kept(cli, tiny_checkpoint, photos, tmp_path):
    folder = _folder(tmp_path / "photos", photos, "a.png", "b.jpg")
    line = assert_refused(cli, "predict", tiny_checkpoint, folder, "--out", folder, watch=[folder],
                          match="is the input folder")
    assert str(folder) in line


def test_an_output_on_an_input_file_is_refused_even_with_force(cli, tiny_checkpoint, photos, tmp_path):
    folder = _folder(tmp_path / "photos", photos, "a.png")
    for extra in ((), ("--force",)):
        line = assert_refused(cli, "predict", tiny_checkpoint, folder / "a.png", "--out", folder, *extra,
                              watch=[folder], match="would write over input")
        assert "a.png" in line


def test_inputs_sharing_an_output_name_are_refused_naming_both(cli, tiny_checkpoint, photos, tmp_path):
    folder = _folder(tmp_path / "photos", photos, "a.jpg", "a.png", "b.png")
    out = tmp_path / "out"
    line = assert_refused(cli, "predict", tiny_checkpoint, folder, "--out", out, watch=[folder, out],
                          match="would both be written to a.png")
    assert "a.jpg" in line and str(folder / "a.png") in line
    # files given one by one from two folders clash the same way
    other = _folder(tmp_path / "other", photos, "b.jpg")
    assert_refused(cli, "predict", tiny_checkpoint, folder / "b.png", other / "b.jpg", "--out", out,
                   watch=[folder, other, out], match="would both be written to b.png")


def test_sub_folders_are_mirrored(cli, tiny_checkpoint, photos, tmp_path):
    folder = _folder(tmp_path / "photos", photos, "a.jpg", "sub/a.jpg", "sub/deeper/c.png")
    res = cli("predict", tiny_checkpoint, folder, "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "wrote 3" in res.output
    for name in ("a.png", "sub/a.png", "sub/deeper/c.png"):
        assert Image.open(tmp_path / "out" / name).size == (70, 90)


def test_out_inside_an_input_folder_is_refused_and_every_input_is_read_elsewhere(cli, photos, tmp_path):
    """Outputs never go among the inputs: an --out inside an input folder would skip the photos under it
    and mix masks into the user's folder (read back as photos by the next run)."""
    folder = _folder(tmp_path / "photos", photos, "a.jpg", "b.png", "trip/c.jpg")
    for out in (folder / "trip", folder / "masks", folder / "trip" / "deeper"):
        line = assert_refused(cli, "predict", "default", folder, "--out", out, watch=[tmp_path],
                              match="is inside the input folder")
        assert str(out) in line and str(folder) in line
    # nor through a mirrored sub-folder: photos/photos/d.jpg with --out above photos lands in photos/
    _folder(folder, photos, "photos/d.jpg")
    assert_refused(cli, "predict", "default", folder, "--out", tmp_path, watch=[tmp_path],
                   match="would write photos/d.png into the input folder")
    (folder / "photos" / "d.jpg").unlink()
    (folder / "photos").rmdir()
    res = cli("predict", "default", folder, "--out", tmp_path / "masks")
    assert res.exit_code == 0 and "wrote 3 mask images" in res.output, res.output
    assert sorted(p.relative_to(tmp_path / "masks").as_posix() for p in (tmp_path / "masks").rglob("*")) == \
        sorted([LEDGER_NAME, "a.png", "b.png", "trip", "trip/c.png"])


def test_out_inside_an_input_folder_under_another_name_is_refused_too(photos, tmp_path):
    """The check compared resolved paths, which a case-insensitive file system (macOS, Windows: PHOTOS/masks for
    photos/) or a bind mount spells differently; it compares file identity now (a bind mount stands in here)."""
    import os
    import subprocess

    from edgeseg.apply.predict import plan_predict
    from edgeseg.errors import EdgesegError

    folder = _folder(tmp_path / "photos", photos, "a.jpg")
    alias = tmp_path / "PHOTOS"
    alias.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", str(folder), str(alias)], capture_output=True).returncode:
        pytest.skip("another name for the same folder needs a bind mount (root)")
    try:
        with pytest.raises(EdgesegError, match="is inside the input folder"):
            plan_predict([folder], alias / "masks")
        with pytest.raises(EdgesegError, match="is the input folder"):
            plan_predict([folder], alias)
    finally:
        subprocess.run(["umount", str(alias)], capture_output=True)


def test_a_full_disk_leaves_no_output_folder_and_no_temporary_file(cli, tmp_path, small_disk):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)).save(tmp_path / "noise.png")  # ~640 KB as RGBA
    res = cli("predict", "default", tmp_path / "noise.png", "--out", small_disk / "out" / "cut", "--output", "cutout")
    assert res.exit_code == 2
    line = one_line_error(res.stderr)
    assert "No space left on device" in line and str(small_disk / "out" / "cut" / "noise.png") in line
    assert list(small_disk.iterdir()) == []  # the folders it made are gone, and no staging folder stays


def test_rerun_into_the_same_out_replaces_only_its_own_files(cli, tiny_checkpoint, photos, tmp_path):
    folder = _folder(tmp_path / "photos", photos, "a.jpg", "sub/b.png")
    out = tmp_path / "out"
    for output in ("mask", "alpha"):  # the second run replaces the first run's files (the ledger lists them)
        res = cli("predict", tiny_checkpoint, folder, "--out", out, "--output", output)
        assert res.exit_code == 0, res.output
        assert Image.open(out / "sub" / "b.png").mode == {"mask": "P", "alpha": "L"}[output]
    ledger = json.loads((out / LEDGER_NAME).read_text())["files"]
    assert set(ledger) == {"a.png", "sub/b.png"}
    # a file the user changed since is no longer edgeseg's: refused, then replaced with --force
    Image.new("RGB", (5, 5), "red").save(out / "a.png")
    line = assert_refused(cli, "predict", tiny_checkpoint, folder, "--out", out, watch=[folder, out],
                          match="not written by edgeseg predict")
    assert str(out / "a.png") in line and "--force" in line
    res = cli("predict", tiny_checkpoint, folder, "--out", out, "--force")
    assert res.exit_code == 0, res.output
    assert Image.open(out / "a.png").size == (70, 90)


def test_existing_user_files_in_out_are_refused_before_the_model_loads(cli, photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "odd.png").write_bytes(b"my own picture")
    (out / "notes.txt").write_text("kept")
    missing_model = tmp_path / "no-such-model.pt"  # refused on the outputs first: the model is never opened
    line = assert_refused(cli, "predict", missing_model, photos / "odd.png", "--out", out, watch=[out, photos],
                          match="1 existing file(s)")
    assert str(out / "odd.png") in line


def test_a_ledger_that_is_not_ours_is_refused(cli, tiny_checkpoint, photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LEDGER_NAME).write_text("not json")
    assert_refused(cli, "predict", tiny_checkpoint, photos / "odd.png", "--out", out, watch=[out],
                   match="is not an edgeseg predict ledger")


def test_unwritable_out_is_refused(cli, tiny_checkpoint, photos, tmp_path, read_only_dir):
    assert_refused(cli, "predict", tiny_checkpoint, photos / "odd.png", "--out", read_only_dir / "out",
                   watch=[read_only_dir], match="not writable")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_refused(cli, "predict", tiny_checkpoint, photos / "odd.png", "--out", blocker / "out",
                   watch=[tmp_path], match="is a file")


# ----------------------------------------------------------------------------------------------
# oversized images: skipped like corrupt ones, the batch goes on
# ----------------------------------------------------------------------------------------------


def _png_bomb(path: Path, width: int, height: int) -> None:
    """A 1-bit black PNG of width x height: a few KB on disk, width * height pixels when decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_decompression_bomb_is_skipped_and_the_rest_written(cli, tiny_checkpoint, photos, tmp_path):
    folder = _folder(tmp_path / "in", photos, "good.png")
    _png_bomb(folder / "bomb.png", 20000, 20000)  # 400 MP: over twice Pillow's limit, Pillow refuses to open it
    res = cli("predict", tiny_checkpoint, folder, "--out", tmp_path / "o")
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    skipped = [ln for ln in res.stderr.splitlines() if ln.startswith("skipped")]
    assert len(skipped) == 1 and "bomb.png" in skipped[0]
    assert f"{20000 * 20000} pixels" in skipped[0] and f"limit of {Image.MAX_IMAGE_PIXELS} pixels" in skipped[0]
    assert "1 of 2 inputs" in res.stderr
    assert (tmp_path / "o" / "good.png").is_file() and not (tmp_path / "o" / "bomb.png").exists()


def test_image_over_the_pixel_limit_is_skipped_before_decoding(cli, tiny_checkpoint, photos, tmp_path, monkeypatch):
    """Between the limit and twice it Pillow only warns: edgeseg refuses there too, naming the size."""
    folder = _folder(tmp_path / "in", photos, "good.png")  # 90 x 70 = 6300 pixels
    Image.new("RGB", (100, 120)).save(folder / "big.png")  # 12000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10000)
    res = cli("predict", tiny_checkpoint, folder, "--out", tmp_path / "o")
    assert res.exit_code == 2, res.output
    assert "big.png: image of 100x120 = 12000 pixels is over the limit of 10000 pixels" in res.stderr
    assert (tmp_path / "o" / "good.png").is_file() and not (tmp_path / "o" / "big.png").exists()


# ----------------------------------------------------------------------------------------------
# memory: peak RSS grows by a bounded number of bytes per pixel (never a bound on time)
# ----------------------------------------------------------------------------------------------

MAX_BYTES_PER_PIXEL = 80  # measured 40-44 B/px here (25-27 at 8000x6000): benchmarks/predict_memory.py


@prefetched("predict_memory", seconds=13)
def _measure_predict_memory(prefetch, folder):
    """--output blur --refine (the heaviest mode) and replace, 1500x1000, each in a fresh process (run ahead,
    see conftest.prefetched: peak memory is each process's own, whatever else runs)."""
    res = run_command([sys.executable, ROOT / "benchmarks" / "predict_memory.py", "--model", prefetch.get("tiny_checkpoint"),
                       "--size", "1500x1000", "--output", "blur", "--output", "replace", "--refine", "on",
                       "--workdir", folder, "--json", folder / "memory.json"])
    assert res.returncode == 0, res.stderr
    return json.loads((folder / "memory.json").read_text())


@pytest.fixture
def predict_memory(prefetch):
    return prefetch.get("predict_memory")


def test_peak_memory_per_pixel_is_bounded(predict_memory):
    """--output blur --refine (the heaviest mode) and replace, 1500x1000, each in a fresh process."""
    results = predict_memory["results"]
    assert [r["output"] for r in results] == ["blur", "replace"]
    for r in results:
        assert r["width"] * r["height"] == 1500 * 1000
        assert r["bytes_per_pixel"] < MAX_BYTES_PER_PIXEL, r


def test_artifact_option_for_a_checkpoint_is_refused(tiny_checkpoint, tmp_path, cli):
    from conftest import assert_refused

    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(img)
    assert_refused(cli, "predict", tiny_checkpoint, img, "--out", tmp_path / "out", "--artifact", "tflite:int8",
                   watch=[tmp_path], match="--artifact tflite:int8 picks a file of an export directory")
    assert_refused(cli, "models", "--json", img / "x.json", watch=[tmp_path], match="is a file")


def test_a_mistyped_input_path_is_refused_before_anything_is_written(tiny_checkpoint, tmp_path, cli):
    from conftest import assert_refused

    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(img)
    assert_refused(cli, "predict", tiny_checkpoint, tmp_path / "in" / "nope.jpg", img, "--out", tmp_path / "out",
                   watch=[tmp_path], match="input not found:")


def test_two_predicts_into_one_folder_at_once_keep_each_others_ledger_entries(tmp_path):
    """Both plans read the (empty) ledger before either writes, as two processes started together would; the
    one that writes last must not erase the other's entry, or a re-run of the first would be refused."""
    from edgeseg.apply.predict import plan_predict, run_predict

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(synth.render("portrait", 48, ord(name)).image).save(tmp_path / name / f"{name}.png")
    out = tmp_path / "out"
    plan_a = plan_predict([tmp_path / "a" / "a.png"], out)
    plan_b = plan_predict([tmp_path / "b" / "b.png"], out)
    run_predict("default", plan_b)
    run_predict("default", plan_a)
    ledger = json.loads((out / LEDGER_NAME).read_text())["files"]
    assert sorted(ledger) == ["a.png", "b.png"]
    again = plan_predict([tmp_path / "b" / "b.png"], out)  # not refused: the ledger still lists b.png as ours
    assert [j.name for j in again.jobs] == ["b.png"]


def test_a_run_killed_between_the_ledger_and_the_renames_leaves_a_folder_the_next_run_accepts(tmp_path, monkeypatch):
    """The ledger lists a batch before its files are renamed into place. A run that died in between (kill -9,
    power loss) left the ledger naming the new bytes while the old ones were still there, and every later run
    refused the folder ('changed since') until --force. A replaced file is now listed with both sha256s."""
    import os

    from edgeseg.apply import predict as predict_mod
    from edgeseg.apply.predict import plan_predict, run_predict

    (tmp_path / "in").mkdir()
    Image.fromarray(synth.render("portrait", 48, 1).image).save(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    run_predict("default", plan_predict([tmp_path / "in"], out))
    before = (out / "a.png").read_bytes()

    class Killed(BaseException):
        pass

    real = os.replace

    def dies_after_the_ledger(src, dst):
        real(src, dst)
        if Path(dst).name == LEDGER_NAME:
            raise Killed  # the ledger is installed; the process dies before the output's rename

    monkeypatch.setattr(predict_mod.os, "replace", dies_after_the_ledger)
    with pytest.raises(Killed):
        run_predict("default", plan_predict([tmp_path / "in"], out, output="alpha"))
    monkeypatch.setattr(predict_mod.os, "replace", real)
    assert (out / "a.png").read_bytes() == before  # the old output, under a ledger that lists the new one too
    entry = json.loads((out / LEDGER_NAME).read_text())["files"]["a.png"]
    assert isinstance(entry, list) and len(entry) == 2
    run_predict("default", plan_predict([tmp_path / "in"], out, output="alpha"))  # not refused
    assert (out / "a.png").read_bytes() != before

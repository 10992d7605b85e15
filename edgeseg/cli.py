"""The ``edgeseg`` command line: thin click commands over the Python API and library calls (layer 6).

Exit codes: 0 success, 1 a gate failed (parity or latency), 2 bad usage or bad input, 130 interrupted,
141 stdout closed by its reader (``edgeseg models | head -1``), 143 terminated (SIGTERM).
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import signal
import sys
import threading
from pathlib import Path

import click

from edgeseg import __version__
from edgeseg.errors import EdgesegError, GateFailed
from edgeseg.recipe import CALIB_METHODS, STRESS_MODES, ExportCfg


def handle_errors(fn):
    """Map EdgesegError to a one-line message and exit 2, GateFailed to exit 1, Ctrl-C to 130, SIGTERM to 143.

    An OSError from the machine rather than from edgeseg (disk full, quota, read-only or
    permission-denied location, a name too long) is bad input too: one line naming what the
    system said, the file, and the fix, exit 2. Any other exception is a bug and keeps its traceback.
    """
    import errno
    import io
    import os

    fixes = {
        errno.ENOSPC: "free space or choose another location",
        errno.EDQUOT: "free space (or raise the quota) or choose another location",
        errno.EROFS: "choose a writable location",
        errno.EACCES: "fix its permissions or choose another location",
        errno.EPERM: "fix its permissions or choose another location",
        errno.ENAMETOOLONG: "choose a shorter name or location",
    }

    def file_of(exc: OSError) -> str | None:
        """The file an OSError is about: its own filename, else the innermost file open for writing
        (a failed write() or close() carries no name)."""
        if exc.filename is not None:
            return os.fsdecode(exc.filename)
        tb, frames = exc.__traceback__, []
        while tb is not None:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
        try:
            for frame in reversed(frames):
                for value in list(frame.f_locals.values()):
                    if isinstance(value, io.IOBase):
                        name, mode = getattr(value, "name", None), getattr(value, "mode", "")
                        if isinstance(name, (str, bytes)) and set(str(mode)) & set("wax+"):
                            return os.fsdecode(name)
        except Exception:  # naming the file is a courtesy: never let it hide the error itself
            pass
        return None

    def one_line(exc: OSError) -> str:
        name = file_of(exc)
        if name is not None and len(name) > 160:
            name = f"{name[:80]}...{name[-60:]}"
        where = f": {name}" if name else ""
        return f"error: {exc.strerror or errno.errorcode.get(exc.errno, exc)}{where}; {fixes[exc.errno]}"

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgesegError as exc:
            message = str(exc).replace("\r", "\\r").replace("\n", "\\n")  # e.g. a folder name with a newline
            click.echo(f"error: {message}", err=True)
            sys.exit(exc.exit_code)
        except GateFailed as exc:
            click.echo(f"FAILED: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt as exc:
            sys.exit(report_interrupt(exc))
        except OSError as exc:
            if exc.errno not in fixes:
                raise
            click.echo(one_line(exc), err=True)
            sys.exit(2)
    return wrapper


SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for a process killed by SIGPIPE


class Terminated(KeyboardInterrupt):
    """SIGTERM (what CI sends a cancelled job), raised in the main thread like Ctrl-C: the same unwinding
    removes staging folders and temporaries; the CLI prints ``terminated`` and exits 143 (128 + SIGTERM)."""

    signum = signal.SIGTERM


def _raise_terminated(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises ``Terminated`` while the CLI runs (the previous handler is put back after). Only in the main
    thread, and not where SIGTERM was ignored when the process started (whoever started it meant that)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def report_interrupt(exc: BaseException) -> int:
    """Print the one line for Ctrl-C or SIGTERM (``interrupted``, ``terminated``, or what an install that finished
    first says: ``interrupted after OUT was written (it is complete)``); the exit code, 128 + the signal."""
    from edgeseg.fsutil import InstallInterrupted

    if isinstance(exc, click.Abort) and isinstance(exc.__cause__, KeyboardInterrupt):
        exc = exc.__cause__
    signum = getattr(exc, "signum", signal.SIGINT)
    if isinstance(exc, InstallInterrupted):
        line = str(exc)
    else:
        line = "terminated" if signum == signal.SIGTERM else "interrupted"
    click.echo(line, err=True)
    return 128 + signum


@contextlib.contextmanager
def quiet_broken_pipe():
    """A reader that closed stdout early (``edgeseg models | head -1``) ends the command quietly with exit 141,
    not 1 (a failed gate). stdout is pointed at os.devnull first, so the interpreter's last flush of what is
    still buffered cannot fail again ("Exception ignored ... BrokenPipeError")."""
    try:
        yield
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):  # not a process's stdout (a test's buffer)
            pass
        sys.exit(SIGPIPE_EXIT)


class Group(click.Group):
    def command(self, *args, **kwargs):
        decorator = super().command(*args, **kwargs)
        return lambda fn: decorator(handle_errors(fn))

    def make_context(self, *args, **kwargs):
        with quiet_broken_pipe():  # --help and --version print here; click itself would exit 1 on a broken pipe
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with quiet_broken_pipe():  # a command's output, and a subcommand's --help
            return super().invoke(ctx)

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        """click's usage errors as one ``error:`` line too (exit 2), Ctrl-C anywhere as exit 130 and SIGTERM as 143
        (``sigterm_as_interrupt``), a closed stdout as a quiet exit 141 (``quiet_broken_pipe``)."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        with sigterm_as_interrupt(), quiet_broken_pipe():
            self._main(*args, **kwargs)

    def _main(self, *args, **kwargs):
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
            sys.stdout.flush()  # a broken pipe shows here, while quiet_broken_pipe can still end the process quietly
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `edgeseg` or `edgeseg data`: the help, on stdout
            click.echo(exc.ctx.get_help())
            sys.exit(0)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "edgeseg"
            click.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except (click.Abort, KeyboardInterrupt) as exc:
            sys.exit(report_interrupt(exc))
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeseg")
def main():
    """edgeseg: MobileNet-based segmenters from training recipe to phone-ready files."""
    from edgeseg.compat import install_log_filters

    install_log_filters()


def write_json(path: str | None, payload: dict) -> None:
    """Write a JSON report atomically, marked as edgeseg's (so a later run may replace it)."""
    if path:
        from edgeseg.fsutil import JSON_MARK, write_text_atomic

        write_text_atomic(path, json.dumps({**payload, JSON_MARK: f"edgeseg {__version__}"}, indent=2) + "\n")


@main.command()
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the table as JSON.")
def models(json_out):
    """List the registered architectures with params and MACs at their default size, and whether
    each one's int8 TFLite / ONNX graph is pure integer (measured on exports: benchmarks/int8_audit.py)."""
    from edgeseg.fsutil import check_json_output
    from edgeseg.models.report import int8_audit, int8_label, int8_verdict, model_table

    if json_out:
        check_json_output(json_out)

    rows = model_table()
    from edgeseg.ui import print_table

    print_table("architectures", ["name", "params", "MACs", "input", "int8", "description"],
                [[r["name"], f"{r['params'] / 1e6:.2f}M", f"{r['macs'] / 1e6:.0f}M", f"{r['input'][0]}x{r['input'][1]}",
                  int8_verdict(r["int8"]), r["description"]] for r in rows])
    print_table(f"int8 graphs: float ops inside, measured on exports ({int8_audit().get('generated', 'never')}; "
                "benchmarks/int8_audit.py)", ["name", "int8 TFLite", "int8 ONNX"],
                [[r["name"], int8_label(r["int8"], "tflite"), int8_label(r["int8"], "onnx")] for r in rows])
    write_json(json_out, {"architectures": rows})


@main.group(cls=Group)
def data():
    """Dataset tools."""


@data.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--task", type=click.Choice(["portrait", "parts"]), default="portrait", show_default=True)
@click.option("--count", type=click.IntRange(1), default=200, show_default=True)
@click.option("--size", type=click.IntRange(16), default=256, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--clips", type=click.IntRange(1), help="Write this many video clips instead of still images.")
@click.option("--frames", type=click.IntRange(2), show_default="24 with --clips", help="Frames per clip.")
@click.pass_context
def data_synth(ctx, out, task, count, size, seed, clips, frames):
    """Write a deterministic synthetic dataset (images/, masks/, classes.txt, slices.csv).

    With --clips N: N short portrait video clips with per-frame masks instead, one folder per clip
    (clip_000/images/frame_0000.png + clip_000/masks/frame_0000.png, ...) beside classes.txt.
    """
    from click.core import ParameterSource

    if clips is None:
        if frames is not None:
            raise click.UsageError("--frames applies only with --clips")
        from edgeseg.data.synth import write_dataset

        path = write_dataset(out, task, count, size, seed)
        click.echo(f"wrote {count} {task} samples ({size}x{size}) to {path}")
        return
    if ctx.get_parameter_source("count") not in (None, ParameterSource.DEFAULT):
        raise click.UsageError("--count does not apply with --clips (use --clips and --frames)")
    from edgeseg.data.clips import write_clips

    frames = 24 if frames is None else frames
    path = write_clips(out, task, clips, frames, size, seed)
    click.echo(f"wrote {clips} {task} clips x {frames} frames ({size}x{size}) to {path}")


@data.group("convert", cls=Group)
def data_convert():
    """Convert COCO or LabelMe annotations into edgeseg's layout (images/, masks/, classes.txt).

    Classes not named in --classes become background; where annotations overlap, the later one wins.
    --out must be new or empty; it is written completely or not at all.
    """


def _run_conversion(plan) -> None:
    """Report what a checked conversion skips, write it with a progress bar, print what it wrote."""
    from edgeseg.data.convert import split_note
    from edgeseg.ui import progress_bar

    missing = plan.missing
    if 0 < len(missing) <= 3:
        for path in missing:
            click.echo(f"warning: {path} is missing; skipped", err=True)
    elif missing:
        shown = ", ".join(p.name for p in missing[:3])
        click.echo(f"warning: {len(missing)} images listed in {plan.source} are missing (e.g. {shown}); skipped", err=True)
    for line in plan.skipped:
        click.echo(f"warning: {line}", err=True)
    with progress_bar(f"converting {plan.kind}", len(plan.items)) as advance:
        stats = plan.write(advance)
    per_class = ", ".join(f"{name} in {n}" for name, n in stats.per_class.items())
    ignore = f"; ignore (255) in {stats.ignore_images}" if plan.kind == "coco" else ""
    plural = "s" if stats.images != 1 else ""
    click.echo(f"wrote {stats.images} image{plural} and mask{plural} to {plan.out} (classes: {', '.join(plan.classes)}; "
               f"{per_class}{ignore})")
    click.echo(split_note(stats.images))


@data_convert.command("coco")
@click.argument("annotations", type=click.Path(dir_okay=False))
@click.option("--images", "images_dir", required=True, type=click.Path(file_okay=False), help="Folder the file_name entries are in.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="New or empty folder to write.")
@click.option("--classes", required=True, metavar="NAME[,NAME...]", help="COCO category names to keep, in class order (1, 2, ...).")
def data_convert_coco(annotations, images_dir, out_dir, classes):
    """Convert a COCO instances file: polygons and RLE (pycocotools), crowd regions as ignore (255).

    A crowd region stays ignore only where no non-crowd instance of a named class covers it. Images
    listed but missing from --images are reported and skipped; images are copied, never moved.
    """
    from edgeseg.data.convert import plan_coco

    _run_conversion(plan_coco(annotations, images_dir, classes.split(","), out_dir))


@data_convert.command("labelme")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="New or empty folder to write.")
@click.option("--classes", required=True, metavar="NAME[,NAME...]", help="LabelMe labels to keep, in class order (1, 2, ...).")
def data_convert_labelme(folder, out_dir, classes):
    """Convert the LabelMe .json files in FOLDER (polygon, rectangle and circle shapes; image at imagePath).

    Shapes are drawn in order, a later one over an earlier one, outlines included (as LabelMe does).
    """
    from edgeseg.data.convert import plan_labelme

    _run_conversion(plan_labelme(folder, classes.split(","), out_dir))


@main.command()
@click.option("--recipe", "recipe_path", type=click.Path(),
              help="A recipe .yaml file, or a bundled recipe's name (e.g. portrait_unet_mnv3min_s2_256); with --resume "
                   "optional (the run's own recipe), and when given it must match the run's.")
@click.option("--data", "data_root", type=click.Path(), help="Dataset folder (overrides data.root).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Run directory [runs/<recipe name>].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe field, e.g. train.epochs=3.")
@click.option("--weights", type=click.Path(),
              help="Start from a weights file (torchvision/timm/edgeseg), or by name: 'imagenet' (the encoder's "
                   "ImageNet weights), timm:<model>[.<tag>] or torchvision:<Enum>.<member>, downloaded once into "
                   "the library's cache (Hugging Face hub / torch hub); 'default' or 'parts' fine-tunes a packaged model.")
@click.option("--resume", is_flag=True,
              help="Continue from <out>/last.pt with the settings the run was started with; only train.epochs "
                   "(to train further), train.device, train.workers and --data may differ.")
@click.option("--force", is_flag=True, help="Start over in a run folder that holds a run (replaces its best.pt, last.pt, "
                                           "metrics.csv when an edgeseg run wrote them).")
def train(recipe_path, data_root, out_dir, overrides, weights, resume, force):
    """Train or fine-tune a segmenter from a recipe.

    An --out folder that already holds a run is refused unless --resume or --force; files there that
    an edgeseg run did not write are never replaced.
    """
    from edgeseg.export.report import warning_lines
    from edgeseg.recipe import bundled_recipes, load_recipe
    from edgeseg.train.loop import train as run_training
    from edgeseg.train.setup import TrainWarning

    sets = tuple(overrides) + ((f"model.weights={weights}",) if weights else ())
    if recipe_path is None and not (resume and out_dir):
        raise EdgesegError("--resume without --recipe goes on with the recipe stored in the run: give its folder with "
                           "--out RUN" if resume else
                           f"--recipe is needed: a recipe .yaml file or a bundled recipe's name ({', '.join(bundled_recipes())})")
    recipe = load_recipe(recipe_path, sets) if recipe_path is not None else None
    with warning_lines(TrainWarning):
        # a resumed run compares every setting of a --recipe given with the run's (another recipe is refused)
        result = run_training(recipe, out_dir=out_dir or Path("runs") / recipe.name, data_root=data_root, resume=resume,
                              force=force, overrides=None if resume and recipe is not None else sets)
    click.echo(f"done: {result.steps} steps; best val mIoU {result.best.get('miou', float('nan')):.4f}; "
               f"checkpoints in {result.out_dir}")


@main.command("eval")
@click.argument("model", required=False)
@click.option("--data", "data_root", type=click.Path(), help="Dataset folder [built-in synthetic eval set].")
@click.option("--split", help="Split of --data to evaluate [val].")
@click.option("--count", type=click.IntRange(1), default=200, show_default=True, help="Synthetic images when no --data.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False))
@click.option("--slices", "slices_file", type=click.Path(dir_okay=False), help="CSV id,slice... for per-slice IoU.")
@click.option("--smooth", is_flag=True, help="Clip datasets: run the frames through the video stabilizer.")
@click.option("--artifact", "pick", metavar="FORMAT[:PRECISION]",
              help="Which file of an export directory to evaluate (e.g. tflite:int8, or int8) [the most faithful].")
def eval_cmd(model, data_root, split, count, json_out, slices_file, smooth, pick):
    """Evaluate a checkpoint or exported model (default: the packaged portrait model; 'parts': the packaged
    parts model).

    On a clip dataset (--data with one folder of ordered frames and masks per clip, e.g. from
    'edgeseg data synth DIR --clips N') it also reports flicker: between consecutive frames, the
    fraction of pixels whose predicted class changes while the ground truth does not.
    """
    from edgeseg.api import load
    from edgeseg.evaluation.run import print_eval
    from edgeseg.fsutil import check_json_output

    if json_out:
        check_json_output(json_out)
    from edgeseg.runtime.loader import split_pick

    from edgeseg.evaluation.slices import SliceWarning
    from edgeseg.export.report import warning_lines

    fmt, precision = split_pick(pick)
    with warning_lines(SliceWarning), load(model or "default", format=fmt or None, precision=precision or None) as segmenter:
        result = segmenter.evaluate(data_root, count, split=split, slices=slices_file, smooth=smooth)
    print_eval(result)
    write_json(json_out, result)


def csv_list(ctx, param, value):
    """'a,b' -> ('a', 'b'); not given -> None (the recipe's or edgeseg's default); '' -> () (refused later)."""
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def recipe_default(value) -> str:
    """The ``[default: ...]`` text of an export option whose default is the checkpoint's recipe ``export:`` section."""
    shown = ",".join(value) if isinstance(value, tuple) else value
    return f"the recipe's export: section, else {shown}"


@main.command()
@click.argument("checkpoint", required=False)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), show_default="out/default, or out/parts for 'parts'")
@click.option("--formats", callback=csv_list, show_default=recipe_default(ExportCfg.formats))
@click.option("--precisions", callback=csv_list, show_default=recipe_default(ExportCfg.precisions),
              help="fp32,fp16,int8 (Core ML also pal6)")
@click.option("--calib", "calib_dir", type=click.Path(),
              help="Folder of calibration images, used as they are [the recipe's data or the built-in set, "
                   "under the recipe's colour/noise training augmentations].")
@click.option("--data", "data_dir", type=click.Path(), help="Dataset for parity (val split) [built-in synthetic set].")
@click.option("--calib-count", type=click.IntRange(1), show_default=recipe_default(ExportCfg.calib_count))
@click.option("--calib-method", show_default=recipe_default(ExportCfg.calib_method), metavar="METHOD|FORMAT=METHOD,...",
              help=f"int8 activation calibration ({', '.join(CALIB_METHODS)}): one method for every int8 file, or per "
                   "format, e.g. onnx=entropy; a method a format's quantizer does not offer is refused, naming what it offers.")
@click.option("--parity-images", type=click.IntRange(1), show_default=recipe_default(ExportCfg.parity_images))
@click.option("--threshold", "thresholds", multiple=True, metavar="PRECISION=MIN_AGREEMENT",
              help="Override a parity threshold, e.g. int8=0.97.")
@click.option("--stress-threshold", "stress_thresholds", multiple=True, metavar="PRECISION=MIN_AGREEMENT",
              help="Override a stress-parity threshold (phone-camera corruptions and real photos), e.g. int8=0.9.")
@click.option("--stress", type=click.Choice(STRESS_MODES), show_default=recipe_default(ExportCfg.stress),
              help="Stress parity (parity images under phone-camera corruptions, plus real photos): gate on it, "
                   "only measure and record it, or skip it.")
@click.option("--force", is_flag=True,
              help="Export into a non-empty folder that is not an earlier export (its other files are kept).")
@click.option("--verbose", is_flag=True, help="Show the converters' own output (progress bars, warnings, logs).")
def export(checkpoint, out_dir, formats, precisions, calib_dir, data_dir, calib_count, calib_method, parity_images,
           thresholds, stress_thresholds, stress, force, verbose):
    """Export a checkpoint ('default': the packaged portrait model; 'parts': the packaged parts model) to ONNX,
    TFLite and Core ML.

    Into an existing --out folder, only an earlier export's files (those its manifest lists) are
    replaced; anything else there is kept. The converters' own output is folded away (shown if
    the export crashes, or always with --verbose).
    """
    from edgeseg.api import export_checkpoint
    from edgeseg.errors import ParityFailed
    from edgeseg.export.quant_images import ExportWarning
    from edgeseg.export.report import artifact_line, export_table, warning_lines
    from edgeseg.models.checkpoint import is_packaged
    from edgeseg.ui import folded_output

    if out_dir is None:
        out_dir = f"out/{checkpoint if is_packaged(checkpoint) and checkpoint else 'default'}"
    with warning_lines(ExportWarning):
        try:
            with folded_output(verbose, keep=(EdgesegError, GateFailed, KeyboardInterrupt)) as progress:
                manifest = export_checkpoint(checkpoint, out_dir, formats, precisions, calib=calib_dir, data=data_dir,
                                             calib_count=calib_count, calib_method=calib_method,
                                             parity_images=parity_images, thresholds=thresholds,
                                             stress_thresholds=stress_thresholds, stress=stress, force=force,
                                             verbose=verbose, on_artifact=lambda a: print(artifact_line(a), file=progress, flush=True))
        except ParityFailed as exc:
            export_table(exc.manifest)
            raise
        export_table(manifest)


@main.command()
@click.argument("model")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--output", type=click.Choice(["mask", "alpha", "cutout", "blur", "replace", "overlay"]), default="mask", show_default=True)
@click.option("--background", type=click.Path(dir_okay=False), help="Background image for --output replace.")
@click.option("--refine", is_flag=True, help="Refine edges with the full-resolution image (guided matting).")
@click.option("--threads", type=click.IntRange(1), help="Runtime threads.")
@click.option("--artifact", "pick", metavar="FORMAT[:PRECISION]", help="Which file of an export directory to run.")
@click.option("--force", is_flag=True, help="Replace existing files in --out that edgeseg predict did not write (never an input).")
@click.option("--smooth", is_flag=True,
              help="Stabilize over time: a video's frames (or a folder of frames, in name order) through the stabilizer.")
def predict(model, inputs, out_dir, output, background, refine, threads, pick, force, smooth):
    """Segment images or videos with a checkpoint, an exported file or an export directory ('default', 'parts':
    the packaged models).

    Each image is written as --out/<name>.png, each video (.mp4, .mov, .mkv, ...) as --out/<name>.mp4
    with the same frame count, size, display rotation, frame times and sound (alpha and cutout as a
    greyscale matte video); a folder's sub-folders are mirrored (photos/sub/a.jpg -> OUT/sub/a.png). Refused before anything runs
    (exit 2): two inputs with one output name (a.jpg and a.png in one folder: rename one or use two --out
    folders), an output on an input, --out being an input folder or inside one, a video FFmpeg cannot
    open, and existing files in --out that edgeseg predict did not write (a ledger, .edgeseg-predict.json,
    records what it wrote, so re-runs replace their own outputs; --force replaces the others too). Unreadable,
    oversized or truncated inputs are skipped and reported (exit 2 after the rest are written).
    """
    from edgeseg.apply.predict import plan_predict, run_predict
    from edgeseg.ui import progress_bar

    plan = plan_predict(inputs, out_dir, output=output, background=background, force=force)
    with progress_bar("predict", plan.units, "frames" if plan.has_video else None) as advance:
        report = run_predict(model, plan, refine=refine, threads=threads, pick=pick, on_progress=lambda p: advance(),
                             smooth=smooth)
    for path, reason in report.failed:
        click.echo(f"skipped {path}: {reason}", err=True)
    for line in report.warnings:
        click.echo(f"warning: {line}", err=True)
    videos = sum(path.suffix == ".mp4" for path in report.written)
    counts = [(len(report.written) - videos, "image"), (videos, "video")]
    shown = " and ".join(f"{n} {output} {kind}{'s' if n != 1 else ''}" for n, kind in counts if n) or "nothing"
    click.echo(f"wrote {shown} to {out_dir}")
    if report.failed:
        raise EdgesegError(f"{len(report.failed)} of {len(report.failed) + len(report.written)} inputs could not be read")


def int_list(ctx, param, value):
    try:
        return tuple(int(v) for v in csv_list(ctx, param, value) or ())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--data", "data_dir", type=click.Path(), help="Dataset for parity (val split) [built-in synthetic set].")
@click.option("--threads", default="1,2", show_default=True, callback=int_list)
@click.option("--runs", type=click.IntRange(3), default=30, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=5, show_default=True)
@click.option("--sessions", type=click.IntRange(1), default=3, show_default=True,
              help="Fresh loads per result (RUNS timed runs each); normalized p50 is the median over them.")
@click.option("--parity-images", type=click.IntRange(1), default=None,
              help="Check parity on the first N images the export stored [all]; with --data, on N of its val split [8].")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write results (docs/design.md schema).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Write report.md/html with charts.")
@click.option("--baseline", type=click.Path(dir_okay=False), help="Gate against this bench JSON.")
@click.option("--max-slowdown", type=float, default=1.15, show_default=True)
@click.option("--update-baseline", is_flag=True, help="Write this run to --baseline instead of gating.")
@click.option("--gate-threads", default=None, callback=int_list,
              help="Gate latency only at these thread counts (others: shown, parity still gated) [all].")
@click.option("--confirm/--no-confirm", default=True, show_default=True,
              help="Re-time results over the limit (fresh loads) and fail only if the re-timing is over it too.")
@click.option("--device", default="host", show_default=True, help="host | android[:SERIAL]")
@click.option("--benchmark-binary", type=click.Path(), help="TFLite benchmark_model built for the phone (android).")
@click.option("--use-gpu", is_flag=True, help="Android: use the GPU delegate instead of XNNPACK.")
@click.option("--slices", "slices_file", type=click.Path(dir_okay=False), help="CSV id,slice... for per-slice IoU.")
@click.option("--clips", "clips_dir", type=click.Path(file_okay=False),
              help="Clip dataset: also measure each file's flicker on it, raw and with the stabilizer (--smooth).")
def bench(**options):
    """Time every exported file through its runtime, check parity, and gate against a baseline.

    Parity is checked against the reference each export stored beside its files: no checkpoint
    needed, from any directory (the PyTorch row is timed only where the checkpoint is). A file
    whose parity cannot be checked fails the gate (exit 1), as does one below its threshold.
    Options, output locations, every file's sha256 and the baseline are checked before any timing. Two
    exports holding a file of the same format and precision (two exports of one model) are refused: bench
    each in its own run, with its own --baseline.
    """
    from edgeseg.bench.command import BenchOptions, run_bench_command

    run_bench_command(BenchOptions(**options), echo=click.echo, write_json=write_json)


@main.command()
@click.argument("artifact", type=click.Path())
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None, metavar="[FILE]",
              help="Print JSON instead of tables; with a FILE, print the tables and write the JSON to FILE.")
@click.option("--quant-error", is_flag=True,
              help="int8 file: per-layer error against its float model (the quantizer's own debugging tools), worst first.")
@click.option("--data", "data_dir", type=click.Path(), help="With --quant-error: a folder of images [built-in synthetic eval set].")
@click.option("--count", type=click.IntRange(1), help="With --quant-error: how many images [8].")
def inspect(artifact, json_out, quant_error, data_dir, count):
    """Describe an exported file: I/O, ops, params, metadata, delegate coverage (measured). With
    --quant-error: where an int8 file loses accuracy against its float model, layer by layer."""
    from edgeseg.fsutil import check_json_output

    if not quant_error and (data_dir is not None or count is not None):
        raise click.UsageError("--data and --count apply only with --quant-error")
    if json_out not in (None, "-"):
        check_json_output(json_out)
    if quant_error:
        from edgeseg.export.quant_error import DEFAULT_COUNT, print_quant_error, quant_error as measure

        info, show = measure(artifact, data_dir=data_dir, count=count or DEFAULT_COUNT).to_dict(), print_quant_error
    else:
        from edgeseg.export.inspect import inspect_file, print_inspection

        info, show = inspect_file(artifact), print_inspection
    if json_out == "-":
        click.echo(json.dumps(info, indent=2, default=str))
    else:
        show(info)
        write_json(json_out, json.loads(json.dumps(info, default=str)))


if __name__ == "__main__":
    main()

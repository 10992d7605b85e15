"""The ``edgeseg`` command line: thin click commands over library calls (layer 5).

Exit codes: 0 success, 1 a gate failed (parity or latency), 2 bad usage or bad input.
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from edgeseg import __version__
from edgeseg.errors import EdgesegError


class GateFailed(Exception):
    """Raised by a command whose checks ran but did not pass (exit 1)."""


def handle_errors(fn):
    """Map EdgesegError to a one-line message and exit 2, GateFailed to exit 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgesegError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except GateFailed as exc:
            click.echo(f"FAILED: {exc}", err=True)
            sys.exit(1)
    return wrapper


class Group(click.Group):
    def command(self, *args, **kwargs):
        decorator = super().command(*args, **kwargs)
        return lambda fn: decorator(handle_errors(fn))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeseg")
def main():
    """edgeseg: MobileNet-based segmenters from training recipe to phone-ready files."""
    from edgeseg.compat import install_log_filters

    install_log_filters()


def write_json(path: str | None, payload: dict) -> None:
    if path:
        from edgeseg.fsutil import write_text_atomic

        write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


@main.command()
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the table as JSON.")
def models(json_out):
    """List the registered architectures with params and MACs at their default size."""
    from edgeseg.models.report import model_table

    rows = model_table()
    from edgeseg.ui import print_table

    print_table("architectures", ["name", "params", "MACs", "input", "description"],
                [[r["name"], f"{r['params'] / 1e6:.2f}M", f"{r['macs'] / 1e6:.0f}M", f"{r['input'][0]}x{r['input'][1]}", r["description"]]
                 for r in rows])
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
def data_synth(out, task, count, size, seed):
    """Write a deterministic synthetic dataset (images/, masks/, classes.txt, slices.csv)."""
    from edgeseg.data.synth import write_dataset

    path = write_dataset(out, task, count, size, seed)
    click.echo(f"wrote {count} {task} samples ({size}x{size}) to {path}")


@main.command()
@click.option("--recipe", "recipe_path", required=True, type=click.Path(), help="recipes/<name>.yaml")
@click.option("--data", "data_root", type=click.Path(), help="Dataset folder (overrides data.root).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Run directory [runs/<recipe name>].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe field, e.g. train.epochs=3.")
@click.option("--weights", type=click.Path(), help="Start from a local weights file (torchvision/timm/edgeseg).")
@click.option("--resume", is_flag=True, help="Continue from <out>/last.pt.")
def train(recipe_path, data_root, out_dir, overrides, weights, resume):
    """Train or fine-tune a segmenter from a recipe."""
    from edgeseg.recipe import load_recipe
    from edgeseg.train.loop import train as run_training

    extra = (f"model.weights={weights}",) if weights else ()
    recipe = load_recipe(recipe_path, tuple(overrides) + extra)
    result = run_training(recipe, out_dir=out_dir or Path("runs") / recipe.name, data_root=data_root, resume=resume)
    click.echo(f"done: {result.steps} steps; best val mIoU {result.best.get('miou', float('nan')):.4f}; "
               f"checkpoints in {result.out_dir}")


@main.command("eval")
@click.argument("model", required=False)
@click.option("--data", "data_root", type=click.Path(), help="Dataset folder [built-in synthetic eval set].")
@click.option("--split", default="val", show_default=True)
@click.option("--count", type=click.IntRange(1), default=200, show_default=True, help="Synthetic images when no --data.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False))
@click.option("--slices", "slices_file", type=click.Path(dir_okay=False), help="CSV id,slice... for per-slice IoU.")
def eval_cmd(model, data_root, split, count, json_out, slices_file):
    """Evaluate a checkpoint or exported model (default: the packaged portrait model)."""
    from edgeseg.bench.evaluation import evaluate_model, print_eval

    result = evaluate_model(model, data_root=data_root, split=split, count=count, slices_file=slices_file)
    print_eval(result)
    write_json(json_out, result)


def csv_list(ctx, param, value):
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


@main.command()
@click.argument("checkpoint", required=False)
@click.option("--out", "out_dir", default="out/default", show_default=True, type=click.Path(file_okay=False))
@click.option("--formats", default="onnx,tflite,coreml", show_default=True, callback=csv_list)
@click.option("--precisions", default="fp32,fp16,int8", show_default=True, callback=csv_list, help="fp32,fp16,int8 (Core ML also pal6)")
@click.option("--calib", "calib_dir", type=click.Path(), help="Folder of calibration images [recipe data or built-in set].")
@click.option("--data", "data_dir", type=click.Path(), help="Dataset for parity (val split) [built-in synthetic set].")
@click.option("--calib-count", type=click.IntRange(1), default=32, show_default=True)
@click.option("--parity-images", type=click.IntRange(1), default=16, show_default=True)
@click.option("--threshold", "thresholds", multiple=True, metavar="PRECISION=MIN_AGREEMENT",
              help="Override a parity threshold, e.g. int8=0.97.")
def export(checkpoint, out_dir, formats, precisions, calib_dir, data_dir, calib_count, parity_images, thresholds):
    """Export a checkpoint (default: the packaged portrait model) to ONNX, TFLite and Core ML."""
    from edgeseg.export.pipeline import ExportRequest, run_export
    from edgeseg.export.report import export_table, parse_thresholds

    req = ExportRequest(checkpoint, out_dir, formats, precisions, calib_dir, data_dir, calib_count, parity_images,
                        parse_thresholds(thresholds))
    result = run_export(req, on_artifact=lambda a: click.echo(f"  exported {a.path} ({a.bytes / 1024:.0f} KB)"))
    export_table(result)
    if result.failed:
        raise GateFailed("parity below threshold for " + ", ".join(a.path for a in result.failed))


if __name__ == "__main__":
    main()

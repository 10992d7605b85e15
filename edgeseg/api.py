"""edgeseg's Python API (layer 5): load a model, segment images, evaluate it, export it.

::

    import edgeseg

    seg = edgeseg.load("default")        # or a checkpoint, an exported file, an export directory
    mask = seg.predict("photo.jpg")      # [H, W] uint8 class ids at the photo's own size
    proba = seg.predict_proba(rgb)       # [C, H, W] float32 class probabilities at the image's size
    alpha = seg.matte(rgb, refine=True)  # [H, W] float32 foreground matte (edges refined)
    picture = seg.render(rgb, "blur")    # a PIL image, as `edgeseg predict --output blur` writes it
    scores = seg.evaluate(count=50)      # the keys of `edgeseg eval --json`
    manifest = seg.export("out/default", formats=["onnx", "tflite"])
    manifest.artifacts[0].parity.agreement_miou

    edgeseg.export_checkpoint("runs/tiny/best.pt", "out/tiny")    # what `edgeseg export` runs
    edgeseg.export_module(net, "out/mynet", classes=["background", "person"], input_size=(256, 256),
                          mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5))

Errors: bad input raises ``EdgesegError`` or a subclass, with the same one-line message the CLI
prints (exit 2 there); a missing optional dependency raises ``MissingExtra`` naming the pip extra.
An export whose parity gate fails raises ``ParityFailed`` (exit 1 in the CLI): every file is kept
and the written manifest is on the exception; pass ``check=False`` to get the manifest back instead
and read ``artifact.parity.passed`` yourself.

Every call here is a thin layer over the library: ``runtime.loader`` opens models,
``apply.predict`` segments, ``evaluation.run`` scores, ``export.pipeline`` exports.
"""
from __future__ import annotations

import os

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from edgeseg.apply.predict import OUTPUTS, plan_predict, predict_image, predict_plan, predict_proba_image, render
from edgeseg.apply.video import is_video
from edgeseg.evaluation.run import evaluate_runner
from edgeseg.data.images import as_rgb_array, in_profile, rgb_and_profile
from edgeseg.errors import DataError, EdgesegError, ParityFailed
from edgeseg.manifest import FORMATS, Artifact, Manifest
from edgeseg.runtime.loader import PRECISION_ORDER, LoadedModel, load_model
from edgeseg.runtime.stabilizer import frame_run

__all__ = ["load", "Segmenter", "FrameStream", "StreamFrame", "export_checkpoint", "export_module", "EXPORT_OPTIONS"]

#: Keyword options of ``Segmenter.export``, ``export_checkpoint`` and ``export_module``, named after
#: ``edgeseg export``'s flags: calib (--calib folder), calib_method, calib_count, data (--data folder),
#: parity_images, thresholds ({"int8": 0.97} or ["int8=0.97"]), stress_thresholds (likewise),
#: max_gt_drop, stress ("gate" | "report" | "off"), force, verbose (True: show the converters' own output, which
#: is otherwise folded away as the CLI folds it). Each one left out (or None) takes the CLI's default.
EXPORT_OPTIONS = ("calib", "calib_method", "calib_count", "data", "parity_images", "thresholds", "stress_thresholds",
                  "max_gt_drop", "stress", "force", "verbose")


def load(spec: str | Path = "default", *, format: str | None = None, precision: str | None = None,
         threads: int | None = None) -> "Segmenter":
    """Open a model to segment images with.

    ``spec``: ``"default"`` (the packaged portrait model), ``"parts"`` (the packaged try-on parts
    model), an edgeseg checkpoint (``.pt``), an exported file (``.onnx``, ``.tflite``, ``.mlpackage``,
    with the ``manifest.json`` of its export beside it) or an export directory. For a directory, ``format``
    and ``precision`` choose among its files; whatever they leave open is decided by preferring files whose parity passed, then higher
    precision (fp32, fp16, int8), then ONNX, TFLite, Core ML, skipping files whose runtime is not
    installed. ``threads``: the runtime's threads (default: its own choice).

    Raises EdgesegError (CheckpointError, ArtifactError: missing, corrupt or tampered files) or
    MissingExtra when no runtime for the file is installed.
    """
    for value, allowed, what in ((format, FORMATS, "format"), (precision, PRECISION_ORDER, "precision")):
        if value is not None and value not in allowed:
            raise EdgesegError(f"{what}={value!r}: choose from {', '.join(allowed)}")
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        raise EdgesegError(f"spec={spec!r}: give 'default', 'parts', a checkpoint, an exported file or an export "
                           "directory (a path)")
    pick = format if precision is None else f"{format or ''}:{precision}"
    return Segmenter(load_model(os.fspath(spec), threads=_count("threads", threads), pick=pick))


class Segmenter:
    """One open model, PyTorch or exported: segment images, evaluate, and (PyTorch) export.

    Made by ``edgeseg.load``. Holds the runtime's session until ``close()`` (or the end of a
    ``with`` block).
    """

    def __init__(self, loaded: LoadedModel):
        if not isinstance(loaded, LoadedModel):
            raise EdgesegError(f"Segmenter({loaded!r}): open a model with edgeseg.load({loaded!r})")
        self._loaded: LoadedModel | None = loaded

    # -- what the model is ------------------------------------------------------------------------

    @property
    def _model(self) -> LoadedModel:
        if self._loaded is None:
            raise EdgesegError("this Segmenter is closed; load the model again")
        return self._loaded

    @property
    def name(self) -> str:
        return self._model.view.name

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names; class id ``i`` in ``predict`` is ``classes[i]``."""
        return self._model.view.classes

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the model runs at; images of any size are resized to it and results back."""
        return self._model.view.input_size

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean in 0-255 pixel units: normalized = (pixel - mean) / std."""
        return self._model.view.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self._model.view.std

    @property
    def format(self) -> str:
        """``checkpoint`` (PyTorch), ``onnx``, ``tflite`` or ``coreml``."""
        return self._model.view.format

    @property
    def precision(self) -> str:
        return self._model.view.precision

    @property
    def source(self) -> str:
        """The checkpoint or exported file the model was read from."""
        return self._model.view.source

    @property
    def artifact(self) -> Artifact | None:
        """The manifest entry of an exported file (its parity, input contract, sha256); None for PyTorch."""
        return self._model.artifact

    def __repr__(self) -> str:
        if self._loaded is None:
            return "<Segmenter (closed)>"
        return (f"<Segmenter {self.name} {self.format}/{self.precision} {len(self.classes)} classes "
                f"{self.input_size[0]}x{self.input_size[1]} from {self.source}>")

    # -- using it ---------------------------------------------------------------------------------

    def predict(self, image, *, refine: bool = False) -> np.ndarray:
        """Class ids, uint8 [H, W] at the image's own size (arg-max of the logits upsampled bilinearly).

        ``image``: a path, a PIL image, or a uint8 RGB array [H, W, 3] (gray [H, W] and RGBA are
        accepted too). ``refine``: refine edges on the full-resolution image, as ``edgeseg predict
        --refine`` (two-class models: the refined matte thresholded at 0.5).
        """
        return predict_image(self._model.runner.run, _pixels(image), self.input_size, refine=refine).classes

    def predict_proba(self, image) -> np.ndarray:
        """Class probabilities, float32 [C, H, W] (channels first, C = ``len(classes)``) at the image's
        own size: the softmax of the same upsampled logits ``predict`` takes the arg-max of."""
        return predict_proba_image(self._model.runner.run, _pixels(image), self.input_size)

    def matte(self, image, *, refine: bool = False) -> np.ndarray:
        """The foreground matte, float32 [H, W] in 0-1 at the image's own size: 1 - the probability of class
        0 (background), as ``edgeseg predict --output alpha`` writes it; ``refine``: edges refined on the
        full-resolution image (``--refine``), a soft matte for compositing."""
        return predict_image(self._model.runner.run, _pixels(image), self.input_size, refine=refine).alpha

    def render(self, image, output: str = "cutout", *, background=None, refine: bool = False):
        """The picture ``edgeseg predict --output OUTPUT`` writes for one image, as a PIL image at the image's
        size: ``mask`` (palette), ``alpha`` (greyscale matte), ``cutout`` (RGBA), ``blur`` (background
        blurred), ``replace`` (over ``background``: a path, PIL image or array, scaled to cover), ``overlay``."""
        return _render(self._model.runner.run, self.input_size, image, output, background, refine)

    def stream(self, *, smooth: bool = True) -> "FrameStream":
        """A ``FrameStream`` for the frames of one video or camera feed, given in order: with ``smooth``
        (the default) each frame goes through the temporal stabilizer (``edgeseg predict --smooth``)."""
        if not isinstance(smooth, bool):
            raise EdgesegError(f"smooth={smooth!r}: give True (stabilize the frames) or False")
        return FrameStream(self, smooth)

    def predict_video(self, video: str | Path, out: str | Path, *, output: str = "mask", smooth: bool = False,
                      background: str | Path | None = None, refine: bool = False, force: bool = False) -> Path:
        """Segment a video file into ``out/<name>.mp4`` (as ``edgeseg predict VIDEO --out OUT``): same frame
        count, size, display rotation, frame times and sound; ``output`` one of mask, alpha, cutout (alpha and
        cutout: a greyscale matte), blur, replace (with ``background``), overlay. Returns the written path.

        Needs the ``video`` extra (PyAV). The same checks as the CLI run first (nothing written on bad
        input); a video that cannot be decoded to its end raises DataError and leaves nothing behind.
        """
        from edgeseg.apply.video import is_video

        if not is_video(video):
            raise EdgesegError(f"{video}: not a video file name (.mp4, .mov, .mkv, .avi, .webm, .m4v); "
                               "use predict() for images")
        plan = plan_predict([video], out, output=output, background=_text(background), force=force)
        report = predict_plan(self._model.runner.run, self.input_size, plan, refine=refine, smooth=smooth)
        if report.failed:
            raise DataError(report.failed[0][1])
        return report.written[0]

    def evaluate(self, data: str | Path | None = None, count: int | None = None, *, split: str | None = None,
                 slices: str | Path | None = None, smooth: bool = False) -> dict:
        """Metrics as ``edgeseg eval --json`` writes them: ``miou``, ``per_class_iou``, ``pixel_accuracy``,
        ``boundary_iou``, ``images``, the model and data it ran on, and ``slices`` where known.

        ``data``: a dataset folder (``split`` of it, default 'val'), or a clip dataset (one folder of
        ordered frames and masks per clip: the result adds ``temporal`` with the flicker; ``smooth``
        runs the frames through the video stabilizer); None: the built-in synthetic set of ``count``
        images (default 200). ``slices``: a CSV ``id,slice...`` for per-slice IoU.
        """
        extra = {} if count is None else {"count": _count("count", count)}
        return evaluate_runner(self._model.runner, self._model.view, data_root=_text(data), split=split,
                               slices_file=_text(slices), smooth=smooth, **extra)

    def export(self, out: str | Path, formats: str | Iterable[str] | None = None,
               precisions: str | Iterable[str] | None = None, *, check: bool = True,
               on_artifact: Callable[[Artifact], None] | None = None, **options) -> Manifest:
        """Export this PyTorch model to every (format, precision) file, parity-gated, as ``edgeseg export``.

        ``formats`` / ``precisions``: lists or comma-separated text (default: onnx, tflite, coreml and
        fp32, fp16, int8). ``options``: ``EXPORT_OPTIONS``. Returns the written ``Manifest``
        (``manifest.root`` is ``out``; ``artifacts[i].parity.passed``). A failed parity gate raises
        ParityFailed carrying the manifest, unless ``check=False``. ``on_artifact`` is called after each
        file is checked. An exported model cannot be exported again: EdgesegError.
        """
        from edgeseg.export.source import checkpoint_source

        model = self._model
        if model.checkpoint is None:
            raise EdgesegError(f"{self.source} is an exported {self.format} file; export starts from a PyTorch model: "
                               "load its checkpoint (or 'default'), or use edgeseg.export_module")
        request = _request(out, formats, precisions, options)
        return _run(checkpoint_source(model.checkpoint, model.runner.model), request, check=check,
                    on_artifact=on_artifact)

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the runtime's session (idempotent); the Segmenter cannot be used afterwards."""
        if self._loaded is not None:
            self._loaded.runner.close()
            self._loaded = None

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameStream:
    """Segments the frames of one clip in order (``Segmenter.stream``); keeps the stabilizer's state between
    calls: each call is one step of the clip. For several outputs of one frame (its mask and its matte),
    ``step(frame)`` once and read them from the result. Call ``reset()`` before the frames of another clip."""

    def __init__(self, segmenter: Segmenter, smooth: bool = True):
        self._segmenter, self._smooth = segmenter, smooth
        self._run = frame_run(segmenter._model.runner.run, smooth)

    def step(self, frame) -> "StreamFrame":
        """The next frame through the stabilizer, once; its ``mask()``, ``proba()``, ``matte()`` and ``render()``
        all come from that one step."""
        return StreamFrame(_Once(self._run), as_rgb_array(frame), self._segmenter.input_size)

    def predict(self, frame, *, refine: bool = False) -> np.ndarray:
        """Class ids, uint8 [H, W] at the frame's own size, as ``Segmenter.predict`` (stabilized): ``step(frame).mask()``."""
        return self.step(frame).mask(refine=refine)

    def predict_proba(self, frame) -> np.ndarray:
        """Class probabilities, float32 [C, H, W] at the frame's own size (stabilized): ``step(frame).proba()``."""
        return self.step(frame).proba()

    def reset(self) -> None:
        """Start a new clip: forget the previous frames."""
        self._run = frame_run(self._segmenter._model.runner.run, self._smooth)


class StreamFrame:
    """One frame of a ``FrameStream``, stepped once: its outputs at the frame's own size."""

    def __init__(self, run, pixels: np.ndarray, input_size):
        self._run, self._pixels, self._size = run, pixels, input_size

    def mask(self, *, refine: bool = False) -> np.ndarray:
        """Class ids, uint8 [H, W] (as ``Segmenter.predict``)."""
        return predict_image(self._run, self._pixels, self._size, refine=refine).classes

    def proba(self) -> np.ndarray:
        """Class probabilities, float32 [C, H, W] (as ``Segmenter.predict_proba``)."""
        return predict_proba_image(self._run, self._pixels, self._size)

    def matte(self, *, refine: bool = False) -> np.ndarray:
        """The foreground matte, float32 [H, W] (as ``Segmenter.matte``)."""
        return predict_image(self._run, self._pixels, self._size, refine=refine).alpha

    def render(self, output: str = "cutout", *, background=None, refine: bool = False):
        """One output picture (as ``Segmenter.render``)."""
        return _render(self._run, self._size, self._pixels, output, background, refine)


class _Once:
    """One frame's ``run``: the first call steps the stream's model (and stabilizer); the frame's other outputs
    reuse its logits (every call of one ``StreamFrame`` gives the model the same input)."""

    def __init__(self, run):
        self._run, self._out = run, None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self._out is None:
            self._out = np.asarray(self._run(images))
        return self._out.copy()


def _pixels(image) -> np.ndarray:
    """``as_rgb_array(image)``; a video file given as an image says where videos go."""
    _not_a_video(image)
    return as_rgb_array(image)


def _not_a_video(image) -> None:
    if isinstance(image, (str, os.PathLike)) and is_video(os.fsdecode(image)):
        raise DataError(f"{os.fsdecode(image)} is a video, not an image: use Segmenter.predict_video(video, out), "
                        "or Segmenter.stream() for its frames one by one")


def _render(run, input_size, image, output: str, background, refine: bool):
    """``Segmenter.render`` / ``FrameStream.render`` with the model's ``run``."""
    if output not in OUTPUTS:
        raise EdgesegError(f"output={output!r}: choose from {', '.join(OUTPUTS)}")
    if output == "replace" and background is None:
        raise EdgesegError("output='replace' needs background= (an image: a path, a PIL image or an array)")
    if output != "replace" and background is not None:
        raise EdgesegError(f"background= is used only by output='replace', not {output!r}; drop it")
    _not_a_video(image)
    pixels, profile = rgb_and_profile(image)  # the picture carries the photo's colour profile, as predict writes it
    behind = in_profile(*rgb_and_profile(background), profile) if output == "replace" else None
    return render(output, pixels, predict_image(run, pixels, input_size, refine=refine), behind, icc_profile=profile)


def export_checkpoint(checkpoint: str | Path | None, out: str | Path, formats: str | Iterable[str] | None = None,
                      precisions: str | Iterable[str] | None = None, *, check: bool = True,
                      on_artifact: Callable[[Artifact], None] | None = None, **options) -> Manifest:
    """``Segmenter.export`` of an edgeseg checkpoint named by path (None or 'default': the packaged
    model), without opening it for prediction: the options and ``out`` are checked first, then the
    checkpoint is read (CheckpointError for anything else, an export directory included). This is
    what ``edgeseg export`` runs.
    """
    request = _request(out, formats, precisions, options, checkpoint=_text(checkpoint))
    return _run(None, request, check=check, on_artifact=on_artifact)


def export_module(module, out: str | Path, *, classes: Iterable[str], input_size, mean, std, name: str | None = None,
                  formats: str | Iterable[str] | None = None, precisions: str | Iterable[str] | None = None,
                  calib: str | Path | None = None, data: str | Path | None = None, check: bool = True,
                  on_artifact: Callable[[Artifact], None] | None = None, **options) -> Manifest:
    """Export any ``torch.nn.Module`` mapping normalized [N, 3, H, W] images to [N, C, H, W] logits
    through the same formats, manifest and parity gate as a checkpoint.

    ``classes``: one name per output channel. ``input_size``: (height, width) the files take (or one
    int). ``mean`` / ``std``: three numbers each in 0-255 pixel units, so normalized = (pixel - mean) /
    std. ``name``: names the files (default: the module's class name). The module is copied (float32,
    CPU, eval mode); the caller's is not changed. The manifest's ``model.architecture`` reads
    ``custom (ClassName)`` and ``model.module`` records the class and a sha256 of its weights.

    The arguments and one dry run on a zero image (output shape, channels = classes) are checked
    first, raising EdgesegError with a one-line message. ``calib``, ``data``, ``check``,
    ``on_artifact`` and ``options`` (``EXPORT_OPTIONS``) are as in ``Segmenter.export``.
    """
    from edgeseg.export.source import module_source

    request = _request(out, formats, precisions, {**options, "calib": calib, "data": data})
    source = module_source(module, classes=classes, input_size=input_size, mean=mean, std=std, name=name)
    return _run(source, request, check=check, on_artifact=on_artifact)


def _run(source, request, *, check: bool, on_artifact) -> Manifest:
    """Run the export pipeline on ``source`` (None: ``request.checkpoint``); ParityFailed when a file fails
    its gate and ``check``."""
    from edgeseg.export.pipeline import run_export

    result = run_export(request, on_artifact=on_artifact, model_source=source)
    if check and result.failed:
        raise ParityFailed(result.failure_message(), result.manifest)
    return result.manifest


def _request(out, formats, precisions, options: dict, checkpoint: str | None = None):
    """The ExportRequest for these arguments: given values checked and converted as the CLI's flags are,
    the rest left at the pipeline's defaults."""
    from edgeseg.export.pipeline import ExportRequest
    from edgeseg.export.report import parse_thresholds

    unknown = sorted(set(options) - set(EXPORT_OPTIONS))
    if unknown:
        raise TypeError(f"unknown export option(s) {', '.join(unknown)}; options: {', '.join(EXPORT_OPTIONS)}")
    given = {k: v for k, v in options.items() if v is not None}
    fields = {"checkpoint": checkpoint, "out_dir": str(out),
              "formats": _names(formats), "precisions": _names(precisions),
              "calib_dir": _text(given.get("calib")), "data_dir": _text(given.get("data")),
              "calib_count": _count("calib_count", given.get("calib_count")),
              "parity_images": _count("parity_images", given.get("parity_images")),
              "calib_method": _calib_method_text(given.get("calib_method")), "stress": given.get("stress"),
              "max_gt_drop": given.get("max_gt_drop"), "force": bool(given.get("force", False)),
              "verbose": bool(given.get("verbose", False))}
    for key, option in (("thresholds", "--threshold"), ("stress_thresholds", "--stress-threshold")):
        if key in given:
            fields[key] = parse_thresholds(_threshold_items(given[key]), option=option)
    return ExportRequest(**{k: v for k, v in fields.items() if v is not None})


def _names(value) -> tuple[str, ...] | None:
    """A list of formats or precisions given as a list or as comma-separated text; None stays None."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(v).strip() for v in items if str(v).strip())


def _count(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EdgesegError(f"{name}={value!r}: it must be an integer >= 1")
    return value


def _threshold_items(value) -> list[str]:
    """{"int8": 0.97} or ["int8=0.97"] -> ["int8=0.97"] (then checked by the CLI's parser)."""
    if isinstance(value, Mapping):
        return [f"{k}={v}" for k, v in value.items()]
    return [value] if isinstance(value, str) else list(value)


def _calib_method_text(value) -> str | None:
    """``calib_method`` as the CLI's text: "entropy", ["entropy", "tflite=minmax"] or {"onnx": "entropy"} ->
    "entropy", "entropy,tflite=minmax", "onnx=entropy" (then checked by the pipeline)."""
    if value is None or isinstance(value, str):
        return value
    items = ([f"{k}={v}" for k, v in value.items()] if isinstance(value, Mapping) else
             list(value) if isinstance(value, (list, tuple)) else [value])
    return ",".join(str(item) for item in items)


def _text(value) -> str | None:
    return None if value is None else str(value)

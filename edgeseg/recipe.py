"""Training/export recipes: frozen dataclasses loaded from YAML (layer 1).

Unknown keys are errors naming the key; ``--set a.b=v`` overrides any field. Model options
left unset (None) take the architecture's defaults; mean/std unset take the encoder's, or, for a run
starting from an edgeseg checkpoint, the checkpoint's (``train.setup.weights_normalization``).
``load_recipe`` takes a file or a shipped recipe's name (``bundled_recipes``).
Every field has a valid range (``RULES``), checked when the recipe is built, so a bad value
is refused before any data is read or file written.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from edgeseg.errors import RecipeError
from edgeseg.manifest import MODEL_NAME_RULE, is_model_name


@dataclass(frozen=True)
class ModelCfg:
    arch: str = "unet_mobilenet_v3_small"
    width: float | None = None
    decoder_channels: tuple[int, ...] | None = None
    inter_channels: int | None = None
    weights: str | None = None  # local file: torchvision/timm/edgeseg checkpoint

    def options(self) -> dict:
        """Architecture options that the recipe sets explicitly."""
        names = ("width", "decoder_channels", "inter_channels")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


@dataclass(frozen=True)
class AugmentCfg:
    hflip: bool = True
    scale: tuple[float, float] = (0.7, 1.3)
    rotate: float = 10.0
    color: float = 0.3
    corrupt: float = 0.0  # probability of one photometric phone-camera corruption (noise, blur, JPEG, low light...)


@dataclass(frozen=True)
class DataCfg:
    root: str | None = None  # folder-pairs or VOC layout; None = built-in synthetic set
    task: str = "portrait"  # synthetic task when root is None: portrait | parts
    classes: tuple[str, ...] | None = None  # else classes.txt or the synthetic task's
    input_size: tuple[int, int] = (256, 256)
    mean: tuple[float, float, float] | None = None  # 0-255 pixel units
    std: tuple[float, float, float] | None = None
    train_split: str = "train"
    val_split: str = "val"
    val_fraction: float = 0.1  # folder layout without split folders
    synth_train: int = 2000
    synth_val: int = 200
    seed: int = 0
    augment: AugmentCfg = field(default_factory=AugmentCfg)


@dataclass(frozen=True)
class TrainCfg:
    epochs: int = 10
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    dice_weight: float = 1.0
    boundary_weight: float = 0.0  # extra CE weight on pixels in the ground truth's Boundary IoU band
    steps_per_epoch: int | None = None  # None = one pass over the training set
    workers: int = 0
    seed: int = 0
    amp: bool = True  # used on CUDA only
    device: str = "auto"


@dataclass(frozen=True)
class ExportCfg:
    """``edgeseg export``'s defaults, the one source of them: a checkpoint's recipe ``export:`` section
    overrides these, and flags given on the command line (or to the Python API) override both."""

    formats: tuple[str, ...] = ("onnx", "tflite", "coreml")
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    calib_count: int = 32
    parity_images: int = 16
    calib_method: str = "minmax"  # int8 activation-range calibration (CALIB_METHODS) where a format offers it
    thresholds: dict = field(default_factory=lambda: {"fp32": 0.999, "fp16": 0.995, "int8": 0.98, "pal6": 0.98})
    # agreement on the stress set (phone-camera corruptions and real photographs)
    stress_thresholds: dict = field(default_factory=lambda: {"fp32": 0.999, "fp16": 0.99, "int8": 0.95, "pal6": 0.95})
    max_gt_drop: float = 1.0  # mIoU points
    stress: str = "gate"  # stress parity (corruptions + real photos): "gate" | "report" (measured, not gated) | "off"


@dataclass(frozen=True)
class Recipe:
    name: str = "custom"
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    export: ExportCfg = field(default_factory=ExportCfg)

    def to_dict(self) -> dict:
        """Plain dict (lists for tuples), safe for YAML, JSON and weights_only checkpoints."""
        return _plain(dataclasses.asdict(self))


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type, or raise RecipeError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"recipe key '{where}' must be a mapping, got {value!r}")
        return _build(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"recipe key '{where}' must be a list, got {value!r}")
        args = typing.get_args(tp)
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise RecipeError(f"recipe key '{where}' must have {len(item_types)} values, got {len(value)}")
        return tuple(_coerce(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(item_types, value)))
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"recipe key '{where}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"recipe key '{where}' must be true/false, got {value!r}")
        return value
    if tp in (int, float, str):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise RecipeError(f"recipe key '{where}' must be {tp.__name__}, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise RecipeError(f"recipe key '{where}' must be {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != out:
            raise RecipeError(f"recipe key '{where}' must be an integer, got {value!r}")
        return out
    return value


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise RecipeError(f"unknown recipe key '{where}'; known keys here: {', '.join(sorted(known))}")
    kwargs = {k: _coerce(hints[k], v, f"{prefix}.{k}" if prefix else k) for k, v in values.items()}
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Valid ranges: one rule per field, "where" -> (check, what a valid value is)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda v: _finite(v) and v >= low


def _above(low: float) -> Callable[[Any], bool]:
    return lambda v: _finite(v) and v > low


def _between(low: float, high: float) -> Callable[[Any], bool]:
    return lambda v: _finite(v) and low <= v <= high


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _text(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _all(check: Callable[[Any], bool], *, min_len: int = 1, unique: bool = False) -> Callable[[Any], bool]:
    return lambda v: len(v) >= min_len and all(check(x) for x in v) and (not unique or len(set(v)) == len(v))


def _one_of(*names: str) -> Callable[[Any], bool]:
    return lambda v: v in names


def _thresholds(v: dict) -> bool:
    return all(k in PRECISIONS and _between(0, 1)(x) for k, x in v.items())


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


FORMATS = ("onnx", "tflite", "coreml", "executorch")
PRECISIONS = ("fp32", "fp16", "int8", "pal6")
# int8 activation-range calibration methods by name; each exporter declares which of them its quantizer offers
CALIB_METHODS = ("minmax", "entropy", "percentile")
STRESS_MODES = ("gate", "report", "off")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (is_model_name, MODEL_NAME_RULE),
    "model.arch": (_text, "an architecture name (see `edgeseg models`)"),
    "model.width": (_optional(_above(0)), "a number > 0, or unset"),
    "model.decoder_channels": (_optional(_all(_at_least(1))), "a non-empty list of integers >= 1, or unset"),
    "model.inter_channels": (_optional(_at_least(1)), "an integer >= 1, or unset"),
    "model.weights": (_optional(_text), "a weights file path, imagenet, timm:NAME[.TAG] or torchvision:ENUM.MEMBER, or unset"),
    "data.root": (_optional(_text), "a dataset folder, or unset for the built-in synthetic set"),
    "data.task": (_text, "a synthetic task name, e.g. portrait"),
    "data.classes": (_optional(_all(_text, min_len=2, unique=True)), "at least two distinct class names, or unset"),
    "data.input_size": (_all(_at_least(1)), "[height, width], integers >= 1"),
    "data.mean": (_optional(_all(_finite)), "three finite numbers (0-255 pixel units), or unset"),
    "data.std": (_optional(_all(_above(0))), "three finite numbers > 0 (0-255 pixel units), or unset"),
    "data.train_split": (_text, "a split name"),
    "data.val_split": (_text, "a split name"),
    "data.val_fraction": (lambda v: _finite(v) and 0 < v < 1, "a number between 0 and 1 (exclusive)"),
    "data.synth_train": (_at_least(1), "an integer >= 1"),
    "data.synth_val": (_at_least(1), "an integer >= 1"),
    "data.seed": (_at_least(0), "an integer >= 0"),
    "data.augment.hflip": (_is_bool, "true or false"),
    "data.augment.scale": (lambda v: _all(_above(0))(v) and v[0] <= v[1], "[low, high] with 0 < low <= high"),
    "data.augment.rotate": (_between(0, 180), "degrees between 0 and 180"),
    "data.augment.color": (_between(0, 1), "a jitter strength between 0 and 1"),
    "data.augment.corrupt": (_between(0, 1), "a probability between 0 and 1"),
    "train.epochs": (_at_least(1), "an integer >= 1"),
    "train.batch_size": (_at_least(1), "an integer >= 1"),
    "train.lr": (_above(0), "a finite number > 0"),
    "train.weight_decay": (_at_least(0), "a finite number >= 0"),
    "train.dice_weight": (_at_least(0), "a finite number >= 0"),
    "train.boundary_weight": (_at_least(0), "a finite number >= 0"),
    "train.steps_per_epoch": (_optional(_at_least(1)), "an integer >= 1, or unset for one pass over the data"),
    "train.workers": (_at_least(0), "an integer >= 0"),
    "train.seed": (_at_least(0), "an integer >= 0"),
    "train.amp": (_is_bool, "true or false"),
    "train.device": (lambda v: DEVICE_PATTERN.fullmatch(v) is not None, "auto, cpu, cuda, cuda:N or mps"),
    "export.formats": (_all(_one_of(*FORMATS), unique=True),
                       f"a non-empty list of distinct formats from {', '.join(FORMATS)}"),
    "export.precisions": (_all(_one_of(*PRECISIONS), unique=True),
                          f"a non-empty list of distinct precisions from {', '.join(PRECISIONS)}"),
    "export.calib_count": (_at_least(1), "an integer >= 1"),
    "export.parity_images": (_at_least(1), "an integer >= 1"),
    "export.calib_method": (_one_of(*CALIB_METHODS), f"one of {', '.join(CALIB_METHODS)}"),
    "export.thresholds": (_thresholds, f"a mapping of precision ({', '.join(PRECISIONS)}) to a number between 0 and 1"),
    "export.stress_thresholds": (_thresholds, f"a mapping of precision ({', '.join(PRECISIONS)}) to a number between 0 and 1"),
    "export.max_gt_drop": (_between(0, 100), "mIoU points between 0 and 100"),
    "export.stress": (_one_of(*STRESS_MODES), f"one of {', '.join(STRESS_MODES)}"),
}


def recipe_fields(obj: Any, prefix: str = ""):
    """(dotted key, value) of every leaf field of a recipe dataclass tree."""
    for f in dataclasses.fields(obj):
        where, value = f"{prefix}{f.name}", getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from recipe_fields(value, where + ".")
        else:
            yield where, value


def _check_rules(obj: Any, prefix: str = "") -> None:
    for where, value in recipe_fields(obj, prefix):
        check, valid = RULES[where]
        if not check(value):
            shown = list(value) if isinstance(value, tuple) else value
            raise RecipeError(f"recipe key '{where}' is {shown!r}; it must be {valid}")


def validate(recipe: Recipe) -> Recipe:
    """Check every field against ``RULES`` and that the training device exists; RecipeError naming the first bad one."""
    _check_rules(recipe)
    check_device(recipe.train.device)
    return recipe


def augment_from_dict(values: dict | None) -> AugmentCfg:
    """``data.augment`` of a recipe kept as a plain dict (e.g. in a checkpoint), checked like a recipe file;
    keys it lacks (a checkpoint older than the key) take the defaults."""
    cfg = _build(AugmentCfg, _plain(values or {}), "data.augment")
    _check_rules(cfg, "data.augment.")
    return cfg


def export_from_dict(values: dict | None) -> ExportCfg:
    """A recipe's ``export:`` section kept as a plain dict (e.g. in a checkpoint), checked like a recipe file;
    keys it lacks take the defaults, and threshold mappings name only the precisions they change."""
    values = _plain(values or {})
    defaults = ExportCfg()
    for key in ("thresholds", "stress_thresholds"):
        if isinstance(values.get(key), dict):
            values[key] = {**getattr(defaults, key), **values[key]}
    cfg = _build(ExportCfg, values, "export")
    _check_rules(cfg, "export.")
    return cfg


def check_device(name: str) -> None:
    """RecipeError when ``train.device`` names an accelerator this machine does not have."""
    if name in ("auto", "cpu"):
        return
    import torch  # only for an accelerator: the check asks torch what it sees

    if name == "mps":
        if not torch.backends.mps.is_available():
            raise RecipeError("recipe key 'train.device' is 'mps' but torch sees no Apple GPU here; "
                              "use --set train.device=auto (or cpu)")
        return
    index = int(name.partition(":")[2] or 0)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        seen, fix = ((f"{count} CUDA GPU(s), cuda:0 to cuda:{count - 1}", "cuda:0 (or auto)") if count
                     else ("no CUDA GPU", "auto (or cpu)"))
        raise RecipeError(f"recipe key 'train.device' is {name!r} but torch sees {seen} here; use --set train.device={fix}")


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"--set {dotted}: '{k}' is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``a.b=value`` (value in YAML syntax) into (path, value)."""
    if "=" not in text:
        raise RecipeError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {key}: value {raw!r} is not valid YAML ({exc.__class__.__name__})") from None


def recipe_with(values: dict, settings: typing.Iterable[tuple[str, Any]]) -> Recipe:
    """Build a Recipe from a plain dict (a recipe file's, or one stored in a checkpoint) with the
    (dotted key, value) ``settings`` set on top, in order; unknown keys and out-of-range values are errors."""
    tree = _plain(values or {})
    for key, value in settings:
        _set_path(tree, key, _plain(value))
    return validate(_build(Recipe, tree))


def recipe_from_dict(values: dict, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Build a Recipe from a plain dict plus ``a.b=v`` overrides; unknown keys and out-of-range values are errors."""
    return recipe_with(values, (parse_override(text) for text in overrides))


def val_fraction_or_default(value: object) -> float:
    """A recorded ``data.val_fraction`` (a checkpoint's recipe, a manifest), or ``DataCfg``'s when it is missing
    or unusable: read without trusting it, so eval, export and bench split a folder the way training did."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1
    return float(value) if ok else DataCfg.val_fraction


#: where the shipped recipes are installed (``[tool.setuptools.data-files]`` in pyproject.toml: the wheel carries
#: the repository's ``recipes/*.yaml`` there, relative to the installation's data prefix)
BUNDLED_RECIPES_DIR = ("share", "edgeseg", "recipes")


def bundled_recipes() -> dict[str, Path]:
    """The recipes shipped with edgeseg, by name (file stem) -> file: a source checkout's ``recipes/`` folder
    (editable installs), else the files the installed distribution lists under ``BUNDLED_RECIPES_DIR``."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "recipes").is_dir():
        files = list((checkout / "recipes").glob("*.yaml"))
    else:
        from importlib import metadata

        try:
            dist = metadata.distribution("edgeseg")
        except metadata.PackageNotFoundError:
            return {}
        files = [Path(dist.locate_file(f)).resolve() for f in dist.files or ()
                 if f.suffix == ".yaml" and tuple(f.parts[-4:-1]) == BUNDLED_RECIPES_DIR]
    return {f.stem: f for f in sorted(files) if f.is_file()}


def recipe_file(spec: str | Path) -> Path:
    """The recipe file ``spec`` names: a file path (it wins), else a bundled recipe's name (``bundled_recipes``,
    with or without ``.yaml``); RecipeError listing the bundled names otherwise."""
    path = Path(spec)
    if path.is_file():
        return path
    bundled = bundled_recipes()
    name = path.name[:-len(".yaml")] if path.name.endswith(".yaml") else path.name
    if str(spec) in (name, f"{name}.yaml") and name in bundled:
        return bundled[name]
    if path.is_dir():
        raise RecipeError(f"recipe {path} is a folder, not a recipe file; give a .yaml file or a bundled recipe's name "
                          f"({', '.join(bundled) or 'none installed'})")
    raise RecipeError(f"recipe file not found: {path}; give a recipe .yaml file or a bundled recipe's name "
                      f"({', '.join(bundled) or 'none installed'})")


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load a YAML recipe file, or a bundled recipe by name (``recipe_file``); errors name the file and the key."""
    path = recipe_file(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not a text file (byte {exc.start} is not UTF-8), so not a YAML recipe; "
                          "check the path (a recipe is a .yaml file)") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping at the top level")
    named = "name" in values or any(parse_override(text)[0] == "name" for text in overrides)
    if not named and not is_model_name(path.stem):
        raise RecipeError(f"{path}: the recipe sets no 'name' and its file name {path.stem!r} cannot stand in for one "
                          f"(a name must be {MODEL_NAME_RULE}); add name: to the recipe or rename the file")
    declared = (values.get("data") or {}).get("input_size") if isinstance(values.get("data"), dict) else None
    values.setdefault("name", path.stem)
    try:
        recipe = recipe_from_dict(values, overrides)
    except RecipeError as exc:
        raise RecipeError(f"{path}: {exc}") from None
    return recipe if named else dataclasses.replace(recipe, name=_sized_name(path.stem, declared, recipe.data.input_size))


def _sized_name(stem: str, declared, size) -> str:
    """The model name a recipe file's name gives: the file name, with a trailing input size (``..._256`` or
    ``..._256x192``, as the file declares it) replaced when ``--set data.input_size`` trains another size, so the
    checkpoint and the exported files say what they take (``..._64``)."""
    match = re.fullmatch(r"(.+_)(\d+)(?:x(\d+))?", stem)
    if match is None or not isinstance(declared, (list, tuple)) or len(declared) != 2:
        return stem
    h, w = int(match.group(2)), int(match.group(3) or match.group(2))
    if [h, w] != list(declared) or tuple(size) == (h, w):
        return stem
    return f"{match.group(1)}{size[0]}" + (f"x{size[1]}" if size[0] != size[1] else "")

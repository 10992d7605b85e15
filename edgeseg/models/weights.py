"""Load torchvision / timm / edgeseg weights into a registered model, from a local file or by name.

``model.weights`` (``train --weights``) is one of:

- ``imagenet``: the ImageNet weights of the architecture's own encoder (``ArchSpec.imagenet_weights``:
  the timm model the U-Net encoder is built from, at timm's default pretrained tag; torchvision's
  ``MobileNet_V3_{Large,Small}_Weights.IMAGENET1K_V1`` for LR-ASPP).
- ``timm:<model>[.<tag>]``: timm's pretrained weights, fetched by timm itself
  (``timm.create_model(pretrained=True)``): from the Hugging Face hub into the hub cache
  (``HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``; ``HF_HUB_OFFLINE=1`` uses the cache
  only), or, for a model without a hub id, from its URL into torch hub's cache with the hash check.
- ``torchvision:<Enum>.<member>``: torchvision's weights API (``torchvision.models.get_weight``);
  torch hub downloads the URL into ``torch.hub.get_dir()/checkpoints`` (``TORCH_HOME``) and checks
  the sha256 prefix its file name carries.
- anything else: a local file (a ``torch.save``d state_dict, an edgeseg checkpoint, or ``.safetensors``).

Nothing is downloaded unless a name is given; a cached copy is used on the next run. A failed
download (offline, no network, a bad hash) is a one-line CheckpointError naming the URL or hub repo
and the cache folder where a copy can be placed by hand.

The state dict's keys are tried as-is and under the architecture's known prefix mappings (e.g. a
torchvision ImageNet ``features.*`` checkpoint -> ``backbone.*``); the mapping that covers the most
keys wins, and partial or mis-shaped loads are refused with a message naming keys.
"""
from __future__ import annotations

import errno
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn as nn

from edgeseg.compat import loggers_quiet_below_error
from edgeseg.errors import CheckpointError, RecipeError
from edgeseg.models.checkpoint import load_state_dict_file, state_mismatch, upgrade_state
from edgeseg.models.spec import ArchSpec

IMAGENET = "imagenet"
TIMM = "timm:"
TORCHVISION = "torchvision:"
HF_URL = "https://huggingface.co"

# OSErrors about the local disk (filling a cache folder), left for the CLI's own one-line mapping
_LOCAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG}


def is_weights_name(source: str | Path) -> bool:
    """Whether ``source`` names weights (``imagenet``, ``timm:...``, ``torchvision:...``); a Path is always a file."""
    return isinstance(source, str) and (source == IMAGENET or source.startswith((TIMM, TORCHVISION)))


def weights_name(source: str | Path, spec: ArchSpec, options: dict | None = None) -> str | Path:
    """``imagenet`` -> the name of ``spec``'s encoder ImageNet weights for ``options``; anything else unchanged."""
    if not (isinstance(source, str) and source == IMAGENET):
        return source
    if spec.imagenet_weights is None:
        raise RecipeError(f"model.weights 'imagenet': {spec.name} names no ImageNet weights; give a weights file, "
                          "timm:<model> or torchvision:<Weights>.<member>")
    return spec.imagenet_weights({**spec.options, **(options or {})})


def fetch_weights(name: str, label: str = "") -> dict:
    """The state dict for a ``timm:`` or ``torchvision:`` name, from the library's cache or downloaded into it;
    errors call it ``label`` (default: the name, quoted)."""
    label = label or f"'{name}'"
    if name.startswith(TIMM):
        return _timm_state(name[len(TIMM):], label)
    if name.startswith(TORCHVISION):
        return _torchvision_state(name[len(TORCHVISION):], label)
    raise ValueError(f"not a weights name: {name!r}")


def load_arch_weights(model: nn.Module, source: str | Path, spec: ArchSpec, options: dict | None = None) -> str:
    """Load ``source`` (a file, ``imagenet``, ``timm:...`` or ``torchvision:...``) into ``model`` of
    architecture ``spec`` built with ``options``; return which mapping was used."""
    name = weights_name(source, spec, options)
    label = f"'{source}' ({name})" if name != source else ""
    return load_weights(model, name, spec.weight_prefixes, label=label)


def load_weights(model: nn.Module, source: str | Path, prefixes: tuple[tuple[str, str], ...] = (), *,
                 label: str = "") -> str:
    """Load weights from ``source`` (a file, or a ``timm:``/``torchvision:`` name) into ``model`` in place;
    return which mapping was used.

    ``prefixes`` are (file prefix, model prefix) pairs for partial (backbone/encoder) loads:
    every model key under the model prefix must then be present with the same shape. ``label`` names
    named weights in errors (default: the name, quoted).
    """
    if is_weights_name(source):
        if source == IMAGENET:
            raise ValueError("resolve 'imagenet' for an architecture with weights_name() or load_arch_weights()")
        label = label or f"'{source}'"
        state, what = fetch_weights(source, label), f"model.weights {label}"
    else:
        state, what = _read_file(Path(source)), str(source)
    target = model.state_dict()
    candidates = [("", "")] + list(prefixes)
    best = max(candidates, key=lambda c: len(set(_remap(state, *c)) & set(target)))
    src, dst = best
    mapped = upgrade_state(model, _remap(state, src, dst))
    full = best == ("", "")
    needed = set(target) if full else {k for k in target if k.startswith(dst)}
    # backbone checkpoints carry classifier heads we do not use
    problem = state_mismatch(mapped, target, needed, extra_ok=not full)
    if problem:
        raise CheckpointError(f"{what}: weights do not fit this model ({problem}); "
                              "use weights saved for the recipe's model.arch and options")
    model.load_state_dict({k: mapped[k] for k in needed}, strict=full)
    return "full model" if full else f"{src or '<root>'}* -> {dst}*"


def _remap(state: dict, src: str, dst: str) -> dict:
    return {dst + k[len(src):]: v for k, v in state.items() if k.startswith(src)}


def _read_file(path: Path) -> dict:
    """A local weights file: ``.safetensors`` (as the Hugging Face hub serves timm's), else torch's format."""
    if path.suffix != ".safetensors" or not path.is_file():
        return load_state_dict_file(path)  # also names a missing file
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None


# ---------------------------------------------------------------------------------------------
# Names resolved by the libraries


def _timm_state(model_name: str, label: str) -> dict:
    """timm's pretrained weights for ``model_name`` (default tag when none), through timm's own loader."""
    import timm
    from timm.models import get_pretrained_cfg, is_model, set_pretrained_check_hash

    arch, _, tag = model_name.partition(".")
    # only registered names: timm's 'hf-hub:' / 'local-dir:' forms would fetch a config before any weights
    if not arch or ":" in model_name or "/" in model_name or not is_model(arch):
        import difflib

        close = difflib.get_close_matches(arch, timm.list_models(pretrained=True), n=3)
        raise RecipeError(f"model.weights {label}: timm has no model {arch!r}"
                          + (f"; did you mean {', '.join(TIMM + c for c in close)}" if close else "")
                          + "; names are timm.list_pretrained() entries, e.g. timm:mobilenetv4_conv_small.e2400_r224_in1k")
    try:
        cfg = get_pretrained_cfg(model_name)
    except RuntimeError:  # a tag the architecture does not have
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        known = [TIMM + n for n in timm.list_pretrained(arch) if n.split(".")[0] == arch]
        what = f"no pretrained tag {tag!r} for {arch}" if tag and cfg is None else f"no pretrained weights for {model_name}"
        raise RecipeError(f"model.weights {label}: timm has {what}"
                          + (f"; it has {', '.join(known)}" if known else ""))
    full = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    if cfg.hf_hub_id:
        from huggingface_hub import constants

        repo = cfg.hf_hub_id.split("@")[0]
        cache = Path(constants.HF_HUB_CACHE)
        where = f"Hugging Face hub repo {repo}"
        hub = True
        how = (f"fill that cache where there is network (hf download {repo} --cache-dir {cache}) and copy it here, "
               f"or download {HF_URL}/{repo}/resolve/main/model.safetensors and give that file's path")
    else:
        where, cache, how = _url_place(cfg.url)
        hub = False
    from timm.models import _builder

    check_hash = getattr(_builder, "_CHECK_HASH", False)
    set_pretrained_check_hash(True)  # timm leaves torch hub's hash check off for URL weights
    try:
        with loggers_quiet_below_error("huggingface_hub"):  # a warning per retry when the hub cannot be reached
            model = timm.create_model(full, pretrained=True)
    except Exception as exc:
        raise _fetch_failed(exc, label, where, cache, how, hub=hub) from None
    finally:
        set_pretrained_check_hash(check_hash)
    return model.state_dict()


def _torchvision_state(ref: str, label: str) -> dict:
    """torchvision's weights ``Enum.member``, downloaded by torch hub (hash checked) into its cache."""
    from torchvision.models import get_weight

    enum_name, _, member = ref.partition(".")
    example = "e.g. torchvision:MobileNet_V3_Large_Weights.IMAGENET1K_V1"
    try:
        weights = get_weight(ref)
    except ValueError:
        raise RecipeError(f"model.weights {label}: torchvision has no weights enum {enum_name!r}; give "
                          f"torchvision:<Enum>.<member>, {example}") from None
    except KeyError:
        try:
            members = "; it has " + ", ".join(type(get_weight(f"{enum_name}.DEFAULT")).__members__)
        except (KeyError, ValueError):
            members = ""
        raise RecipeError(f"model.weights {label}: {enum_name} has no member {member!r}{members}") from None
    where, cache, how = _url_place(weights.url)
    try:
        state = weights.get_state_dict(progress=True, check_hash=True, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise _fetch_failed(exc, label, where, cache, how) from None
    if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise CheckpointError(f"model.weights {label}: {cache / Path(weights.url).name} is not a state_dict")
    return state


def _url_place(url: str) -> tuple[str, Path, str]:
    """(what is downloaded, torch hub's cache folder, how to place it there by hand) for a URL."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    name = Path(urlparse(url).path).name
    return url, cache, f"place {name} in {cache} by hand (the name must stay as is), or give the file's path"


def _fetch_failed(exc: Exception, label: str, where: str, cache: Path, how: str, *, hub: bool = False) -> CheckpointError:
    """The one-line error for a download the library could not make (``hub``: from the Hugging Face hub);
    re-raise anything that is not one."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.errno in _LOCAL_ERRNOS:
        raise exc  # the cache folder itself (full, read-only, ...): the CLI names it and the fix
    if isinstance(exc, RuntimeError) and str(exc).startswith("invalid hash value"):
        return CheckpointError(f"model.weights {label}: the download of {where} does not match the sha256 prefix "
                               f"in its name ({_first_line(exc)}); nothing was cached; run again, or {how}")
    if not _is_network_error(exc):
        raise exc
    return CheckpointError(f"model.weights {label}: could not download {where} ({_reason(exc, hub)}) and it is not in "
                           f"the cache {cache}; {how}")


def _is_network_error(exc: BaseException) -> bool:
    """A lookup or transfer failure of torch hub (urllib) or the Hugging Face hub (its HTTP client)."""
    import http.client

    if isinstance(exc, (OSError, http.client.HTTPException)):  # URLError, ConnectionError, timeouts, hub errors
        return True
    try:
        from huggingface_hub.errors import EntryNotFoundError

        if isinstance(exc, EntryNotFoundError):
            return True
    except ImportError:
        pass
    return type(exc).__module__.split(".")[0] in {"httpx", "httpx2", "requests", "urllib3"}


def _reason(exc: BaseException, hub: bool) -> str:
    """Why the download failed, in a few words."""
    if hub:
        from huggingface_hub import constants

        if constants.is_offline_mode():
            return "offline: HF_HUB_OFFLINE is set"
    reason = getattr(exc, "reason", None)  # urllib's URLError wraps the socket error
    return _first_line(reason if isinstance(reason, BaseException) else exc)


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()
    return text if len(text) <= 200 else text[:197] + "..."

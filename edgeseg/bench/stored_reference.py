"""The parity reference stored in an export directory, which makes the directory self-contained (layer 3).

At export, the PyTorch fp32 model's outputs on the parity images (and on the stress set) are
written beside the exported files as one compressed ``parity-reference.npz`` and listed in
``manifest.json`` (``parity_reference``: path, bytes, sha256, what it holds). ``edgeseg bench``
checks every file's parity against it: no checkpoint, any working directory, after the
directory was moved or copied. The file is verified like every artifact before it is read.

Arrays in the file (N parity images, S stress images, C classes, model input H x W):

- ``images`` uint8 [N, H, W, 3], ``ids`` str [N]: the parity pixels, as the export checked them
- ``argmax`` uint8 [N, H, W]: the PyTorch fp32 prediction (argmax of the float32 logits)
- ``logits`` float16 [N, C, H, W]: for ``max_abs_logit_diff`` (left out above ``LOGITS_BUDGET`` bytes)
- ``masks`` uint8 [N, H, W]: ground-truth labels, when the parity images have them
- ``slices`` str: JSON {id: {attribute: value}}, when the images come with slice attributes
- ``stress_images`` uint8 [S, H, W, 3], ``stress_ids`` str [S], ``stress_argmax`` uint8 [S, H, W]:
  the stress set (phone-camera corruptions and real photos), when the export checked it

Pixels are stored rather than regenerated: JPEG, blur and rotation come from Pillow and libjpeg,
whose output can change between versions, so a regenerated stress image may not be the one the
reference saw.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from edgeseg.bench.parity import ReferenceSet
from edgeseg.errors import ArtifactError
from edgeseg.fsutil import atomic_path
from edgeseg.manifest import REFERENCE_NAME, Manifest, file_digest

LOGITS_BUDGET = 16 * 2**20  # float16 logits larger than this (many classes, large inputs) are not stored


def store_reference(ref: ReferenceSet, stress: ReferenceSet | None, directory: Path) -> dict:
    """Write ``ref`` (and its ``stress`` set) to ``directory/parity-reference.npz``, atomically; returns the
    manifest's ``parity_reference`` entry (path, bytes, sha256 and what the file holds)."""
    arrays = {"images": ref.images, "ids": np.asarray(ref.ids, dtype=str), "argmax": ref.argmax}
    logits = ref.logits.astype(np.float16)
    if logits.nbytes <= LOGITS_BUDGET:
        arrays["logits"] = logits
    if ref.masks is not None:
        arrays["masks"] = ref.masks
    if ref.slices:
        arrays["slices"] = np.asarray(json.dumps(ref.slices, sort_keys=True))
    if stress is not None:
        arrays.update(stress_images=stress.images, stress_ids=np.asarray(stress.ids, dtype=str),
                      stress_argmax=stress.argmax)
    dest = Path(directory) / REFERENCE_NAME
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    size, sha = file_digest(dest)
    return {"path": REFERENCE_NAME, "bytes": size, "sha256": sha, "reference": "pytorch-fp32", "data": ref.description,
            "images": len(ref.images), "labels": ref.masks is not None,
            "logits": "float16" if "logits" in arrays else None,
            "stress_images": 0 if stress is None else len(stress.images)}


def load_reference(manifest: Manifest) -> ReferenceSet:
    """The parity reference stored in ``manifest``'s directory, with its stress set (``.stress``) when stored.

    ArtifactError, one line naming the file and the fix, when the manifest lists none (an older
    export), the file is missing, changed since export (sha256), or does not hold what the model needs.
    """
    path = manifest.reference_file()
    model = manifest.model
    size = (int(model["input"]["height"]), int(model["input"]["width"]))
    classes = tuple(model["classes"])
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{path}: not a readable parity reference ({exc.__class__.__name__}); re-export") from None
    problem = _problem(arrays, size, len(classes))
    if problem:
        raise ArtifactError(f"{path}: not a valid parity reference for this model ({problem}); re-export")
    description = str((manifest.parity_reference or {}).get("data") or "parity set stored by the export")
    try:
        slices = json.loads(str(arrays["slices"])) if "slices" in arrays else None
    except ValueError:
        raise ArtifactError(f"{path}: not a valid parity reference ('slices' is not JSON); re-export") from None
    ref = ReferenceSet(arrays["images"], arrays.get("masks"), [str(i) for i in arrays["ids"]], arrays.get("logits"),
                       classes, description, slices, argmax=arrays["argmax"])
    if "stress_images" in arrays:
        ref.stress = ReferenceSet(arrays["stress_images"], None, [str(i) for i in arrays["stress_ids"]], None, classes,
                                  f"stress set of {description}", argmax=arrays["stress_argmax"])
    return ref


def _problem(arrays: dict, size: tuple[int, int], n_classes: int) -> str:
    """What the stored arrays lack for a model of input ``size`` with ``n_classes`` classes ('' when nothing)."""
    h, w = size
    layout = {"images": ("u1", ("N", h, w, 3)), "ids": ("U", ("N",)), "argmax": ("u1", ("N", h, w)),
              "logits": ("f2", ("N", n_classes, h, w)), "masks": ("u1", ("N", h, w)),
              "stress_images": ("u1", ("S", h, w, 3)), "stress_ids": ("U", ("S",)), "stress_argmax": ("u1", ("S", h, w))}
    required = ["images", "ids", "argmax"]
    if any(k.startswith("stress_") for k in arrays):
        required += ["stress_images", "stress_ids", "stress_argmax"]
    missing = [k for k in required if k not in arrays]
    if missing:
        return f"no '{missing[0]}' array"
    counts: dict[str, int] = {}
    for key, (kind, shape) in layout.items():
        a = arrays.get(key)
        if a is None:
            continue
        dtype_ok = a.dtype.kind == "U" if kind == "U" else a.dtype == np.dtype(kind)
        if not dtype_ok or a.ndim != len(shape) or any(s != d for s, d in zip(shape[1:], a.shape[1:])):
            wanted = "str" if kind == "U" else np.dtype(kind).name
            return f"'{key}' is {a.dtype.name} {list(a.shape)}, expected {wanted} [{'x'.join(map(str, shape))}]"
        if not len(a) or counts.setdefault(shape[0], len(a)) != len(a):
            return f"'{key}' holds {len(a)} entries, expected {counts.get(shape[0]) or 'at least 1'}"
    if any(int(arrays[k].max()) >= n_classes for k in ("argmax", "stress_argmax") if k in arrays):
        return f"a stored prediction names a class beyond the model's {n_classes}"
    return ""

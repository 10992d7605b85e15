"""Convert COCO and LabelMe annotations into edgeseg's folder layout (layer 1).

``edgeseg data convert coco|labelme`` writes ``OUT/images/<id><suffix>`` (the images, copied byte for
byte), ``OUT/masks/<id>.png`` (mode L class-index masks: 0 = background, i = the i-th ``--classes``
name, 255 = ignore) and ``OUT/classes.txt`` (``background`` first, then the named classes in order).
The folder has no split sub-folders, so edgeseg derives train and val from it (``data.val_fraction``).

Work happens in two steps. ``plan_coco`` / ``plan_labelme`` read and check everything that is cheap
to check (the output folder, the annotation files, class names, which images exist, the shape of every
annotation that will be drawn) and write nothing. ``Plan.write`` then draws each mask, copies each
image into a staging folder beside ``OUT`` and installs it at the end, so ``OUT`` appears complete or
not at all. A non-empty ``OUT`` is refused: a user's folder is never written into or replaced.

Rules (also in the README):

- Categories or labels not named in ``--classes`` are background: their annotations are not drawn,
  so they never erase a named class.
- Overlaps: annotations are drawn in file order and a later one wins where two overlap.
- COCO crowd regions (``iscrowd: 1``) of a named class are ignore (255) except where a non-crowd
  instance of a named class covers them: there the instance's class is kept. Crowd regions of other
  categories are background.
- Annotation coordinates are in the image as it is displayed (its EXIF orientation applied, the way
  edgeseg, LabelMe and detectron2 read images); an image whose size differs from the annotation
  file's is an error.
- COCO polygons and RLE (compressed and uncompressed) are rasterized by pycocotools; LabelMe shapes
  (polygon, rectangle, circle) by Pillow's ImageDraw, as LabelMe itself does (outlines included).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from edgeseg.data.images import IMAGE_SUFFIXES
from edgeseg.errors import DataError, EdgesegError
from edgeseg.fsutil import check_output, install_staged, is_inside, is_staging, staging_dir

BACKGROUND = "background"
IGNORE = 255
MAX_CLASSES = 254  # named classes: indices 1..254; 255 is ignore
LABELME_SHAPES = ("polygon", "rectangle", "circle")
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class Item:
    """One image to write: its id, source file, annotated size (h, w) or None, and what to draw."""

    id: str
    image: Path
    size: tuple[int, int] | None
    shapes: tuple  # format-specific drawing instructions, in file order


@dataclass
class Stats:
    """What ``Plan.write`` wrote: image count, images per named class, crowd regions kept as ignore."""

    images: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    ignore_images: int = 0


@dataclass(frozen=True)
class Plan:
    """A checked conversion, ready to write; ``missing`` and ``skipped`` are for the user to read."""

    kind: str  # "coco" | "labelme"
    source: Path  # the annotation file or folder
    out: Path
    classes: tuple[str, ...]  # background first
    items: tuple[Item, ...]
    missing: tuple[Path, ...]  # images listed but not on disk: skipped
    skipped: tuple[str, ...]  # one line per kind of annotation left out (no area, unsupported shape)
    render: Callable[[Item, tuple[int, int]], np.ndarray]

    def write(self, advance: Callable[[], None] = lambda: None) -> Stats:
        """Draw every mask and copy every image into a staging folder, then install it as ``out``."""
        _check_target(self.out)
        stats = Stats(per_class={c: 0 for c in self.classes[1:]})
        tmp = staging_dir(self.out)
        try:
            (tmp / "images").mkdir()
            (tmp / "masks").mkdir()
            (tmp / "classes.txt").write_text("".join(f"{c}\n" for c in self.classes), encoding="utf-8")
            for item in self.items:
                size = _displayed_size(item.image)
                if item.size is not None and item.size != size:
                    raise DataError(f"{item.image}: image is {size[1]}x{size[0]} but {self.source} annotates it as "
                                    f"{item.size[1]}x{item.size[0]} (width x height); is it the right image?")
                mask = self.render(item, size)
                _copy(item.image, tmp / "images" / f"{item.id}{item.image.suffix}")
                Image.fromarray(mask, "L").save(tmp / "masks" / f"{item.id}.png")
                present = np.bincount(mask.ravel(), minlength=256)
                for index, name in enumerate(self.classes[1:], start=1):
                    stats.per_class[name] += bool(present[index])
                stats.ignore_images += bool(present[IGNORE])
                stats.images += 1
                advance()
            _check_target(self.out)
            install_staged(tmp, self.out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return stats


# ---------------------------------------------------------------------------- COCO


def plan_coco(annotations: str | os.PathLike, images: str | os.PathLike, classes: Sequence[str],
              out: str | os.PathLike) -> Plan:
    """Check a COCO instances file and its image folder for a conversion to ``out``; writes nothing.

    DataError (exit 2, one line) for: a non-empty or unusable ``out``, a missing or malformed file, a
    class not among the file's categories (the message lists them), annotations that cannot be drawn,
    and a file none of whose images is in ``images``. Images that are listed but missing are skipped
    (``Plan.missing``).
    """
    names = class_names(classes)
    out = _check_target(out, Path(images) if Path(images).is_dir() else None)
    path, images = Path(annotations), Path(images)
    if not images.is_dir():
        raise DataError(f"--images {images}: folder not found")
    doc = _read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(doc.get("categories"), list):
        raise DataError(f"{path}: not a COCO annotation file (needs 'images' and 'categories' lists)")
    anns = doc.get("annotations", [])
    if not isinstance(anns, list):
        raise DataError(f"{path}: 'annotations' is not a list")

    categories: dict[int, str] = {}
    for i, cat in enumerate(doc["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            raise DataError(f"{path}: categories[{i}] needs an integer 'id' and a 'name'")
        categories[cat["id"]] = cat["name"]
    present = sorted(set(categories.values()))
    unknown = [n for n in names if n not in present]
    if unknown:
        raise EdgesegError(f"--classes: {_quoted(unknown)} {'is not a category' if len(unknown) == 1 else 'are not categories'} "
                           f"in {path}; categories present: {', '.join(present) or 'none'}")
    index_of = {cid: names.index(name) + 1 for cid, name in categories.items() if name in names}

    listed: dict[int, dict] = {}
    ids: dict[str, str] = {}
    for i, img in enumerate(doc["images"]):
        if not isinstance(img, dict) or not _is_int(img.get("id")) or not isinstance(img.get("file_name"), str):
            raise DataError(f"{path}: images[{i}] needs an integer 'id' and a 'file_name'")
        if not (_is_int(img.get("height")) and _is_int(img.get("width")) and img["height"] > 0 and img["width"] > 0):
            raise DataError(f"{path}: image {img['id']} ({img['file_name']}) needs positive integer 'height' and 'width'")
        if img["id"] in listed:
            raise DataError(f"{path}: image id {img['id']} is listed twice")
        sample_id = _sample_id(img["file_name"], f"{path}: image {img['id']}")
        if PurePosixPath(img["file_name"]).suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{path}: image {img['id']} ({img['file_name']}) is not a kind edgeseg reads "
                            f"({', '.join(IMAGE_SUFFIXES)})")
        if sample_id in ids:
            raise DataError(f"{path}: images {ids[sample_id]} and {img['file_name']} would both be written as "
                            f"{sample_id}; rename one")
        ids[sample_id] = img["file_name"]
        listed[img["id"]] = {**img, "_id": sample_id, "_shapes": []}

    empty = 0
    for i, ann in enumerate(anns):
        where = f"{path}: annotation {ann.get('id', f'#{i}') if isinstance(ann, dict) else f'#{i}'}"
        if not isinstance(ann, dict):
            raise DataError(f"{where}: not an object")
        if not _is_int(ann.get("category_id")) or ann["category_id"] not in categories:
            raise DataError(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
        if not _is_int(ann.get("image_id")) or ann["image_id"] not in listed:
            raise DataError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if ann["category_id"] not in index_of:
            continue  # not a named class: background
        img = listed[ann["image_id"]]
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1):
            raise DataError(f"{where}: iscrowd is {crowd!r}; expected 0 or 1")
        segm = _coco_segmentation(ann.get("segmentation"), img["height"], img["width"], where)
        if segm is None:
            empty += 1
            continue
        img["_shapes"].append((index_of[ann["category_id"]], bool(crowd), segm))

    items, missing = [], []
    for img in listed.values():
        file = images / img["file_name"].replace("\\", "/")
        if not file.is_file():
            missing.append(file)
            continue
        items.append(Item(img["_id"], file, (img["height"], img["width"]), tuple(img["_shapes"])))
    if not items and listed:
        raise DataError(f"none of the {len(listed)} images {path} lists is in {images} (e.g. {missing[0].name}); "
                        "check --images")
    if not items:
        raise DataError(f"{path}: lists no images")
    skipped = (f"{empty} annotation{'s' if empty != 1 else ''} of named classes without an area (empty "
               "segmentation or polygons of fewer than 3 points): not drawn",) if empty else ()
    return Plan("coco", path, out, (BACKGROUND, *names), tuple(items), tuple(missing), skipped, _render_coco)


def _coco_segmentation(segm, h: int, w: int, where: str):
    """A segmentation pycocotools can rasterize: a list of polygons or an RLE dict; None when it has no area.

    Everything that would make pycocotools fail or read past its input (odd coordinate counts, an RLE
    of another size, compressed counts that do not add up to the image) is a DataError here.
    """
    if isinstance(segm, list):
        polygons = []
        for poly in segm:
            if not isinstance(poly, list) or not all(_is_number(v) for v in poly) or len(poly) % 2:
                raise DataError(f"{where}: a polygon must be a flat list of x, y numbers")
            if len(poly) >= 6:
                polygons.append([float(v) for v in poly])
        return polygons or None
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        size = segm["size"]
        if not (isinstance(size, list) and len(size) == 2 and list(size) == [h, w]):
            raise DataError(f"{where}: RLE size {size!r} is not the image's [height, width] [{h}, {w}]")
        counts = segm["counts"]
        if isinstance(counts, list):
            if not all(_is_int(c) and c >= 0 for c in counts) or sum(counts) != h * w:
                raise DataError(f"{where}: uncompressed RLE counts must be non-negative integers adding up to "
                                f"height x width = {h * w}")
        elif isinstance(counts, (str, bytes)):
            counts = counts.decode("ascii", "replace") if isinstance(counts, bytes) else counts
            if _rle_string_total(counts) != h * w:
                raise DataError(f"{where}: compressed RLE counts are malformed or do not cover {h}x{w} pixels")
        else:
            raise DataError(f"{where}: RLE 'counts' must be a list of integers or a string")
        return {"size": [h, w], "counts": counts}
    raise DataError(f"{where}: 'segmentation' must be a list of polygons or an RLE object with 'size' and 'counts'")


def _rle_string_total(counts: str) -> int | None:
    """Pixels a COCO compressed RLE string covers (pycocotools' rleFrString, run only to check it); None if malformed."""
    total, prev, values, k, x = 0, [], 0, 0, 0
    for ch in counts:
        c = ord(ch) - 48
        if not 0 <= c < 64:
            return None
        x |= (c & 0x1F) << (5 * k)
        k += 1
        if c & 0x20:
            continue
        if c & 0x10:
            x |= -1 << (5 * k)
        if values > 2:
            x += prev[values - 2]
        if x < 0:
            return None
        prev.append(x)
        total += x
        values += 1
        x = k = 0
    return None if k else total


def _render_coco(item: Item, size: tuple[int, int]) -> np.ndarray:
    from pycocotools import mask as coco_mask

    h, w = size
    mask = np.zeros((h, w), np.uint8)
    covered = np.zeros((h, w), bool)
    crowd = np.zeros((h, w), bool)
    for index, is_crowd, segm in item.shapes:
        if isinstance(segm, list):
            rle = coco_mask.merge(coco_mask.frPyObjects(segm, h, w))
        elif isinstance(segm["counts"], list):
            rle = coco_mask.frPyObjects(segm, h, w)
        else:
            rle = segm
        with warnings.catch_warnings():  # pycocotools 2.0.x under numpy 2: "__array__ implementation doesn't accept a copy"
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
            region = coco_mask.decode(rle).astype(bool)
        if is_crowd:
            crowd |= region
        else:
            mask[region] = index
            covered |= region
    mask[crowd & ~covered] = IGNORE
    return mask


# ---------------------------------------------------------------------------- LabelMe


def plan_labelme(folder: str | os.PathLike, classes: Sequence[str], out: str | os.PathLike) -> Plan:
    """Check the LabelMe ``*.json`` files directly in ``folder`` for a conversion to ``out``; writes nothing.

    Each file's image is its ``imagePath``, relative to the file. DataError (exit 2, one line) for: a
    non-empty or unusable ``out``, no or malformed files, a class no shape is labelled with (the message
    lists the labels present), and files none of whose images exist. Missing images are skipped.
    """
    names = class_names(classes)
    out = _check_target(out, Path(folder) if Path(folder).is_dir() else None)
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"LabelMe folder not found: {folder}")
    files = sorted(p for p in folder.glob("*.json") if p.is_file())
    if not files:
        raise DataError(f"{folder}: no LabelMe .json files in it")
    docs = []
    for file in files:
        doc = _read_json(file)
        if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list) or not isinstance(doc.get("imagePath"), str):
            raise DataError(f"{file}: not a LabelMe file (needs 'shapes' and 'imagePath')")
        for i, shape in enumerate(doc["shapes"]):
            if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
                raise DataError(f"{file}: shapes[{i}] needs a 'label'")
        docs.append((file, doc))
    present = sorted({shape["label"] for _, doc in docs for shape in doc["shapes"]})
    unknown = [n for n in names if n not in present]
    if unknown:
        raise EdgesegError(f"--classes: no shape in {folder} is labelled {_quoted(unknown, ' or ')}; labels present: "
                           f"{', '.join(present) or 'none'}")

    items, missing, no_area, other, unnamed = [], [], 0, {}, {}
    for file, doc in docs:
        image = file.parent / doc["imagePath"].replace("\\", "/")
        size = None
        if _is_int(doc.get("imageHeight")) and _is_int(doc.get("imageWidth")):
            size = (doc["imageHeight"], doc["imageWidth"])
        if not image.is_file():
            missing.append(image)
            continue
        shapes = []
        for i, shape in enumerate(doc["shapes"]):
            if shape["label"] not in names:
                unnamed[shape["label"]] = unnamed.get(shape["label"], 0) + 1
                continue
            kind = shape.get("shape_type") or "polygon"  # LabelMe before 3.0 wrote no shape_type
            if kind not in LABELME_SHAPES:
                other[kind] = other.get(kind, 0) + 1
                continue
            points = _labelme_points(shape.get("points"), kind, f"{file}: shapes[{i}] ({kind} '{shape['label']}')")
            if points is None:
                no_area += 1
                continue
            shapes.append((names.index(shape["label"]) + 1, kind, points))
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{file}: image {image.name} is not a kind edgeseg reads ({', '.join(IMAGE_SUFFIXES)})")
        items.append(Item(_sample_id(file.stem, str(file)), image, size, tuple(shapes)))
    if not items:
        raise DataError(f"none of the images the {len(files)} LabelMe files in {folder} name exists "
                        f"(e.g. {missing[0]})")
    skipped = []
    if other:
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(other.items()))
        n = sum(other.values())
        skipped.append(f"{n} shape{'s' if n != 1 else ''} of named classes not {'/'.join(LABELME_SHAPES)} "
                       f"({kinds}): not drawn")
    if unnamed:
        n = sum(unnamed.values())
        labels = ", ".join(f'"{label}" x{c}' for label, c in sorted(unnamed.items()))
        skipped.append(f"{n} shape{'s' if n != 1 else ''} with labels not in --classes ({labels}): not drawn (their "
                       "pixels keep the class of a named shape there, else background; name a label in --classes to "
                       "draw it)")
    if no_area:
        skipped.append(f"{no_area} polygon{'s' if no_area != 1 else ''} of named classes with fewer than 3 points: not drawn")
    nested = sum(1 for p in folder.rglob("*.json") if p.parent != folder and p.is_file())
    if nested:
        skipped.append(f"{nested} .json file{'s' if nested != 1 else ''} in sub-folders of {folder}: not read (only the "
                       "folder's own files are; convert each sub-folder on its own)")
    return Plan("labelme", folder, out, (BACKGROUND, *names), tuple(items), tuple(missing), tuple(skipped),
                _render_labelme)


def _labelme_points(points, kind: str, where: str):
    if not isinstance(points, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_number(v) for v in p)
                                               for p in points):
        raise DataError(f"{where}: 'points' must be a list of [x, y] numbers")
    xy = [(float(x), float(y)) for x, y in points]
    if kind == "polygon":
        return xy if len(xy) >= 3 else None
    if kind == "circle" and len(xy) != 2:
        raise DataError(f"{where}: a circle has 2 points (centre and a point on it), found {len(xy)}")
    if kind == "rectangle" and len(xy) < 2:
        raise DataError(f"{where}: a rectangle needs 2 corner points, found {len(xy)}")
    return xy


def _render_labelme(item: Item, size: tuple[int, int]) -> np.ndarray:
    """Draw the shapes in order, a later one over an earlier one, as LabelMe's ``shapes_to_label`` does."""
    h, w = size
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for index, kind, xy in item.shapes:
        if kind == "polygon":
            draw.polygon(xy, fill=index, outline=index)
        elif kind == "rectangle":  # any number of corners: their bounding box (some tools write 4)
            xs, ys = [x for x, _ in xy], [y for _, y in xy]
            draw.rectangle([min(xs), min(ys), max(xs), max(ys)], fill=index, outline=index)
        else:
            (cx, cy), (px, py) = xy
            r = math.hypot(cx - px, cy - py)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=index, outline=index)
    return np.asarray(canvas, dtype=np.uint8).copy()


# ---------------------------------------------------------------------------- shared


def class_names(classes: Iterable[str]) -> tuple[str, ...]:
    """The named classes (``--classes``) cleaned and checked: at least one, no duplicates, no ``background``."""
    names = tuple(c.strip() for c in classes if c.strip())
    if not names:
        raise EdgesegError("--classes: name at least one class, e.g. --classes person")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise EdgesegError(f"--classes: {_quoted(dupes)} named twice")
    if BACKGROUND in names:
        raise EdgesegError(f"--classes: '{BACKGROUND}' is always class 0 (every pixel no named class covers); "
                           "name only the other classes")
    if len(names) > MAX_CLASSES:
        raise EdgesegError(f"--classes: {len(names)} classes; masks hold at most {MAX_CLASSES} besides background")
    bad = [n for n in names if any(ch in n for ch in "\r\n")]
    if bad:
        raise EdgesegError(f"--classes: a class name cannot contain a line break: {bad[0]!r}")
    return names


def split_note(images: int, val_fraction: float = 0.1) -> str:
    """How edgeseg will split the converted folder into train and val, and what to set when val would be empty."""
    k = max(2, round(1 / val_fraction))
    val = images // k
    note = (f"train/val: edgeseg holds out every {k}th image for validation (data.val_fraction {val_fraction:g}): "
            f"{images - val} train, {val} val")
    if val == 0 and images >= 2:
        note += f"; with fewer than {k} images train with --set data.val_fraction={1 / images:.3g}"
    elif images < 2:
        note += "; training needs at least 2 images (one for validation)"
    return note


def _check_target(out: str | os.PathLike, source: Path | None = None) -> Path:
    """``out`` checked for a conversion: a new or empty folder, not inside the ``source`` folder it reads (its
    images and masks would be read back as photos there)."""
    out = check_output(out, is_dir=True, what="--out")
    if source is not None and is_inside(out, source):
        raise EdgesegError(f"--out {out} is inside {source}, the folder being converted; choose a folder outside it "
                           "(its images and masks would be read back as inputs)")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir() if not is_staging(p))
        if entries:
            shown = ", ".join(entries[:3]) + (" ..." if len(entries) > 3 else "")
            raise EdgesegError(f"--out {out} is not empty ({shown}); choose a new or empty folder "
                               "(edgeseg never writes into a folder of yours)")
    return out


def _read_json(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _sample_id(name: str, where: str) -> str:
    """A file name (relative, maybe with folders) as an id: its folders joined with '__', without suffix."""
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.name or rel.name.startswith("."):
        raise DataError(f"{where}: file name {name!r} must be a relative path inside the image folder")
    return "__".join(rel.with_suffix("").parts)


def _displayed_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image as edgeseg reads it (EXIF orientation applied), from its header."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read image ({str(exc).splitlines()[0][:120] or exc.__class__.__name__})") from None
    return (w, h) if orientation in _TRANSPOSED else (h, w)


def _copy(src: Path, dest: Path) -> None:
    try:
        shutil.copyfile(src, dest)
    except FileNotFoundError:
        raise DataError(f"{src}: file not found (removed during the conversion?)") from None


def _quoted(names: Sequence[str], joiner: str = ", ") -> str:
    return joiner.join(f"'{n}'" for n in names)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

"""Regenerates docs/images/video_flicker.png: a strip of consecutive frames of a synthetic clip, the
packaged default model's mask raw and through the stabilizer (``--smooth``), flicker pixels in red
(the predicted class changed since the previous frame where the ground truth did not).

    .venv/bin/python docs/make_video_figure.py [CLIP_SEED]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from edgeseg.apply.predict import predict_image
from edgeseg.data.clips import render_clip
from edgeseg.runtime.loader import open_model
from edgeseg.runtime.stabilizer import frame_run

OUT = Path(__file__).parent / "images" / "video_flicker.png"
FRAMES = 6
SIZE = 256
ZOOM = 2  # the crop around the person's edge is shown at twice its size
CROP = 96


def masks(runner, size, frames, smooth: bool) -> list[np.ndarray]:
    """The class map of every frame, in order (one stabilizer over the clip when ``smooth``)."""
    run = frame_run(runner.run, smooth)
    return [predict_image(run, f, size).classes for f in frames]


def tile(image: np.ndarray, mask: np.ndarray, flicker: np.ndarray | None, box) -> Image.Image:
    """The image with the person tinted green and flicker pixels red, cropped to ``box`` and zoomed."""
    rgb = image.astype(np.float32)
    rgb[mask == 1] = 0.6 * rgb[mask == 1] + 0.4 * np.array([40, 200, 80])
    if flicker is not None:
        rgb[flicker] = (255, 30, 30)
    y0, x0 = box
    crop = Image.fromarray(rgb.astype(np.uint8)[y0:y0 + CROP, x0:x0 + CROP])
    return crop.resize((CROP * ZOOM, CROP * ZOOM), Image.NEAREST)


def busiest_window(preds: list[np.ndarray], truth: list[np.ndarray]) -> tuple[int, int]:
    """(y, x) of the CROP x CROP window holding the most flicker pixels over the clip."""
    heat = sum(((p1 != p0) & (t1 == t0)).astype(np.int64) for p0, p1, t0, t1 in zip(preds, preds[1:], truth, truth[1:]))
    c = np.pad(heat.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = c[CROP:, CROP:] - c[:-CROP, CROP:] - c[CROP:, :-CROP] + c[:-CROP, :-CROP]
    y, x = np.unravel_index(int(sums.argmax()), sums.shape)
    return int(y), int(x)


def main(seed: int = 11) -> None:
    clip = render_clip("portrait", SIZE, FRAMES + 1, seed)
    frames, truth = [s.image for s in clip], [s.mask for s in clip]
    runner, view = open_model("default")
    with runner:
        rows = {"raw": masks(runner, view.input_size, frames, False),
                "--smooth": masks(runner, view.input_size, frames, True)}
    box = busiest_window(rows["raw"], truth)
    pad, label_w = 4, 90
    w, h = FRAMES * (CROP * ZOOM + pad) + label_w, 3 * (CROP * ZOOM + pad) + 24
    sheet = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(sheet)
    for j in range(FRAMES):
        draw.text((label_w + j * (CROP * ZOOM + pad), 4), f"frame {j + 1}", fill="black")
    for i, (name, preds) in enumerate([("frames", None), *rows.items()]):
        y = 24 + i * (CROP * ZOOM + pad)
        counts = []
        for j in range(1, FRAMES + 1):
            if preds is None:
                t = Image.fromarray(frames[j][box[0]:box[0] + CROP, box[1]:box[1] + CROP]).resize((CROP * ZOOM,) * 2)
            else:
                stable = truth[j] == truth[j - 1]
                flick = (preds[j] != preds[j - 1]) & stable
                counts.append(int(flick.sum()))
                t = tile(frames[j], preds[j], flick, box)
            sheet.paste(t, (label_w + (j - 1) * (CROP * ZOOM + pad), y))
        label = name if preds is None else f"{name}\n{sum(counts)} flicker\npixels"
        draw.multiline_text((4, y + CROP * ZOOM // 2 - 20), label, fill="black")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))

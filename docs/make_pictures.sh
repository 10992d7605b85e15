#!/usr/bin/env bash
# Regenerates the README pictures with `edgeseg predict` on synthetic portraits (packaged default model).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$BIN/edgeseg data synth "$tmp/in" --count 40 --size 256 --seed 7 >/dev/null
# three images whose hair has thin strands
picks=$(awk -F, 'NR>1 && $4=="strands" {print $1}' "$tmp/in/slices.csv" | head -3)
mkdir -p "$tmp/sel"
for id in $picks; do cp "$tmp/in/images/$id.png" "$tmp/sel/"; done
$BIN/python - "$tmp/bg.png" <<'PY'
import sys, numpy as np
from PIL import Image
y, x = np.mgrid[0:256, 0:256]
Image.fromarray(np.stack([(x * 0.5 + 60) % 255, (y * 0.6 + 120) % 255, np.full_like(x, 200)], -1).astype(np.uint8)).save(sys.argv[1])
PY
for mode in cutout blur replace; do
  $BIN/edgeseg predict default "$tmp/sel" --out "$tmp/$mode" --output $mode --background "$tmp/bg.png" >/dev/null
done
$BIN/edgeseg predict default "$tmp/sel" --out "$tmp/alpha" --output alpha >/dev/null
$BIN/edgeseg predict default "$tmp/sel" --out "$tmp/alpha_refined" --output alpha --refine >/dev/null
# the packaged parts model on three synthetic portraits it never saw (the parts eval set's generator, another seed)
$BIN/edgeseg data synth "$tmp/parts_in" --task parts --count 3 --size 256 --seed 21 >/dev/null
$BIN/edgeseg predict parts "$tmp/parts_in/images" --out "$tmp/parts" --output overlay >/dev/null
$BIN/python - "$tmp" docs/images <<'PY'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
tmp, out = Path(sys.argv[1]), Path(sys.argv[2])
names = sorted(p.name for p in (tmp / "sel").iterdir())
def row(folder, checker=False):
    tiles = []
    for n in names:
        im = Image.open(tmp / folder / n)
        if checker:  # show transparency on a checkerboard
            y, x = np.mgrid[0:im.height, 0:im.width]
            board = Image.fromarray(np.where(((x // 16 + y // 16) % 2)[..., None], 200, 245).repeat(3, -1).astype(np.uint8))
            board.paste(im, (0, 0), im)
            im = board
        tiles.append(np.asarray(im.convert("RGB")))
    return np.concatenate(tiles, axis=1)
def save(name, *rows):  # palette PNGs keep the committed pictures small
    Image.fromarray(np.concatenate(rows, axis=0)).quantize(colors=128, dither=Image.Dither.NONE).save(out / name, optimize=True)
save("cutout.png", row("sel"), row("cutout", checker=True))
save("blur.png", row("sel"), row("blur"))
save("replace.png", row("replace"))
save("refine.png", row("alpha"), row("alpha_refined"))
pnames = sorted(p.name for p in (tmp / "parts_in" / "images").iterdir())
def parts_row(folder):
    return np.concatenate([np.asarray(Image.open(tmp / folder / n).convert("RGB")) for n in pnames], axis=1)
save("parts.png", parts_row("parts_in/images"), parts_row("parts"))
PY
ls -la docs/images

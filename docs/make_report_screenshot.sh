#!/usr/bin/env bash
# Regenerates docs/images/report.png: a small bench report of the packaged default model, rendered by
# headless Chromium (Debian: apt-get install -y chromium) and shrunk to a 256-colour PNG.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$BIN/edgeseg export --out "$tmp/exp" --formats onnx,tflite --precisions fp32,int8 >/dev/null
$BIN/edgeseg bench "$tmp/exp" --threads 1,2 --runs 10 --warmup 2 --sessions 1 --report "$tmp/report" >/dev/null
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$tmp/profile" \
  --window-size=1200,3200 --screenshot="$tmp/shot.png" "file://$tmp/report/report.html" 2>/dev/null
$BIN/python - "$tmp/shot.png" "$tmp/report" docs/images/report.png <<'PY'
# Crop the blank bottom; palette = 144 colours of the charts + 80 of the mask strip + a 32-step grey ramp
# (text, table), each pixel mapped to its exact nearest entry (no dithering).
import sys
from pathlib import Path
import numpy as np
from PIL import Image
shot, report, dest = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
im = Image.open(shot).convert("RGB")
used = np.where((np.asarray(im) < 250).any(axis=(1, 2)))[0]
im = im.crop((0, 0, im.width, min(im.height, used.max() + 24)))
def colours(names, n):
    ims = [Image.open(report / x).convert("RGB").resize((600, 400)) for x in names if (report / x).exists()]
    if not ims:
        return []
    return Image.fromarray(np.concatenate([np.asarray(i) for i in ims])).quantize(n, method=Image.Quantize.MEDIANCUT).getpalette()[: n * 3]
grey = [v for g in np.linspace(0, 255, 32).astype(int) for v in (g, g, g)]
pal = colours(["latency_accuracy.png", "thread_scaling.png"], 144) + colours(["samples.png"], 80) + grey
pal = np.array(pal + [255] * (768 - len(pal)), np.int32).reshape(256, 3)
uniq, inverse = np.unique(np.asarray(im).reshape(-1, 3), axis=0, return_inverse=True)
nearest = np.concatenate([((u[:, None].astype(np.int32) - pal[None]) ** 2).sum(-1).argmin(1)
                          for u in np.array_split(uniq, max(1, len(uniq) // 4096))])
out = Image.fromarray(nearest[inverse.ravel()].astype(np.uint8).reshape(im.height, im.width), "P")
out.putpalette(pal.astype(np.uint8).ravel().tolist())
out.save(dest, optimize=True)
PY
ls -la docs/images/report.png

"""The bench report as a page: every mask-strip row named, integer thread ticks, point labels that do not
overlap, text from the run escaped, an embedded stylesheet (issue 12). Real files written by ``write_report``
from a bench document; no browser needed (docs/images/report.png is the page rendered in headless Chromium)."""
from __future__ import annotations

import itertools
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeseg.bench.report import (latency_accuracy_figure, short_labels, thread_counts, thread_scaling_figure,
                                  write_report)


def _result(artifact, fmt, precision, runtime, threads, p50, agreement=None, size=800_000):
    r = {"artifact": artifact, "format": fmt, "precision": precision, "threads": threads, "bytes": size, "runtime": runtime,
         "runs": 5, "sessions": 1, "latency_ms": {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.2, "mean": p50, "min": p50 * 0.9},
         "normalized_p50": p50 / 2.0, "load_ms": 12.0, "peak_rss_mb": 900.0}
    if agreement is not None:
        r["parity"] = {"agreement_miou": agreement, "gt_miou": 0.96, "stress": {"agreement_miou": agreement - 0.01}}
    return r


FILES = [("pytorch-fp32", "pytorch", "fp32", "pytorch", 14.0, None, 1_000_000),
         ("m-fp32.onnx", "onnx", "fp32", "onnxruntime", 4.0, 1.0, 2_000_000),
         ("m-int8.onnx", "onnx", "int8", "onnxruntime", 3.0, 0.9949, 760_000),
         ("m-fp32.tflite", "tflite", "fp32", "litert", 4.1, 1.0, 1_950_000),
         ("m-int8.tflite", "tflite", "int8", "litert", 2.9, 0.9957, 790_000)]


def _doc(threads=(1, 2), files=FILES, host_cpu="AMD EPYC"):
    results = [_result(a, f, p, rt, t, p50 * (1 + 0.3 * (t - 1)), acc, size)
               for a, f, p, rt, p50, acc, size in files for t in threads]
    return {"host": {"cpu": host_cpu, "cores": 2}, "model": {"name": "tiny"}, "calibration": {"p50_ms": 2.0},
            "results": results}


def _samples(names, k=2, size=32):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (k, size, size, 3), dtype=np.uint8)
    masks = np.zeros((k, size, size), np.int64)
    masks[:, 8:24, 8:24] = 1
    return images, {n: masks for n in names}


class _Page(HTMLParser):
    """Tags, the text of each <li> of <ol class="rows">, every <img src>, and the table's cell texts."""

    def __init__(self):
        super().__init__()
        self.tags, self.rows, self.imgs, self.cells, self._li, self._td = [], [], [], [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "ol" and a.get("class") == "rows":
            self._in_rows = True
        if tag == "li" and getattr(self, "_in_rows", False):
            self._li = ""
        if tag == "img":
            self.imgs.append(a["src"])
        if tag == "tr":
            self.cells.append([])
        if tag == "td":
            self._td = ""

    def handle_endtag(self, tag):
        if tag == "li" and self._li is not None:
            self.rows.append(" ".join(self._li.split()))
            self._li = None
        if tag == "ol":
            self._in_rows = False
        if tag == "td":
            self.cells[-1].append(self._td)
            self._td = None

    def handle_data(self, data):
        if self._li is not None:
            self._li += data
        if self._td is not None:
            self._td += data


def _page(folder: Path) -> _Page:
    p = _Page()
    p.feed((folder / "report.html").read_text(encoding="utf-8"))
    return p


def test_every_mask_strip_row_is_named_in_the_page_the_markdown_and_the_picture(tmp_path):
    doc = _doc()
    names = [f[0] for f in FILES]
    images, preds = _samples(names)
    out = write_report(doc, tmp_path / "rep", (images, preds))
    expected = ["pytorch-fp32 — pytorch fp32, pytorch", "m-fp32.onnx — onnx fp32, onnxruntime",
                "m-int8.onnx — onnx int8, onnxruntime", "m-fp32.tflite — tflite fp32, litert",
                "m-int8.tflite — tflite int8, litert"]
    assert _page(out).rows == expected  # top to bottom, as the strip
    md = (out / "report.md").read_text(encoding="utf-8")
    for i, (name, label) in enumerate(zip(names, expected), 1):
        assert f"{i}. `{name}` — {label.split(' — ')[1]}" in md
    # the picture: a label band above each row of tiles, with dark text drawn on the light band
    strip = np.asarray(Image.open(out / "samples.png").convert("RGB"))
    tile_h = images.shape[1]
    band = strip.shape[0] // len(names) - tile_h
    assert band > 10 and strip.shape == (len(names) * (band + tile_h), images.shape[2] * len(images), 3)
    for row in range(len(names)):
        head = strip[row * (band + tile_h): row * (band + tile_h) + band]
        assert (head.min(axis=-1) < 100).sum() > 20, f"row {row + 1} has no label drawn"


def test_strip_label_too_wide_for_the_tiles_is_cut_not_overflowing(tmp_path):
    long = "a_very_long_artifact_name_" * 6 + "fp32.onnx"
    files = [(long, "onnx", "fp32", "onnxruntime", 4.0, 1.0, 1_000)]
    images, preds = _samples([long], k=1, size=24)
    out = write_report(_doc(files=files), tmp_path / "rep", (images, preds))
    assert Image.open(out / "samples.png").width == 24  # the strip keeps the tiles' width
    assert _page(out).rows == [f"{long} — onnx fp32, onnxruntime"]  # the page has the whole name


@pytest.mark.parametrize("threads", [(1, 2), (1, 2, 4), (2, 3, 8), (4,)])
def test_thread_axis_ticks_are_the_integer_thread_counts_run(threads):
    doc = _doc(threads)
    fig = thread_scaling_figure(doc)
    try:
        fig.canvas.draw()
        ax = fig.axes[0]
        assert thread_counts(doc) == list(threads)
        assert list(ax.get_xticks()) == list(threads)
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(t) for t in threads]
        assert ax.xaxis.get_minorticklocs().size == 0
        lo, hi = ax.get_xlim()
        assert lo < threads[0] and threads[-1] < hi  # end points are not on the frame
    finally:
        fig.clf()


def test_thread_scaling_draws_one_line_per_file_and_runtime():
    """A phone run times one file through two runtimes: two lines, told apart by runtime."""
    files = [("m-fp32.tflite", "tflite", "fp32", "android-xnnpack", 250.0, None, 1_000),
             ("m-fp32.tflite", "tflite", "fp32", "android-gpu", 40.0, None, 1_000)]
    doc = _doc((1, 4), files=files)
    assert sorted(short_labels(doc["results"]).values()) == ["tflite fp32 (android-gpu)", "tflite fp32 (android-xnnpack)"]
    fig = thread_scaling_figure(doc)
    try:
        ax = fig.axes[0]
        assert [line.get_label() for line in ax.get_lines()] == ["tflite fp32 (android-xnnpack)", "tflite fp32 (android-gpu)"]
        assert [list(line.get_xdata()) for line in ax.get_lines()] == [[1, 4], [1, 4]]
    finally:
        fig.clf()


def _text_boxes(fig):
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    return ax, {t.get_text(): Text.get_window_extent(t, renderer) for t in ax.texts}


def test_latency_accuracy_labels_name_every_point_and_do_not_overlap():
    # fp32 files at the same accuracy and nearly the same latency: the labels of the old chart overlapped
    files = FILES + [("m-fp16.onnx", "onnx", "fp16", "onnxruntime", 4.05, 1.0, 1_000_000),
                     ("m-fp16.tflite", "tflite", "fp16", "litert", 3.95, 0.99995, 1_000_000)]
    fig = latency_accuracy_figure(_doc(files=files))
    try:
        ax, boxes = _text_boxes(fig)
        assert set(boxes) == {"pytorch fp32", "onnx fp32", "onnx int8", "tflite fp32", "tflite int8", "onnx fp16",
                              "tflite fp16"}
        for (a, ba), (b, bb) in itertools.combinations(boxes.items(), 2):
            assert not ba.overlaps(bb), f"labels {a!r} and {b!r} overlap"
        frame = ax.get_window_extent()
        for name, box in boxes.items():
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, name
    finally:
        fig.clf()


def test_labels_do_not_cover_markers():
    fig = latency_accuracy_figure(_doc(files=FILES))
    try:
        ax, boxes = _text_boxes(fig)
        centres = ax.transData.transform([(x, y) for c in ax.collections for x, y in c.get_offsets()])
        for name, box in boxes.items():
            for cx, cy in centres:
                assert not box.contains(cx, cy), f"label {name!r} covers a marker"
    finally:
        fig.clf()


def test_text_from_the_run_is_escaped(tmp_path):
    evil = "<img src=x onerror=alert(1)>&.onnx"
    files = [("pytorch-fp32", "pytorch", "fp32", "pytorch", 14.0, None, 1_000),
             (evil, "onnx", "fp32", "onnxruntime", 4.0, 1.0, 1_000)]
    doc = _doc(files=files, host_cpu="<b>CPU</b> & co")
    doc["results"].append({"artifact": "x<script>.tflite", "format": "tflite", "precision": "fp32", "threads": 1,
                           "bytes": 1, "runtime": "tflite", "skipped": "needs <litert> & more"})
    images, preds = _samples(["pytorch-fp32", evil])
    out = write_report(doc, tmp_path / "rep", (images, preds))
    text = (out / "report.html").read_text(encoding="utf-8")
    for raw in ("<img src=x", "<b>CPU", "<script>", "<litert>"):
        assert raw not in text
    for escaped in ("&lt;img src=x onerror=alert(1)&gt;&amp;.onnx", "&lt;b&gt;CPU&lt;/b&gt; &amp; co", "x&lt;script&gt;.",
                    "needs &lt;litert&gt; &amp; more"):
        assert escaped in text
    page = _page(out)
    assert "script" not in page.tags and page.imgs == ["latency_accuracy.png", "thread_scaling.png", "samples.png"]
    assert page.rows[1] == f"{evil} — onnx fp32, onnxruntime"  # the parsed text is the name itself
    # table: file names read back whole (line-break hints only, no text added), the skip reason as written
    assert list(dict.fromkeys(c[0] for c in page.cells if c)) == ["pytorch-fp32", evil, "x<script>.tflite"]
    assert page.cells[-1][-1] == "skipped: needs <litert> & more"


def test_page_is_styled_and_self_contained(tmp_path):
    images, preds = _samples([f[0] for f in FILES])
    out = write_report(_doc(), tmp_path / "rep", (images, preds))
    text = (out / "report.html").read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and "<style>" in text and "max-width" in text and "nth-child(even)" in text
    assert "<table>" in text and "<thead>" in text and text.count("<h2>") == 3
    assert "http://" not in text and "https://" not in text  # nothing fetched from elsewhere
    for src in _page(out).imgs:
        assert (out / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_strip_and_no_stale_strip_without_samples(tmp_path):
    rep = tmp_path / "rep"
    write_report(_doc(), rep, _samples([f[0] for f in FILES]))
    write_report(_doc(), rep, None)  # a later run without sample images into the same folder
    page = _page(rep)
    assert page.rows == [] and "samples.png" not in page.imgs and "samples.png" not in (rep / "report.md").read_text()


def test_nothing_timed_leaves_no_earlier_latency_chart_on_the_page(tmp_path):
    rep = tmp_path / "rep"
    write_report(_doc(), rep, None)
    untimed = {"host": {"cpu": "x", "cores": 2}, "calibration": {"p50_ms": None},
               "results": [{"artifact": "m.mlpackage", "format": "coreml", "precision": "fp32", "threads": 1, "bytes": 1,
                            "runtime": "coreml", "skipped": "Core ML runs on macOS only"}]}
    write_report(untimed, rep, None)
    page = _page(rep)
    assert "latency_accuracy.png" not in page.imgs and "latency_accuracy.png" not in (rep / "report.md").read_text()
    assert "Core ML runs on macOS only" in (rep / "report.html").read_text()

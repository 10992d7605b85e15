"""Bench reports: a table, charts (matplotlib, Agg) and a mask strip, as Markdown and HTML (layer 3).

Ownership: a report is assembled in a staging folder and installed name by name (``fsutil.install_staged``);
it replaces only what an earlier report wrote. Its ledger (``REPORT_LEDGER``) records the sha256 of each file
it wrote; a file with one of the report's names that edgeseg did not write (or that changed since) is refused
(``check_report_output``) before any timing.
"""
from __future__ import annotations

import html
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.fsutil import atomic_path, being_installed, check_output, file_holds, install_staged, sha256_file, staging_dir
from edgeseg.bench.temporal import COLUMNS as FLICKER_COLUMNS, flicker_rows

COLUMNS = ["artifact", "runtime", "threads", "p50 ms", "p90 ms", "normalized p50", "speed-up vs PyTorch", "load ms",
           "peak RSS MB", "int8/fp32 p50", "size KB", "agreement mIoU", "stress agreement", "GT mIoU"]

#: Label offsets tried, nearest first, for a point label of the latency-accuracy chart (points; see ``_place_labels``).
_LABEL_RINGS = (7, 18, 30, 44)
_LABEL_DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))

#: Alt text and caption of each chart.
CHART_ALT = {"latency_accuracy.png": "p50 latency vs agreement mIoU, marker area ~ file size",
             "thread_scaling.png": "p50 latency per thread count"}

#: Every name a report writes in its folder, besides its ledger.
REPORT_FILES = ("report.md", "report.html", *CHART_ALT, "samples.png")
#: The report's ledger: {"tool": REPORT_TOOL, "files": {name: sha256}} of the files it wrote.
REPORT_LEDGER = ".edgeseg-report.json"
REPORT_TOOL = "edgeseg bench --report"
REPORT_TITLE = "edgeseg bench report"

#: The HTML report's stylesheet (embedded, so the page needs nothing but the PNGs beside it).
STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;color:#1f2328;
  background:#fff;max-width:1180px;margin:0 auto;padding:24px 28px 40px}
h1{font-size:1.7em;margin:0 0 .4em;padding-bottom:.3em;border-bottom:1px solid #d0d7de}
h2{font-size:1.25em;margin:1.8em 0 .6em}
ul.meta{color:#57606a;padding-left:1.2em;margin:.4em 0 1em}
.scroll{overflow-x:auto;border:1px solid #d0d7de;border-radius:6px}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums;width:100%}
th,td{padding:5px 7px;border-bottom:1px solid #d8dee4;text-align:right;white-space:nowrap}
th{background:#f6f8fa;font-weight:600;vertical-align:bottom;white-space:normal}
td:first-child{white-space:normal;overflow-wrap:anywhere;min-width:12em}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}
tbody tr:nth-child(even){background:#f6f8fa}
tbody tr:hover{background:#eef4ff}
td.skipped{text-align:left;color:#9a6700;white-space:normal}
.charts{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0}
.charts figure{flex:1 1 480px}
img{max-width:100%;height:auto;border:1px solid #d8dee4;border-radius:6px}
figcaption{color:#57606a;font-size:13px;margin-top:4px}
ol.rows{margin:.3em 0 .8em;padding-left:1.6em}
ol.rows code{font-size:13px}
""".strip()


def table_rows(doc: dict) -> list[list[str]]:
    """One row of strings per result (skipped results say why). An int8 row's ``int8/fp32 p50`` is its
    p50 over the p50 of the same runtime's fp32 file in this run (``int8_vs_fp32``; absent in older files)."""
    int8_ratio = {(p["int8"], p["threads"]): p["ratio"] for p in (doc.get("int8_vs_fp32") or {}).get("pairs", [])}
    rows = []
    for r in doc["results"]:
        if "skipped" in r:
            rows.append([r["artifact"], r.get("runtime", ""), str(r["threads"])] + ["-"] * 10 + [f"skipped: {r['skipped']}"])
            continue
        p = r.get("parity") or {}
        timing = ["-"] * 7  # parity only (latency_skipped says why)
        if "latency_ms" in r:  # phone runs (--device android) have no p90 and may lack load time or memory
            lat = r["latency_ms"]
            timing = [f"{lat['p50']:.2f}", _opt(lat.get("p90"), "{:.2f}"), f"{r['normalized_p50']:.3f}",
                      _opt(r.get("speedup_vs_pytorch"), "{:.2f}x"), _opt(r.get("load_ms"), "{:.0f}"),
                      _opt(r.get("peak_rss_mb"), "{:.0f}"), _opt(int8_ratio.get((r["artifact"], r["threads"])), "{:.2f}x")]
        rows.append([r["artifact"], r["runtime"], str(r["threads"]), *timing, f"{r['bytes'] / 1024:.0f}",
                     _opt(p.get("agreement_miou"), "{:.4f}"), _opt((p.get("stress") or {}).get("agreement_miou"), "{:.4f}"),
                     _opt(p.get("gt_miou"), "{:.4f}")])
    return rows


def int8_summary(doc: dict) -> str:
    """One line with the int8/fp32 p50 ratio of every runtime and thread count ('' when the run has no pair)."""
    pairs = (doc.get("int8_vs_fp32") or {}).get("pairs", [])
    if not pairs:
        return ""
    return ("int8/fp32 p50 (same run, raw ms): "
            + "; ".join(f"{p['runtime']} {p['threads']}t {p['ratio']:.2f}x" for p in pairs))


def _opt(v, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def short_labels(results: list[dict]) -> dict[tuple[str, str], str]:
    """A short chart label per (artifact, runtime): 'onnx int8'; with the runtime where two runtimes run the
    same format and precision, and the file name where that still does not tell them apart."""
    keys = list(dict.fromkeys((r["artifact"], r.get("runtime", "")) for r in results))
    info = {(r["artifact"], r.get("runtime", "")): r for r in results}

    def unique(fn):
        names = {k: fn(info[k]) for k in keys}
        return names if len(set(names.values())) == len(names) else None
    return (unique(lambda r: f"{r['format']} {r['precision']}")
            or unique(lambda r: f"{r['format']} {r['precision']} ({r.get('runtime', '')})")
            or {k: f"{k[0]} ({k[1]})" if k[1] else k[0] for k in keys})


def row_label(doc: dict, artifact: str) -> tuple[str, str]:
    """(file name, 'format precision, runtime') for one file of the run, as its first result has them."""
    r = next((r for r in doc.get("results", []) if r["artifact"] == artifact), None)
    if r is None:
        return artifact, ""
    return artifact, f"{r['format']} {r['precision']}, {r.get('runtime') or r['format']}"


def _save(fig, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _log_if_spread(ax, axis: str, values: list[float], spread: float = 8.0) -> str:
    """Log scale (plain-number ticks) on ``axis`` when ``values`` span more than ``spread`` x; returns the
    axis label's suffix saying so ('' for a linear axis)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    pos = [v for v in values if v > 0]
    if pos and max(pos) / min(pos) > spread:
        getattr(ax, f"set_{axis}scale")("log")
        scale = getattr(ax, f"{axis}axis")
        scale.set_major_locator(LogLocator(subs=(1, 2, 5)))
        scale.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        scale.set_minor_formatter(NullFormatter())
        return ", log scale"
    return ""


def latency_accuracy_figure(doc: dict):
    """The latency-accuracy figure (None when nothing was timed): p50 latency vs agreement mIoU at the highest
    thread count, marker area ~ file size, each point labelled where the label overlaps no other label or marker."""
    res = [r for r in doc["results"] if "latency_ms" in r]
    if not res:
        return None
    top = max(r["threads"] for r in res)
    labels = short_labels(res)
    pts = []
    for r in (r for r in res if r["threads"] == top):
        acc = (r.get("parity") or {}).get("agreement_miou", 1.0 if r["format"] == "pytorch" else None)
        if acc is not None:
            label = labels[(r["artifact"], r.get("runtime", ""))]
            pts.append((r["latency_ms"]["p50"], acc, max(24.0, r["bytes"] / 2 ** 14), label))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (x, y, s, _) in enumerate(pts):
        ax.scatter(x, y, s=s, alpha=0.65, color=colors[i % len(colors)], edgecolors="black", linewidths=0.5, zorder=3)
    log = _log_if_spread(ax, "x", [p[0] for p in pts])
    ax.margins(x=0.12, y=0.18)
    ax.set_xlabel(f"p50 latency, ms ({top} thread{'s' if top != 1 else ''}{log})")
    ax.set_ylabel("agreement mIoU vs PyTorch fp32")
    ax.set_title("latency vs accuracy (marker area ~ file size)")
    ax.grid(alpha=0.3)
    if not pts:
        ax.text(0.5, 0.5, "no result with a parity check", transform=ax.transAxes, ha="center", color="gray")
    _place_labels(fig, ax, pts, colors)
    return fig


def _place_labels(fig, ax, pts: list[tuple], colors: list[str]) -> None:
    """Annotate each point (x, y, marker area, label), in its marker's colour, at the nearest offset where its
    text overlaps no other label and no marker and stays inside the axes; points close together label away
    from each other, and far offsets get a leader line."""
    from matplotlib.colors import to_rgb
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    px_per_pt = fig.dpi / 72
    centres = [ax.transData.transform((x, y)) for x, y, _, _ in pts]
    radii = [math.sqrt(s) / 2 * px_per_pt + 1 for _, _, s, _ in pts]
    taken = [Bbox.from_extents(cx - r, cy - r, cx + r, cy + r) for (cx, cy), r in zip(centres, radii)]

    def directions(i):  # away from the points within a few marker sizes, else the default order
        near = [j for j in range(len(pts)) if j != i and math.dist(centres[i], centres[j]) < 3 * (radii[i] + radii[j])]
        if not near:
            return _LABEL_DIRECTIONS
        ax_, ay = (sum(centres[i][k] - centres[j][k] for j in near) for k in (0, 1))
        if abs(ax_) + abs(ay) < 1:  # on top of each other: alternate sides
            ax_, ay = (1.0 if i % 2 else -1.0), 0.0
        return sorted(_LABEL_DIRECTIONS, key=lambda d: -(d[0] * ax_ + d[1] * ay) / math.hypot(*d))
    # crowded points first (they have the fewest free spots), then left to right
    order = sorted(range(len(pts)), key=lambda i: (-sum(taken[i].overlaps(b.expanded(3, 3)) for b in taken), pts[i][0]))
    for i in order:
        x, y, _, label = pts[i]
        colour = colors[i % len(colors)]
        text_colour = tuple(c * 0.7 for c in to_rgb(colour))  # darker than the marker, to read on white
        choice = None
        for ring in _LABEL_RINGS:
            for dx, dy in directions(i):
                ann = ax.annotate(label, (x, y), xytext=(dx * ring, dy * ring), textcoords="offset points", fontsize=8.5,
                                  ha={1: "left", -1: "right", 0: "center"}[dx], va={1: "bottom", -1: "top", 0: "center"}[dy],
                                  color=text_colour, zorder=4,
                                  arrowprops=dict(arrowstyle="-", color=colour, lw=0.8, shrinkA=1, shrinkB=3)
                                  if ring > _LABEL_RINGS[0] else None,
                                  bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
                ann.update_positions(renderer)  # the text's own box, not the leader line's
                box = Text.get_window_extent(ann, renderer).expanded(1.04, 1.15)
                inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                if inside and not any(box.overlaps(b) for b in taken):
                    choice = box
                    break
                ann.remove()
            if choice is not None:
                break
        if choice is None:  # nowhere free: the first spot, overlapping
            ann = ax.annotate(label, (x, y), xytext=(_LABEL_RINGS[0], _LABEL_RINGS[0]), textcoords="offset points",
                              fontsize=8.5, color=text_colour, zorder=4)
            choice = Text.get_window_extent(ann, renderer)
        taken.append(choice)


def latency_accuracy_chart(doc: dict, dest: Path) -> bool:
    """p50 latency vs agreement mIoU, marker area ~ file size, at the highest thread count; False (nothing
    written) when nothing was timed."""
    fig = latency_accuracy_figure(doc)
    if fig is None:
        return False
    _save(fig, dest)
    _pyplot().close(fig)
    return True


def thread_counts(doc: dict) -> list[int]:
    """The thread counts timed in this run, ascending: the thread-scaling chart's x ticks."""
    return sorted({int(r["threads"]) for r in doc["results"] if "latency_ms" in r})


def thread_scaling_figure(doc: dict):
    """p50 latency per thread count, one line per file and runtime; x ticks at the thread counts run only."""
    res = [r for r in doc["results"] if "latency_ms" in r]
    labels = short_labels(res)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label in labels.items():
        pts = sorted((r["threads"], r["latency_ms"]["p50"]) for r in res if (r["artifact"], r.get("runtime", "")) == key)
        ax.plot([t for t, _ in pts], [v for _, v in pts], marker="o", label=label)
    ticks = thread_counts(doc)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    if ticks:
        pad = max(0.25, (ticks[-1] - ticks[0]) * 0.06)
        ax.set_xlim(ticks[0] - pad, ticks[-1] + pad)
    log = _log_if_spread(ax, "y", [r["latency_ms"]["p50"] for r in res])
    ax.set_xlabel("threads")
    ax.set_ylabel(f"p50 latency, ms{log}")
    ax.set_title("thread scaling")
    if labels:
        ax.legend(fontsize=8, loc="best", framealpha=0.9)
    ax.grid(alpha=0.3)
    return fig


def thread_scaling_chart(doc: dict, dest: Path) -> bool:
    """p50 latency per thread count, one line per file and runtime (True: written)."""
    fig = thread_scaling_figure(doc)
    _save(fig, dest)
    _pyplot().close(fig)
    return True


def _font(size: int):
    """DejaVu Sans (matplotlib's, as on the charts) at ``size`` px; Pillow's default font where it cannot load."""
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=True), size)
    except (ImportError, OSError, ValueError):
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1: the small bitmap font
            return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    """``text``, cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def sample_strip(images: np.ndarray, preds: dict[str, np.ndarray], dest: Path, labels: dict[str, str] | None = None) -> None:
    """Rows = artifacts, columns = sample images, each with its mask overlaid; a band above each row names
    it (``labels[name]``, else the name), numbered as the report's row list."""
    from PIL import Image, ImageDraw

    from edgeseg.apply.compose import overlay

    if not preds:
        return
    tiles = [np.concatenate([np.asarray(overlay(img, p)) for img, p in zip(images, pr)], axis=1) for pr in preds.values()]
    width = tiles[0].shape[1]
    font = _font(14)
    band = 24
    rows = []
    for n, (name, tile) in enumerate(zip(preds, tiles), 1):
        head = Image.new("RGB", (width, band), (246, 248, 250))
        draw = ImageDraw.Draw(head)
        draw.line([(0, 0), (width, 0)], fill=(208, 215, 222))  # parts it from the row above
        draw.text((6, band // 2), _fit(draw, f"{n}. {(labels or {}).get(name, name)}", font, width - 12), font=font,
                  fill=(31, 35, 40), anchor="lm")
        rows += [np.asarray(head), tile]
    with atomic_path(dest) as tmp:
        Image.fromarray(np.concatenate(rows, axis=0)).save(tmp, format="PNG", optimize=True)


def _text_head(path: Path, limit: int = 1 << 20) -> str:
    """The first ``limit`` bytes of a regular file as text ('' when it cannot be read)."""
    try:
        if path.is_symlink() or not path.is_file():
            return ""
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _ledger_files(out: Path) -> dict[str, str] | None:
    """The ledger in ``out``: name -> sha256 ({} when there is none, None when the file there is not ours)."""
    path = out / REPORT_LEDGER
    if not (path.exists() or path.is_symlink()):
        return {}
    try:
        doc = json.loads(_text_head(path))
        files = doc["files"]
        if doc.get("tool") != REPORT_TOOL or not all(isinstance(v, str) for v in files.values()):
            return None
        return {name: sha for name, sha in files.items() if name in REPORT_FILES}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _unledgered_report(out: Path) -> set[str]:
    """A report written before reports kept a ledger: its report.md (starting with the report's title), the
    report.html of that title, and the charts that report.md links."""
    md = _text_head(out / "report.md")
    if not md.startswith(f"# {REPORT_TITLE}\n"):
        return set()
    names = {"report.md"} | {n for n in REPORT_FILES if n.endswith(".png") and f"]({n})" in md}
    if f"<title>{REPORT_TITLE}" in _text_head(out / "report.html"):
        names.add("report.html")
    return names


def report_owned(out_dir: str | Path) -> set[str]:
    """The names in ``out_dir`` an earlier report wrote (the next one replaces them, or removes those it does
    not write again). EdgesegError (one line) when a file or folder there has a name the report writes but
    edgeseg did not write it, or it changed since: edgeseg only replaces what it wrote."""
    out = Path(out_dir)
    if not out.is_dir():
        return set()
    ledger = _ledger_files(out)
    if ledger is None:  # a file of the ledger's name that is not one
        owned: set[str] = set()
    elif (out / REPORT_LEDGER).exists():
        owned = {REPORT_LEDGER} | {n for n, sha in ledger.items() if _holds(out / n, sha)}
    else:
        owned = _unledgered_report(out)
    owned |= {n for n in REPORT_FILES if being_installed(out, n)}  # a report killed while it was being installed
    foreign = [n for n in (REPORT_LEDGER, *REPORT_FILES) if ((out / n).exists() or (out / n).is_symlink()) and n not in owned]
    if foreign:
        raise EdgesegError(f"--report {out_dir} holds {', '.join(foreign)}, not written by edgeseg bench (or changed since); "
                           "choose another --report folder or move them away (edgeseg only replaces what it wrote)")
    return owned


def _holds(path: Path, sha: str) -> bool:
    """Whether ``path`` is a regular file (not a symlink) with exactly the bytes of sha256 ``sha``."""
    return not path.is_symlink() and file_holds(path, sha)


def check_report_output(out_dir: str | Path) -> Path:
    """Refuse a ``--report`` folder before any timing: one that cannot be a writable folder (``check_output``)
    or that holds a file with a report's name that edgeseg did not write (``report_owned``)."""
    path = check_output(out_dir, is_dir=True, what="--report")
    report_owned(path)
    return path


def write_report(doc: dict, out_dir: str | Path, samples: tuple[np.ndarray, dict] | None = None) -> Path:
    """report.md + report.html with the table, charts and mask strip; returns the folder.

    Assembled in a staging folder and installed name by name with its ledger (written last): an earlier
    report's files are replaced (or removed when this run does not write them again, e.g. a chart), every
    other file in the folder is kept, and a file with a report's name that edgeseg did not write is refused
    (``report_owned``). On any failure (a full disk) nothing is left of this report.
    """
    out = Path(out_dir)
    owned = report_owned(out)
    stage = staging_dir(out)
    try:
        _write_report_files(doc, stage, samples)
        files = {p.name: sha256_file(p) for p in sorted(stage.iterdir()) if p.name in REPORT_FILES}
        (stage / REPORT_LEDGER).write_text(json.dumps({"tool": REPORT_TOOL, "files": files}, indent=1) + "\n",
                                           encoding="utf-8")
        install_staged(stage, out, owned=owned, last=REPORT_LEDGER)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def _write_report_files(doc: dict, out: Path, samples: tuple[np.ndarray, dict] | None) -> None:
    """Write the report's files into the (new, empty) folder ``out``."""
    charts = [name for name, chart in (("latency_accuracy.png", latency_accuracy_chart), ("thread_scaling.png", thread_scaling_chart))
              if chart(doc, out / name)]
    strip_rows = [row_label(doc, name) for name in samples[1]] if samples is not None else []
    if samples is not None:
        sample_strip(samples[0], samples[1], out / "samples.png", {n: _join(n, d) for n, d in strip_rows})
    has_strip = bool(strip_rows) and (out / "samples.png").exists()
    rows = table_rows(doc)
    host = doc["host"]
    facts = [f"Host: {host['cpu']}, {host['cores']} cores; calibration workload p50 {doc['calibration']['p50_ms']} ms"]
    untimed = {f"{r['runtime']}: {r['latency_skipped']}" for r in doc["results"] if "latency_skipped" in r}
    if untimed:
        facts.append("; ".join(sorted(untimed)))
    summary = int8_summary(doc)
    if summary:
        facts.append(summary)
    head = ". ".join(facts)
    md = [f"# {REPORT_TITLE}", "", head, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(r + [""] * (len(COLUMNS) - len(r))) + " |" for r in rows]
    md += [line for name in charts for line in ("", f"![{CHART_ALT[name]}]({name})")]
    flicker = flicker_table(doc)
    if flicker:
        title, header, frows = flicker
        md += ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(r) + " |" for r in frows]
    if has_strip:
        md += ["", "Mask strip, rows top to bottom:", ""]
        md += [f"{i}. `{n}`" + (f" — {d}" if d else "") for i, (n, d) in enumerate(strip_rows, 1)]
        md += ["", "![masks](samples.png)"]
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    (out / "report.html").write_text(_html_page(doc, facts, rows, charts, strip_rows if has_strip else []),
                                     encoding="utf-8")


def _html_page(doc: dict, facts: list[str], rows: list[list[str]], charts: list[str], strip_rows: list[tuple[str, str]]) -> str:
    """The self-contained HTML page (embedded stylesheet, the PNGs beside it); every text from the run escaped."""
    esc = html.escape

    def cell(c: str) -> str:
        return f'<td class="skipped">{esc(c)}</td>' if c.startswith("skipped: ") else f"<td>{esc(c)}</td>"

    def name_cell(c: str) -> str:  # a long file name may wrap after _ - . (not mid-word)
        return "<td>" + re.sub(r"([_.-])", r"\1<wbr>", esc(c)) + "</td>"
    model = (doc.get("model") or {}).get("name")
    title = REPORT_TITLE + (f": {model}" if model else "")
    body = [f"<h1>{esc(title)}</h1>", '<ul class="meta">' + "".join(f"<li>{esc(f)}</li>" for f in facts) + "</ul>",
            "<h2>Results</h2>", '<div class="scroll"><table>',
            "<thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in COLUMNS) + "</tr></thead><tbody>",
            *("<tr>" + name_cell(r[0]) + "".join(cell(c) for c in r[1:]) + "</tr>" for r in rows), "</tbody></table></div>"]
    if charts:
        body += ["<h2>Charts</h2>", '<div class="charts">']
        body += [f'<figure><img src="{n}" alt="{esc(CHART_ALT[n])}"><figcaption>{esc(CHART_ALT[n])}</figcaption></figure>'
                 for n in charts]
        body += ["</div>"]
    flicker = flicker_table(doc)
    if flicker:
        title, header, frows = flicker
        body += [f"<h2>{esc(title)}</h2>", '<div class="scroll"><table>',
                 "<thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in header) + "</tr></thead><tbody>",
                 *("<tr>" + name_cell(r[0]) + "".join(cell(c) for c in r[1:]) + "</tr>" for r in frows),
                 "</tbody></table></div>"]
    if strip_rows:
        body += ["<h2>Masks</h2>", "<p>Sample images with each file's mask overlaid; rows top to bottom:</p>",
                 '<ol class="rows">' + "".join(f"<li><code>{esc(n)}</code>{' &mdash; ' + esc(d) if d else ''}</li>"
                                               for n, d in strip_rows) + "</ol>",
                 '<figure><img src="samples.png" alt="'
                 + esc("mask strip, rows top to bottom: " + "; ".join(_join(n, d) for n, d in strip_rows)) + '"></figure>']
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>\n{STYLE}\n</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def flicker_table(doc: dict) -> tuple[str, list[str], list[list[str]]] | None:
    """(title, header, rows) of the ``--clips`` flicker table, or None when the run has none."""
    t = doc.get("temporal")
    if not t:
        return None
    title = f"Flicker on {t['data']} ({t['clips']} clips, {t['frames']} frames; --smooth: the stabilizer)"
    return title, FLICKER_COLUMNS, flicker_rows(t)


def _join(name: str, desc: str) -> str:
    return f"{name} · {desc}" if desc else name

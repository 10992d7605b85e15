"""Bench reports: a table, charts (matplotlib, Agg) and a mask strip, as Markdown and HTML (layer 3)."""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from edgeseg.fsutil import atomic_path, write_text_atomic

COLUMNS = ["artifact", "runtime", "threads", "p50 ms", "p90 ms", "normalized p50", "speed-up vs PyTorch", "load ms",
           "peak RSS MB", "int8/fp32 p50", "size KB", "agreement mIoU", "stress agreement", "GT mIoU"]


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


def _save(fig, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def latency_accuracy_chart(doc: dict, dest: Path) -> None:
    """p50 latency vs agreement mIoU, marker area ~ file size, at the highest thread count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = [r for r in doc["results"] if "latency_ms" in r]
    if not res:
        return
    top = max(r["threads"] for r in res)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in (r for r in res if r["threads"] == top):
        acc = (r.get("parity") or {}).get("agreement_miou", 1.0 if r["format"] == "pytorch" else None)
        if acc is None:
            continue
        ax.scatter(r["latency_ms"]["p50"], acc, s=max(20, r["bytes"] / 2 ** 14), alpha=0.6)
        ax.annotate(f"{r['format']}-{r['precision']}", (r["latency_ms"]["p50"], acc), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xlabel(f"p50 latency, ms ({top} threads)")
    ax.set_ylabel("agreement mIoU vs PyTorch fp32")
    ax.set_title("latency vs accuracy (marker area ~ file size)")
    ax.grid(alpha=0.3)
    _save(fig, dest)
    plt.close(fig)


def thread_scaling_chart(doc: dict, dest: Path) -> None:
    """p50 latency per thread count, one line per artifact."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = dict.fromkeys(r["artifact"] for r in doc["results"] if "latency_ms" in r)
    for name in names:
        pts = sorted((r["threads"], r["latency_ms"]["p50"]) for r in doc["results"] if r["artifact"] == name and "latency_ms" in r)
        ax.plot([t for t, _ in pts], [v for _, v in pts], marker="o", label=name)
    ax.set_xlabel("threads")
    ax.set_ylabel("p50 latency, ms")
    ax.set_title("thread scaling")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, dest)
    plt.close(fig)


def sample_strip(images: np.ndarray, preds: dict[str, np.ndarray], dest: Path) -> None:
    """Rows = artifacts, columns = sample images, each with its mask overlaid."""
    from PIL import Image

    from edgeseg.apply.compose import overlay

    if not preds:
        return
    tiles = [np.concatenate([np.asarray(overlay(img, p)) for img, p in zip(images, pr)], axis=1) for pr in preds.values()]
    with atomic_path(dest) as tmp:
        Image.fromarray(np.concatenate(tiles, axis=0)).save(tmp, format="PNG")


def write_report(doc: dict, out_dir: str | Path, samples: tuple[np.ndarray, dict] | None = None) -> Path:
    """report.md + report.html with the table, charts and mask strip; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    latency_accuracy_chart(doc, out / "latency_accuracy.png")
    thread_scaling_chart(doc, out / "thread_scaling.png")
    if samples is not None:
        sample_strip(samples[0], samples[1], out / "samples.png")
    rows = table_rows(doc)
    host = doc["host"]
    head = f"Host: {host['cpu']}, {host['cores']} cores; calibration workload p50 {doc['calibration']['p50_ms']} ms"
    untimed = {f"{r['runtime']}: {r['latency_skipped']}" for r in doc["results"] if "latency_skipped" in r}
    if untimed:
        head += ". " + "; ".join(sorted(untimed))
    summary = int8_summary(doc)
    if summary:
        head += ". " + summary
    md = ["# edgeseg bench report", "", head, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(r + [""] * (len(COLUMNS) - len(r))) + " |" for r in rows]
    md += ["", "![latency vs accuracy](latency_accuracy.png)", "", "![thread scaling](thread_scaling.png)"]
    if (out / "samples.png").exists():
        md += ["", "Rows: " + ", ".join(samples[1]) + ".", "", "![masks](samples.png)"]
    write_text_atomic(out / "report.md", "\n".join(md) + "\n")
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    imgs = "".join(f'<p><img src="{n}" alt="{n}"></p>' for n in ("latency_accuracy.png", "thread_scaling.png", "samples.png")
                   if (out / n).exists())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>edgeseg bench</title><style>td,th{{padding:2px 8px;"
            f"border-bottom:1px solid #ddd;font:13px sans-serif}}</style></head><body><h1>edgeseg bench report</h1>"
            f"<p>{html.escape(head)}</p><table><tr>{''.join(f'<th>{c}</th>' for c in COLUMNS)}</tr>{cells}</table>{imgs}</body></html>")
    write_text_atomic(out / "report.html", page)
    return out

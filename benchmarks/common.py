"""Helpers shared by ``noise_check.py`` and ``flap_check.py``: pick artifacts, write results."""
from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path


from edgeseg.bench.harness import timing_image  # noqa: F401  (the image edgeseg bench times; re-exported for the checks)
from edgeseg.errors import ArtifactError, EdgesegError
from edgeseg.manifest import Artifact, Manifest, read_manifest


def select_artifacts(export_dir: str, picks: list[str] | None) -> tuple[Manifest, list[Artifact]]:
    """The manifest of ``export_dir`` and the artifacts named ``FORMAT:PRECISION`` (all when ``picks`` is empty)."""
    manifest = read_manifest(export_dir)
    if not picks:
        return manifest, list(manifest.artifacts)
    arts = []
    for pick in picks:
        fmt, _, prec = pick.partition(":")
        art = manifest.find(fmt, prec)
        if art is None:
            have = ", ".join(f"{a.format}:{a.precision}" for a in manifest.artifacts)
            raise ArtifactError(f"{export_dir}: no {pick} artifact (have {have})")
        arts.append(art)
    return manifest, arts


def cv(values) -> float:
    """Coefficient of variation (sample std / mean); NaN with fewer than two values."""
    values = list(values)
    return statistics.stdev(values) / statistics.fmean(values) if len(values) > 1 else math.nan


def md_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def _no_nan(x):
    """JSON has no NaN: write null instead."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_no_nan(v) for v in x]
    return x


def write_outputs(stem: str, doc: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``STEM.json`` and ``STEM.md`` (a trailing .json/.md on ``stem`` is dropped)."""
    base = Path(stem)
    if base.suffix in (".json", ".md"):
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    js, md = base.with_name(base.name + ".json"), base.with_name(base.name + ".md")
    js.write_text(json.dumps(_no_nan(doc), indent=2) + "\n")
    md.write_text(markdown.rstrip() + "\n")
    return js, md


def run_main(main) -> None:
    """Call ``main``; bad input (EdgesegError) prints one line and exits 2, like the CLI."""
    try:
        main()
    except EdgesegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

"""Regenerate the committed int8 audit that ``edgeseg models`` shows (is each architecture's int8 graph pure integer?).

Exports a random-init, 64x64 instance of every registered architecture to int8 TFLite and int8
ONNX with edgeseg's exporters and reads the graphs (``edgeseg.export.int8_audit``); writes
``edgeseg/models/assets/int8_audit.json`` with the date and tool versions. One export per
architecture: minutes. Run it after adding an architecture or upgrading a converter, then commit
the file (tests/test_models.py re-measures one architecture and fails when the file is stale).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/int8_audit.py [--out FILE]
"""
from __future__ import annotations

import argparse
import json

from common import md_table, run_main

from edgeseg.export.int8_audit import build_audit
from edgeseg.fsutil import write_text_atomic
from edgeseg.models.report import INT8_AUDIT, int8_label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(INT8_AUDIT), help="where to write the audit JSON [%(default)s]")
    args = ap.parse_args()
    doc = build_audit(on_entry=lambda name, entry: print(f"measured {name}: pure integer {entry['pure_integer']}",
                                                        flush=True))
    write_text_atomic(args.out, json.dumps(doc, indent=2) + "\n")
    print(md_table(["architecture", "int8 TFLite", "int8 ONNX"],
                   [[name, int8_label(e, "tflite"), int8_label(e, "onnx")] for name, e in doc["architectures"].items()]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_main(main)

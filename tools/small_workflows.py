#!/usr/bin/env python
"""Copies of UI-format workflows shrunk for a CPU run with tiny models: 64 px latents, 2 calibration
prompts. For checking the shipped workflows end to end in the real front end on a small machine:

    python tools/small_workflows.py OUT_DIR workflows/*.json
    ../shared/tools/frontend_check --models TINY_DIR ... OUT_DIR/*.json

(TINY_DIR holds tiny models under the real file names: tests/make_tiny_models.py builds them.)
"""
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
from tools import workflow_format as WF  # noqa: E402

SMALL = {"EmptyLatentImage": {"width": 64, "height": 64},
         "CLIPTextEncodeSDXLRefiner": {"width": 64, "height": 64},
         "StudentTeacherCalibrateThreshold": {"width": 64, "height": 64, "max_prompts": 2}}


def shrink(workflow: dict, schemas: dict) -> dict:
    for node in workflow["nodes"]:
        values = SMALL.get(node["type"])
        if values:
            saved = [w.name for w in WF.widget_layout(node["type"], schemas) if w.saved]
            for name, value in values.items():
                node["widgets_values"][saved.index(name)] = value
    return workflow


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        sys.exit(__doc__)
    out, paths = argv[0], argv[1:]
    os.makedirs(out, exist_ok=True)
    schemas = WF.load_schemas()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            small = shrink(json.load(f), schemas)
        with open(os.path.join(out, os.path.basename(path)), "w", encoding="utf-8") as f:
            json.dump(small, f, indent=1, ensure_ascii=False)
    print(f"wrote {len(paths)} small workflows to {out}")


if __name__ == "__main__":
    main()

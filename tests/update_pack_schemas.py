#!/usr/bin/env python
"""Write (or check) tests/data/pack_object_info.json: the /object_info entries of every node in the
pack's NODE_CLASS_MAPPINGS, taken from the pack loaded into a real ComfyUI in-process (ComfyUI's
own /object_info route code), normalised by comfyui_harness.pack_object_info (python_module
"custom_nodes.<pack>", model-file combos listed empty).

    COMFYUI_PATH=/path/to/ComfyUI python tests/update_pack_schemas.py          # write
    COMFYUI_PATH=/path/to/ComfyUI python tests/update_pack_schemas.py --check  # exit 1 if stale

The tier-1 workflow checks (tests/workflow_format.py) read this snapshot; the tier-2 test
tests/test_pack_schemas.py fails when it is stale.
"""
import argparse
import json
import os
import sys
import tempfile

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS)
sys.path.insert(1, os.path.dirname(TESTS))

import comfyui_harness as H  # noqa: E402

SNAPSHOT = os.path.join(TESTS, "data", "pack_object_info.json")
FIX = "COMFYUI_PATH=<ComfyUI checkout> python tests/update_pack_schemas.py"


def dumps(info: dict) -> str:
    return json.dumps(info, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def diff(old: dict, new: dict) -> list:
    out = []
    for k in sorted(set(old) | set(new)):
        if k not in new:
            out.append(f"{k}: gone from the pack")
        elif k not in old:
            out.append(f"{k}: new node, not in the snapshot")
        elif old[k] != new[k]:
            fields = sorted(f for f in set(old[k]) | set(new[k]) if old[k].get(f) != new[k].get(f))
            out.append(f"{k}: changed {fields}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 if the snapshot is stale")
    ap.add_argument("--out", default=SNAPSHOT)
    a = ap.parse_args(argv)
    if not H.comfyui_path():
        sys.exit(f"set COMFYUI_PATH to a ComfyUI checkout: {FIX}")
    host = H.start(work_dir=tempfile.mkdtemp(prefix="st_schemas_"))
    info = H.pack_object_info(host)
    old = json.load(open(a.out)) if os.path.exists(a.out) else {}
    changes = diff(old, info)
    if a.check:
        for c in changes:
            print(c)
        print("pack_object_info.json is " + ("STALE: run " + FIX if changes else "up to date"))
        return 1 if changes else 0
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(dumps(info))
    print(f"wrote {a.out}: {len(info)} nodes" + (f" ({len(changes)} changed)" if changes else " (unchanged)"))
    for c in changes:
        print("  " + c)
    return 0


if __name__ == "__main__":
    sys.exit(main())

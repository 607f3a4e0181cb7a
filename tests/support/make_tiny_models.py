#!/usr/bin/env python
"""Write the tiny random-weight test models into DIR/<folder>/ (checkpoints, loras, controlnet,
image_reward), with the same builders as the tier-2 harness, e.g. for
../shared/tools/frontend_check --models DIR or for TINY_MODELS_DIR (reused by tier 2).

    COMFYUI_PATH=/path/to/ComfyUI python tests/support/make_tiny_models.py /work/tiny_models [name ...]

Files already there and current (DIR/tiny_models.json) are kept. Needs ComfyUI (its classes build
the models): it is imported in-process from COMFYUI_PATH, with the pack loaded.
"""
import argparse
import os
import sys
import tempfile

import comfyui_harness as H


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="models root to write (created if missing)")
    ap.add_argument("names", nargs="*", help=f"only these (default: all of {sorted(H.TINY_MODELS)})")
    ap.add_argument("--comfyui", default=H.comfyui_path(), help="ComfyUI checkout (default: $COMFYUI_PATH)")
    a = ap.parse_args(argv)
    if not a.comfyui:
        sys.exit("set COMFYUI_PATH (or --comfyui) to a ComfyUI checkout")
    unknown = [n for n in a.names if n not in H.TINY_MODELS]
    if unknown:
        sys.exit(f"unknown model(s) {unknown}; known: {sorted(H.TINY_MODELS)}")
    root = os.path.abspath(a.dir)
    H.start(a.comfyui, work_dir=tempfile.mkdtemp(prefix="st_make_tiny_"), models_root=root)
    res = H.build_tiny_models(root, a.names or None)
    for name, r in res.items():
        state = "built" if r["built"] else "kept"
        print(f"{state:5} {os.path.relpath(r['path'], root)}  {r['bytes'] / 2**20:8.1f} MiB"
              + (f"  {r['seconds']:.1f} s" if r["built"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Write (or check) the node schemas the tier-1 workflow checks read, from a real ComfyUI:

    tests/data/schemas/core-0.3.64.json   GET /object_info of ComfyUI's core nodes (no API nodes)
    tests/data/schemas/pack.json          the same for every node of this pack

    COMFYUI_PATH=/path/to/ComfyUI python tests/support/update_schemas.py          # write both
    COMFYUI_PATH=/path/to/ComfyUI python tests/support/update_schemas.py --check  # exit 1 if stale

ComfyUI is booted in-process (tools/comfyui_boot.py) and its own /object_info route code answers.
The schemas are normalised so they do not depend on the install: every model or input folder is
swapped for an empty one while they are read (file combos list only files shipped inside the
pack), and the pack's python_module reads "custom_nodes.<pack>". The tier-2 test
tests/tier2/test_pack_schemas.py fails when pack.json is stale.
"""
import argparse
import json
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
from tools.comfyui_boot import boot, object_info  # noqa: E402
from workflows import widget_order_problems  # noqa: E402

SCHEMAS = os.path.join(REPO, "tests", "data", "schemas")
CORE = os.path.join(SCHEMAS, "core-0.3.64.json")
PACK = os.path.join(SCHEMAS, "pack.json")
PACK_PYTHON_MODULE = "custom_nodes.<pack>"
FIX = "COMFYUI_PATH=<ComfyUI checkout> python tests/support/update_schemas.py"


def normalised_object_info(comfy, classes) -> dict:
    """object_info of `classes`, read while every folder outside the pack is an empty one."""
    import folder_paths
    saved = {k: (list(v[0]), v[1]) for k, v in folder_paths.folder_names_and_paths.items()}
    saved_input = folder_paths.get_input_directory()
    pack = os.path.realpath(REPO) + os.sep
    with tempfile.TemporaryDirectory(prefix="st_empty_") as empty:
        try:
            for k, (paths, exts) in list(folder_paths.folder_names_and_paths.items()):
                if k != "custom_nodes":
                    inside = [p for p in paths if os.path.realpath(p).startswith(pack)]
                    folder_paths.folder_names_and_paths[k] = (inside + [empty], exts)
            folder_paths.set_input_directory(empty)
            folder_paths.filename_list_cache.clear()
            info = object_info(comfy, sorted(classes))
        finally:
            folder_paths.folder_names_and_paths.clear()
            folder_paths.folder_names_and_paths.update(saved)
            folder_paths.set_input_directory(saved_input)
            folder_paths.filename_list_cache.clear()
    for v in info.values():
        if str(v.get("python_module", "")).startswith("custom_nodes"):
            v["python_module"] = PACK_PYTHON_MODULE
    return json.loads(json.dumps(info, sort_keys=True))


def pack_schemas(comfy) -> dict:
    """In the order the pack registers its nodes (the menu's and the README's order)."""
    info = normalised_object_info(comfy, comfy.pack_nodes)
    return {name: info[name] for name in comfy.pack_nodes}


def core_schemas(comfy) -> dict:
    return normalised_object_info(comfy, comfy.core_node_names)


def dumps(info: dict) -> str:
    """Nodes in the order given, everything inside them sorted (normalised_object_info sorted it)."""
    return json.dumps(info, indent=1, ensure_ascii=False) + "\n"


def diff(old: dict, new: dict) -> list:
    out = []
    for k in sorted(set(old) | set(new)):
        if k not in new:
            out.append(f"{k}: gone")
        elif k not in old:
            out.append(f"{k}: new, not in the snapshot")
        elif old[k] != new[k]:
            fields = sorted(f for f in set(old[k]) | set(new[k]) if old[k].get(f) != new[k].get(f))
            out.append(f"{k}: changed {fields}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 if a snapshot is stale")
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder ($COMFYUI_PATH)")
    a = ap.parse_args(argv)
    if not a.comfyui:
        sys.exit(f"set COMFYUI_PATH to a ComfyUI checkout: {FIX}")
    work = tempfile.mkdtemp(prefix="st_schemas_")
    comfy = boot(a.comfyui, dirs={k: os.path.join(work, k) for k in ("output", "input", "temp", "user")})
    stale = 0
    for path, info in ((CORE, core_schemas(comfy)), (PACK, pack_schemas(comfy))):
        old = json.load(open(path, encoding="utf-8")) if os.path.exists(path) else {}
        changes = diff(old, info) + (["the order of the nodes"] if list(old) != list(info) and set(old) == set(info)
                                     else [])
        name = os.path.relpath(path, REPO)
        if a.check:
            stale += bool(changes)
            print(f"{name}: " + (f"STALE ({len(changes)} nodes differ); run {FIX}" if changes else "up to date"))
            continue
        reordered = widget_order_problems(old, info) if path == PACK else []
        if reordered:  # saved graphs store widget values by position: this would break them
            print(f"{name}: NOT written, widgets were reordered:\n  " + "\n  ".join(reordered))
            stale += 1
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(dumps(info))
        print(f"wrote {name}: {len(info)} nodes" + (f", {len(changes)} changed" if changes else ", unchanged"))
        for c in changes[:40]:
            print("  " + c)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

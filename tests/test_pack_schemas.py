"""tests/data/schemas/pack.json (the pack's node schemas for the tier-1 workflow checks).

Tier 1: the snapshot is well-formed. Tier 2: it equals what the live pack serves at /object_info;
when it does not, regenerate it with tools/update_schemas.py."""
import json

import workflows as W
from comfyui_harness import PACK_NODE_PREFIX
from tools.update_schemas import FIX, PACK, diff, pack_schemas


def test_snapshot_is_well_formed():
    with open(PACK, encoding="utf-8") as f:
        info = json.load(f)
    assert info
    for name, entry in info.items():
        assert name.startswith(PACK_NODE_PREFIX) and entry["name"] == name
        assert {"input", "input_order", "output", "output_name", "category"} <= set(entry)


def test_snapshot_matches_the_live_pack(comfy):
    live = pack_schemas(comfy.booted)
    with open(PACK, encoding="utf-8") as f:
        snapshot = json.load(f)
    changes = diff(snapshot, live)
    assert not changes, "tests/data/schemas/pack.json is stale:\n  " + "\n  ".join(changes) + f"\nfix: {FIX}"
    assert list(live) == list(snapshot) == list(comfy.pack_nodes)


def test_no_live_node_reorders_the_widgets_of_the_snapshot(comfy):
    """Saved graphs keep their values: against the committed snapshot, a node's widgets only grew at
    the end (tools/update_schemas.py refuses to write a snapshot that breaks this)."""
    with open(PACK, encoding="utf-8") as f:
        snapshot = json.load(f)
    assert W.widget_order_problems(snapshot, pack_schemas(comfy.booted)) == []


def test_readme_shows_the_nodes_as_they_are():
    from tools import node_docs
    assert node_docs.main(["--check"]) == 0, "README.md's Nodes section is stale: run python tools/node_docs.py"

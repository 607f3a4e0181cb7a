"""tests/data/schemas/pack.json, the pack's node schemas the workflow checks read (tier 2 compares it with
the live pack: tests/tier2/test_pack_schemas.py), and docs/nodes.md, written from it."""
import json

from comfyui_harness import PACK_NODE_PREFIX
from update_schemas import PACK


def test_snapshot_is_well_formed():
    with open(PACK, encoding="utf-8") as f:
        info = json.load(f)
    assert info
    for name, entry in info.items():
        assert name.startswith(PACK_NODE_PREFIX) and entry["name"] == name
        assert {"input", "input_order", "output", "output_name", "category"} <= set(entry)


def test_the_node_reference_shows_the_nodes_as_they_are():
    from tools import node_docs
    assert node_docs.main(["--check"]) == 0, "docs/nodes.md is stale: run python tools/node_docs.py"

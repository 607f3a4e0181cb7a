"""tests/data/schemas/pack.json (the pack's node schemas for the tier-1 workflow checks) equals what the
live pack serves at /object_info (when it does not, regenerate it with tests/support/update_schemas.py),
and no live node reordered the widgets of the snapshot."""
import json

import workflows as W
from update_schemas import FIX, PACK, diff, pack_schemas


def test_snapshot_matches_the_live_pack(comfy):
    live = pack_schemas(comfy.booted)
    with open(PACK, encoding="utf-8") as f:
        snapshot = json.load(f)
    changes = diff(snapshot, live)
    assert not changes, "tests/data/schemas/pack.json is stale:\n  " + "\n  ".join(changes) + f"\nfix: {FIX}"
    assert list(live) == list(snapshot) == list(comfy.pack_nodes)


def test_no_live_node_reorders_the_widgets_of_the_snapshot(comfy):
    """Saved graphs keep their values: against the committed snapshot, a node's widgets only grew at
    the end (tests/support/update_schemas.py refuses to write a snapshot that breaks this)."""
    with open(PACK, encoding="utf-8") as f:
        snapshot = json.load(f)
    assert W.widget_order_problems(snapshot, pack_schemas(comfy.booted)) == []

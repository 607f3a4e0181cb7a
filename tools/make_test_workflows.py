#!/usr/bin/env python
"""Write tests/data/workflows/core_txt2img.json: the front end's default text-to-image graph (its
node and link numbering: KSampler #3, checkpoint #4, ...), the fixture of the tier-1 workflow checks.

    python tools/make_test_workflows.py [--check]

Its API prompt as the REAL front end builds it lives in tests/data/frontend_prompts/, captured with
../shared/tools/frontend_check --no-run --prompts DIR tests/data/workflows/*.json.
"""
import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "data", "workflows", "core_txt2img.json")

# id: (type, position, widgets_values, [(input name, type)], [(output name, type)]), in execution order
NODES = {
    4: ("CheckpointLoaderSimple", [26, 474], ["v1-5-pruned-emaonly-fp16.safetensors"], [],
        [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    5: ("EmptyLatentImage", [473, 609], [64, 64, 1], [], [("LATENT", "LATENT")]),
    6: ("CLIPTextEncode", [415, 186], ["a red cube on a table"], [("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    7: ("CLIPTextEncode", [413, 389], ["blurry, watermark"], [("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    3: ("KSampler", [863, 186], [0, "fixed", 4, 7, "euler", "normal", 1],
        [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT")],
        [("LATENT", "LATENT")]),
    8: ("VAEDecode", [1209, 188], None, [("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    9: ("SaveImage", [1451, 189], ["frontend_check"], [("images", "IMAGE")], []),
}
# (link id, from node, from slot, to node, to slot)
LINKS = [(1, 4, 0, 3, 0), (2, 5, 0, 3, 3), (3, 4, 1, 6, 0), (4, 6, 0, 3, 1), (5, 4, 1, 7, 0), (6, 7, 0, 3, 2),
         (7, 3, 0, 8, 0), (8, 4, 2, 8, 1), (9, 8, 0, 9, 0)]


def core_txt2img() -> dict:
    links = [[lid, a, sa, b, sb, NODES[a][4][sa][1]] for lid, a, sa, b, sb in LINKS]
    nodes = []
    for order, nid in enumerate(NODES):
        type_, pos, values, inputs, outputs = NODES[nid]
        node = {
            "id": nid, "type": type_, "pos": pos, "size": [315, 100], "flags": {}, "order": order, "mode": 0,
            "inputs": [{"name": n, "type": t, "link": next(l[0] for l in links if l[3] == nid and l[4] == i)}
                       for i, (n, t) in enumerate(inputs)],
            "outputs": [{"name": n, "type": t, "links": [l[0] for l in links if l[1] == nid and l[2] == s],
                         "slot_index": s} for s, (n, t) in enumerate(outputs)],
            "properties": {"Node name for S&R": type_},
        }
        if values is not None:
            node["widgets_values"] = values
        nodes.append(node)
    return {"last_node_id": max(NODES), "last_link_id": len(LINKS), "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {}, "version": 0.4}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    a = ap.parse_args(argv)
    text = json.dumps(core_txt2img(), indent=1) + "\n"
    if a.check:
        with open(OUT, encoding="utf-8") as f:
            stale = f.read() != text
        print(f"{os.path.relpath(OUT, REPO)}: {'STALE' if stale else 'up to date'}")
        return int(stale)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(OUT, REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

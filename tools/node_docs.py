#!/usr/bin/env python
"""The README's "## Nodes" section, written from the pack's node schemas (tests/data/schemas/pack.json),
so every input, default and tooltip the README shows is the one the node declares.

    python tools/node_docs.py          # rewrite the section in README.md
    python tools/node_docs.py --check  # exit 1 if README.md differs (a tier-1 test runs this check)
"""
import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
PACK = os.path.join(REPO, "tests", "data", "schemas", "pack.json")
START, END = "## Nodes\n", "\n## Workflows\n"
INTRO = ("All nodes are under *sampling/student_teacher* in the node menu; ids start with `StudentTeacher`. Every "
         "FLOAT input refuses NaN and infinity (which pass ComfyUI's own min/max checks when a graph arrives over the "
         "API) with a message naming the input.\n")


def cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def node_section(name: str, info: dict) -> str:
    lines = [f"### {info['display_name']} (`{name}`)", "", info["description"], "",
             "| input | type | default | what it does |", "|---|---|---|---|"]
    for section in ("required", "optional"):
        for inp in info.get("input_order", {}).get(section, []):
            kind, opts = info["input"][section][inp][0], (info["input"][section][inp] + [{}])[1]
            shown = "choice" if isinstance(kind, list) else kind
            default = opts.get("default", "")
            if isinstance(kind, list) and default == "" and kind and "." not in str(kind[0]):
                default = kind[0]
            optional = " (optional)" if section == "optional" else ""
            lines.append(f"| `{inp}`{optional} | {shown} | {cell(default)} | {cell(opts.get('tooltip', ''))} |")
    outputs = ", ".join(f"`{n}` ({t})" for n, t in zip(info["output_name"], info["output"]))
    lines += ["", f"Outputs: {outputs}.", ""]
    return "\n".join(lines)


def nodes_section() -> str:
    with open(PACK, encoding="utf-8") as f:
        pack = json.load(f)
    return START + "\n" + INTRO + "\n" + "\n".join(node_section(n, info) for n, info in pack.items())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md's Nodes section is out of date")
    a = ap.parse_args(argv)
    with open(README, encoding="utf-8") as f:
        text = f.read()
    head, rest = text.split(START, 1)
    tail = rest[rest.index(END):]
    new = head + nodes_section().rstrip("\n") + "\n" + tail
    if a.check:
        stale = new != text
        print("README.md Nodes section: " + ("STALE, run python tools/node_docs.py" if stale else "up to date"))
        return int(stale)
    with open(README, "w", encoding="utf-8") as f:
        f.write(new)
    print("wrote the Nodes section of README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

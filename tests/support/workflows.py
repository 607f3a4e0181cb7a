"""The shipped workflows (saved UI files, edited in ComfyUI) as API prompts, checked against the schemas.

It converts exactly what the shipped workflows use, as ComfyUI's front end (1.27) saves it: links,
widget values in the node's input order (required, then optional), the control_after_generate value
saved after an INT that has one, the upload button's value saved after an image-upload COMBO, and
Note / MarkdownNote (front-end only, never sent). Anything else a workflow could hold (muted or
bypassed nodes, Reroute, PrimitiveNode, subgraphs, {a|b} dynamic prompts) is refused, not guessed:
the real front end (../shared/tools/frontend_check) is the judge of those.

    schemas = load_schemas()                      # tests/data/schemas: ComfyUI 0.3.64's + the pack's
    problems(workflow, schemas) -> [str]          # empty when the file fits the schemas
    to_api(workflow, schemas) -> {id: {"class_type", "inputs"}}
"""
import glob
import json
import os
import re
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMAS = os.path.join(REPO, "tests", "data", "schemas")
WORKFLOWS = os.path.join(REPO, "workflows")
SHIPPED = sorted(glob.glob(os.path.join(WORKFLOWS, "*.json")))
FRONTEND_ONLY = ("Note", "MarkdownNote")
SCALARS = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
CONTROL = "control_after_generate"  # the seed's "fixed / increment / randomize" value
UPLOAD = "upload"                   # LoadImage's upload button
DYNAMIC_PROMPT = re.compile(r"\{[^{}]*\|[^{}]*\}")


def load_schemas() -> Dict[str, dict]:
    schemas = {}
    for name in ("core-0.3.64.json", "pack.json"):
        with open(os.path.join(SCHEMAS, name), encoding="utf-8") as f:
            schemas.update(json.load(f))
    return schemas


def input_specs(schema: dict) -> List[tuple]:
    """[(name, type, options, required)] in the node's input order."""
    order = schema.get("input_order") or {s: sorted(schema["input"].get(s, {})) for s in ("required", "optional")}
    return [(name, *schema["input"][section][name][:1], (schema["input"][section][name][1:] or [{}])[0],
             section == "required") for section in ("required", "optional") for name in order.get(section, [])]


def is_widget(type_, options) -> bool:
    return (isinstance(type_, list) or type_ in SCALARS) and not options.get("forceInput")


def saved_widgets(schema: dict) -> List[str]:
    """What each entry of a node's saved widgets_values holds: its widgets by name, in order, with the
    front end's extra values (CONTROL after a seed, UPLOAD after an image COMBO) in their places."""
    names = []
    for name, type_, options, _ in input_specs(schema):
        if is_widget(type_, options):
            names.append(name)
            if options.get(CONTROL):
                names.append(CONTROL)
            if options.get("image_upload"):
                names.append(UPLOAD)
    return names


def _links(workflow) -> Dict[int, list]:
    return {link[0]: link for link in workflow.get("links", [])}


def to_api(workflow: dict, schemas: Dict[str, dict]) -> Dict[str, dict]:
    """The API prompt the front end builds from this saved workflow (what POST /prompt takes)."""
    bad = problems(workflow, schemas)
    if bad:
        raise ValueError("the workflow does not fit the node schemas:\n  " + "\n  ".join(bad))
    links, prompt = _links(workflow), {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        schema = schemas[node["type"]]
        values = dict(zip(saved_widgets(schema), node.get("widgets_values") or []))
        inputs = {name: values[name] for name, type_, options, _ in input_specs(schema)
                  if is_widget(type_, options) and name in values}
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                _, source, out_slot, *_ = links[slot["link"]]
                inputs[slot["name"]] = [str(source), out_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def problems(workflow: dict, schemas: Dict[str, dict]) -> List[str]:
    """Why this saved workflow would not load or run as it reads: unknown node types, features the
    converter does not take, links that do not join the slots they name or join mismatched types,
    required inputs left empty, widget values of the wrong count or kind, out of range, or not among a
    COMBO's choices (file lists excepted: the files differ per install)."""
    if not isinstance(workflow.get("nodes"), list) or (workflow.get("definitions") or {}).get("subgraphs"):
        return ["not a saved workflow of plain nodes (an API prompt, or subgraphs)"]
    out = []
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = _links(workflow)
    for link_id, source, out_slot, target, in_slot, type_ in links.values():
        if source not in nodes or target not in nodes:
            out.append(f"link {link_id}: missing node {source if source not in nodes else target}")
            continue
        outputs = schemas.get(nodes[source]["type"], {}).get("output")
        if outputs is not None and out_slot >= len(outputs):
            out.append(f"link {link_id}: #{source} has no output slot {out_slot}")
        slots = nodes[target].get("inputs", [])
        if in_slot >= len(slots):
            out.append(f"link {link_id}: #{target} has no input slot {in_slot}")
        elif slots[in_slot].get("link") != link_id:
            out.append(f"link {link_id}: #{target}'s input slot {in_slot} does not refer back to it")
    for node in nodes.values():
        if node["type"] not in FRONTEND_ONLY:
            out += _node_problems(node, nodes, links, schemas)
    return out


def _node_problems(node, nodes, links, schemas) -> List[str]:
    label, schema = f"#{node['id']} {node['type']}", schemas.get(node["type"])
    if schema is None:
        return [f"{label}: unknown node type {node['type']!r}"]
    out = [f"{label}: muted or bypassed nodes are not converted"] if node.get("mode", 0) != 0 else []
    specs = {name: (type_, options, required) for name, type_, options, required in input_specs(schema)}
    linked = set()
    for slot in node.get("inputs", []):
        if slot.get("link") is None:
            continue
        if slot["link"] not in links:
            out.append(f"{label}: input {slot['name']!r} names missing link {slot['link']}")
            continue
        linked.add(slot["name"])
        _, source, out_slot, *_ = links[slot["link"]]
        made = (schemas.get(nodes.get(source, {}).get("type"), {}).get("output") or [])[out_slot:out_slot + 1]
        wanted = specs.get(slot["name"], ("?",))[0]
        if made and not _fits(made[0], wanted):
            out.append(f"{label}: type mismatch: input {slot['name']!r} takes {wanted}, link gives {made[0]}")
    saved = saved_widgets(schema)
    values = node.get("widgets_values") or []
    if len(values) != len(saved):
        out.append(f"{label}: {len(values)} widget values, the node expects {len(saved)} ({', '.join(saved)})")
    else:
        for name, value in zip(saved, values):
            problem = _widget_problem(value, *specs[name][:2]) if name in specs else _extra_problem(name, value)
            if problem:
                out.append(f"{label}: {name!r} {problem}")
    out += [f"{label}: required input {name!r} is not connected" for name, (type_, options, required)
            in specs.items() if required and not is_widget(type_, options) and name not in linked]
    return out


def _fits(made, wanted) -> bool:
    if isinstance(wanted, list):
        wanted = "COMBO"
    return "*" in (made, wanted) or made == wanted or made in str(wanted).split(",")


FILE_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".json", ".txt", ".png", ".jpg", ".webp")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")


NOT_FILES = ("pixel_space",)  # entries a bare install's file list holds that are not files


def is_file_combo(choices: list) -> bool:
    """A COMBO of the install's files (models, calibrations, images): any file name is acceptable there
    (the snapshot lists none, or only the pack's presets, or only VAELoader's built-in 'pixel_space')."""
    files = [c for c in choices if c not in NOT_FILES]
    return not files or any(str(c).lower().endswith(FILE_EXTENSIONS) for c in files)


def _widget_problem(value, type_, options) -> Optional[str]:
    if isinstance(type_, list):
        if is_file_combo(type_):
            return None if isinstance(value, str) else f"{value!r} is not a file name (string)"
        return None if value in type_ else f"{value!r} is not one of {type_}"
    if type_ in ("INT", "FLOAT"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{value!r} is not a number"
        if type_ == "INT" and value != int(value):
            return f"{value!r} is not an integer"
        if value < options.get("min", value):
            return f"{value} is below min {options['min']}"
        if value > options.get("max", value):
            return f"{value} is above max {options['max']}"
    if type_ == "STRING":
        if not isinstance(value, str):
            return f"{value!r} is not a string"
        if options.get("dynamicPrompts") and DYNAMIC_PROMPT.search(value):
            return "holds a {a|b} dynamic prompt, which the front end would randomise"
    if type_ == "BOOLEAN" and not isinstance(value, bool):
        return f"{value!r} is not true or false"
    return None


def _extra_problem(name, value) -> Optional[str]:
    if name == CONTROL and value not in CONTROL_VALUES:
        return f"{value!r} is not one of {CONTROL_VALUES}"
    return None


def substitute(prompt: Dict[str, dict], subs: Dict[str, object]) -> Dict[str, dict]:
    """A copy with literal inputs replaced: {"input": value} or {"Class.input": value}; a value may be a
    function (class, input, old value) -> new value (e.g. a tiny model for each real file name)."""
    out = {}
    for nid, node in prompt.items():
        inputs = dict(node["inputs"])
        for name, old in node["inputs"].items():
            new = subs.get(f"{node['class_type']}.{name}", subs.get(name))
            if new is not None and not isinstance(old, list):
                inputs[name] = new(node["class_type"], name, old) if callable(new) else new
        out[nid] = {**node, "inputs": inputs}
    return out


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def widget_order_problems(saved: Dict[str, dict], now: Dict[str, dict]) -> List[str]:
    """Nodes whose widgets were reordered, removed or inserted before existing ones since the `saved`
    schemas: a saved graph stores widget values by position, so only widgets added at the end keep
    every old graph's values on their widgets."""
    out = []
    for name, schema in saved.items():
        if name not in now:
            out.append(f"{name}: the node is gone (saved graphs using it break)")
            continue
        before, after = saved_widgets(schema), saved_widgets(now[name])
        if after[:len(before)] != before:
            out.append(f"{name}: widgets {before} became {after}; add new widgets only after the last one")
    return out

"""Host-free tools for ComfyUI UI-format workflow JSON (what the front end saves, version 0.4).

No ComfyUI import: usable in tier 1, checked against the real front end 1.27.10 (see below).

  load_schemas()                    node schemas (/object_info format): ComfyUI 0.3.64's core nodes
                                    and this pack's, both written by tools/update_schemas.py into
                                    tests/data/schemas/
  validate_workflow(wf, schemas)    -> list of problems (strings); [] when the workflow is clean
  to_api_prompt(wf, schemas)        -> the API prompt {"id": {"class_type", "inputs", "_meta"}} the
                                    front end's app.graphToPrompt() builds from it
  substitute(prompt, subs)          -> a copy with literal inputs replaced (e.g. model file names)

Widget layout (which widgets a node has, in widgets_values order, and which go into the prompt):
for core nodes it is the layout the real front end 1.27.10 builds (tests/data/schemas/frontend_widgets.json,
recorded by tools/capture_frontend_widgets.mjs), for other nodes (this pack's) it follows the front
end's rules from the schema: required then optional inputs (input_order); INT/FLOAT/STRING/BOOLEAN/
COMBO (a list of choices or "COMBO") inputs are widgets unless forceInput; an INT widget gets a
"control_after_generate" widget after it when its options say control_after_generate, or, when
they do not say, when it is named seed or noise_seed (front end useIntWidget); a COMBO with
control_after_generate gets that widget plus "control_filter_list"; a required COMBO with
image_upload/video_upload/animated_image_upload gets an "upload" button after the required inputs
(Comfy.UploadImage). Control and upload widgets are saved in widgets_values, never sent.

Front-end-only node types: Note and MarkdownNote are ignored (never in the prompt). Reroute (the
legacy node) and PrimitiveNode (the legacy widget primitive) are SUPPORTED like the front end does:
links through a Reroute resolve to its source; a PrimitiveNode's value is written into every widget
it feeds. Muted nodes (mode 2) are left out and links from them dropped; bypassed nodes (mode 4) are
left out and links through them resolve to the input of the matching type (ExecutableNodeDTO's
bypass rule). Subgraphs (front end >= 1.24 "definitions.subgraphs") are not supported: reported.
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMAS_DIR = os.path.join(REPO_ROOT, "tests", "data", "schemas")
CORE_OBJECT_INFO = os.path.join(SCHEMAS_DIR, "core-0.3.64.json")
PACK_OBJECT_INFO = os.path.join(SCHEMAS_DIR, "pack.json")
FRONTEND_WIDGETS = os.path.join(SCHEMAS_DIR, "frontend_widgets.json")

IGNORED_TYPES = {"Note", "MarkdownNote"}           # front-end-only notes: never executed
REROUTE, PRIMITIVE = "Reroute", "PrimitiveNode"    # front-end-only, resolved like the front end
VIRTUAL_TYPES = IGNORED_TYPES | {REROUTE, PRIMITIVE}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4
# file extensions that make a COMBO a "files of this install" combo (any string accepted)
FILE_EXTENSIONS = {".safetensors", ".ckpt", ".pt", ".pt2", ".pth", ".bin", ".sft", ".pkl", ".gguf", ".onnx",
                   ".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".mp4", ".webm", ".mov",
                   ".mkv", ".wav", ".mp3", ".flac", ".ogg", ".json", ".txt", ".yaml", ".csv", ".glb", ".gltf",
                   ".obj", ".fbx", ".stl", ".npz", ".npy", ".latent"}


# ------------------------------------------------------------------------------------------------
# schemas
# ------------------------------------------------------------------------------------------------

def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_schemas(core_path: Optional[str] = None, pack_path: Optional[str] = None,
                 include_pack: bool = True) -> Dict[str, dict]:
    """Node schemas by type, /object_info format: the core snapshot, then the pack's on top."""
    schemas = dict(_read_json(core_path or CORE_OBJECT_INFO))
    if include_pack:
        p = pack_path or PACK_OBJECT_INFO
        if os.path.exists(p):
            schemas.update(_read_json(p))
    return schemas


@lru_cache(maxsize=4)
def _frontend_layouts(path: str = FRONTEND_WIDGETS) -> Dict[str, list]:
    if not os.path.exists(path):
        return {}
    return _read_json(path)["nodes"]


def input_specs(schema: dict) -> List[Tuple[str, str, Any, dict]]:
    """[(name, "required"|"optional", type, options)] in the node's input order (hidden inputs
    left out). `type` is the socket type string, or "COMBO" for a list of choices."""
    inp = schema.get("input", {}) or {}
    order = schema.get("input_order") or {}
    out = []
    for section in ("required", "optional"):
        specs = inp.get(section) or {}
        names = list(order.get(section) or []) or list(specs)
        names += [n for n in specs if n not in names]
        for name in names:
            if name not in specs:
                continue
            spec = specs[name]
            if not isinstance(spec, (list, tuple)) or not spec:
                spec = [spec]
            t = spec[0]
            opts = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(t, (list, tuple)):
                opts = {**opts, "options": list(t)}
                t = "COMBO"
            out.append((name, section, t, opts))
    return out


def combo_choices(t, opts) -> Optional[list]:
    return list(opts.get("options") or []) if t == "COMBO" else None


def is_file_combo(choices: Optional[list]) -> bool:
    """A combo listing files of the install (models, images, ...): any string is acceptable,
    since files differ per install (the core snapshot lists none)."""
    if choices is None:
        return False
    if not choices:
        return True
    return any(isinstance(c, str) and os.path.splitext(c)[1].lower() in FILE_EXTENSIONS for c in choices)


def output_types(schema: dict) -> List[str]:
    return ["COMBO" if isinstance(t, (list, tuple)) else t for t in schema.get("output", [])]


# ------------------------------------------------------------------------------------------------
# widget layout
# ------------------------------------------------------------------------------------------------

@dataclass
class Widget:
    name: str
    kind: str            # INT FLOAT STRING BOOLEAN COMBO CONTROL FILTER UPLOAD or a front-end type
    saved: bool          # has a slot in widgets_values
    sent: bool           # goes into the API prompt
    spec_type: Any = None
    opts: Optional[dict] = None


def _int_has_control(name, opts) -> bool:
    cag = opts.get("control_after_generate")
    if cag is None:
        return name in ("seed", "noise_seed")
    return bool(cag)


def widget_layout_from_schema(schema: dict) -> List[Widget]:
    """The widgets the front end creates for a node of this schema (its rules; see module doc)."""
    out: List[Widget] = []
    upload = None
    specs = input_specs(schema)
    for i, (name, section, t, opts) in enumerate(specs):
        if t in WIDGET_TYPES and not opts.get("forceInput"):
            out.append(Widget(name, t, True, True, t, opts))
            if t == "INT" and _int_has_control(name, opts):
                out.append(Widget("control_after_generate", "CONTROL", True, False))
            elif t == "COMBO" and opts.get("control_after_generate"):
                out.append(Widget("control_after_generate", "CONTROL", True, False))
                out.append(Widget("control_filter_list", "FILTER", True, False))
            if section == "required" and t == "COMBO" and upload is None and any(opts.get(f) for f in UPLOAD_FLAGS):
                upload = Widget("upload", "UPLOAD", True, False)
        last_required = section == "required" and (i + 1 == len(specs) or specs[i + 1][1] != "required")
        if last_required and upload is not None:
            out.append(upload)
    return out


_FRONTEND_KIND = {"number": None, "combo": "COMBO", "toggle": "BOOLEAN", "text": "STRING", "customtext": "STRING",
                  "button": "UPLOAD"}


def widget_layout(node_type: str, schemas: Dict[str, dict]) -> List[Widget]:
    """The node's widgets: the recorded front-end layout for core nodes, else the schema rules."""
    schema = schemas.get(node_type)
    recorded = _frontend_layouts().get(node_type)
    is_pack = schema is not None and str(schema.get("python_module", "")).startswith("custom_nodes")
    if recorded is not None and not is_pack:
        specs = {name: (t, opts) for name, _s, t, opts in input_specs(schema or {})}
        out = []
        for name, ftype, saved, sent in recorded:
            t, opts = specs.get(name, (None, None))
            if name == "control_after_generate" and not sent:
                kind = "CONTROL"
            elif name == "control_filter_list" and not sent:
                kind = "FILTER"
            elif t is not None:
                kind = t
            else:
                kind = _FRONTEND_KIND.get(ftype) or ftype
            out.append(Widget(name, kind, saved, sent, t, opts))
        return out
    if schema is None:
        return []
    return widget_layout_from_schema(schema)


# ------------------------------------------------------------------------------------------------
# graph access
# ------------------------------------------------------------------------------------------------

@dataclass
class Link:
    id: Any
    origin_id: Any
    origin_slot: int
    target_id: Any
    target_slot: int
    type: Any


def _links(wf: dict) -> Dict[Any, Link]:
    out = {}
    for l in wf.get("links", []) or []:
        if isinstance(l, dict):
            lk = Link(l.get("id"), l.get("origin_id"), l.get("origin_slot"), l.get("target_id"),
                      l.get("target_slot"), l.get("type"))
        else:
            lk = Link(*(list(l) + [None] * 6)[:6])
        out[lk.id] = lk
    return out


def _nodes(wf: dict) -> Dict[Any, dict]:
    return {n.get("id"): n for n in wf.get("nodes", []) or []}


def _nid(node_id) -> str:
    return str(node_id)


def _title(node, schema):
    if node.get("title"):
        return node["title"]
    if schema and schema.get("display_name"):
        return schema["display_name"]
    return node.get("type")


def valid_connection(a, b) -> bool:
    """LiteGraph.isValidConnection: "*"/"" match anything; comma lists match on any common type."""
    if isinstance(a, (list, tuple)):
        a = "COMBO"
    if isinstance(b, (list, tuple)):
        b = "COMBO"
    if a in ("", "*", None, 0) or b in ("", "*", None, 0) or a == b:
        return True
    a, b = str(a).lower(), str(b).lower()
    if "," not in a and "," not in b:
        return a == b
    return bool({x.strip() for x in a.split(",")} & {x.strip() for x in b.split(",")})


def widget_values(node: dict, layout: List[Widget]) -> Tuple[Dict[str, Any], int, int]:
    """({widget name: value}, values given, values expected): widgets_values assigned in order to
    the saved widgets (LGraphNode.configure); a dict of widgets_values maps by name."""
    wv = node.get("widgets_values")
    saved = [w for w in layout if w.saved]
    out = {}
    if isinstance(wv, dict):
        for w in saved:
            if w.name in wv:
                out[w.name] = wv[w.name]
        return out, len(wv), len(saved)
    wv = list(wv or [])
    for w, v in zip(saved, wv):
        out[w.name] = v
    return out, len(wv), len(saved)


def widget_default(w: Widget):
    opts = w.opts or {}
    if "default" in opts:
        return opts["default"]
    if w.kind == "COMBO":
        ch = opts.get("options") or []
        return ch[0] if ch else None
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(w.kind)


# ------------------------------------------------------------------------------------------------
# dynamic prompts (front end processDynamicPrompt, for STRING widgets with dynamicPrompts: true)
# ------------------------------------------------------------------------------------------------

def process_dynamic_prompt(text: str, choose: Optional[Callable[[list], str]] = None) -> str:
    """Strip /* */ and // comments and resolve {a|b|c} choices as the front end does. The front
    end picks a choice at random; `choose` (default: the first choice) decides here."""
    choose = choose or (lambda options: options[0])
    s = re.sub(r"/\*[\s\S]*?\*/|//.*", "", text)
    pos = 0

    def esc():
        nonlocal pos
        nxt = s[pos] if pos < len(s) else "undefined"
        pos += 1
        return "\\" + nxt

    def choice_block():
        nonlocal pos
        options, cur, depth = [], "", 0
        while pos < len(s):
            ch = s[pos]
            pos += 1
            if ch == "\\":
                cur += esc()
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                if not depth:
                    break
                depth -= 1
            elif ch == "|" and not depth:
                options.append(cur)
                cur = ""
                continue
            cur += ch
        options.append(cur)
        return process_dynamic_prompt(choose(options), choose)

    out = ""
    while pos < len(s):
        ch = s[pos]
        pos += 1
        if ch == "\\":
            out += esc()
        elif ch == "{":
            out += choice_block()
        else:
            out += ch
    return re.sub(r"\\([{}|])", r"\1", out)


# ------------------------------------------------------------------------------------------------
# link resolution (front end ExecutableNodeDTO.resolveInput / resolveOutput)
# ------------------------------------------------------------------------------------------------

class _Graph:
    def __init__(self, wf: dict, schemas: Dict[str, dict]):
        self.wf = wf
        self.schemas = schemas
        self.nodes = _nodes(wf)
        self.links = _links(wf)

    def node_inputs(self, node) -> list:
        return node.get("inputs") or []

    def bypass_slot(self, node, slot, type_) -> int:
        inputs = self.node_inputs(node)
        outs = node.get("outputs") or []
        out_type = outs[slot].get("type") if slot < len(outs) else None
        if type_ in ("*", ""):
            return slot if len(inputs) > slot else 0
        if slot < len(inputs) and valid_connection(inputs[slot].get("type"), out_type) and \
                valid_connection(inputs[slot].get("type"), type_):
            return slot
        for i, inp in enumerate(inputs):
            if inp.get("type") == type_:
                return i
        for i, inp in enumerate(inputs):
            if valid_connection(inp.get("type"), out_type) and valid_connection(inp.get("type"), type_):
                return i
        return -1

    def resolve_input(self, node, slot, type_=None, visited=None):
        """None, ("link", origin node, origin slot) or ("value", primitive value)."""
        visited = visited if visited is not None else set()
        key = (node.get("id"), "I", slot)
        if key in visited:
            raise ValueError(f"circular link through node #{node.get('id')}")
        visited.add(key)
        inputs = self.node_inputs(node)
        if slot >= len(inputs):
            return None
        link_id = inputs[slot].get("link")
        if link_id is None:
            return None
        link = self.links.get(link_id)
        if link is None:
            return None
        origin = self.nodes.get(link.origin_id)
        if origin is None:
            return None
        return self.resolve_output(origin, link.origin_slot, type_ or inputs[slot].get("type"), visited)

    def resolve_output(self, node, slot, type_, visited):
        key = (node.get("id"), "O", slot)
        if key in visited:
            raise ValueError(f"circular link through node #{node.get('id')}")
        visited.add(key)
        if node.get("mode") == MODE_BYPASS:
            idx = self.bypass_slot(node, slot, type_)
            return None if idx == -1 else self.resolve_input(node, idx, None, visited)
        t = node.get("type")
        if t == REROUTE:
            return self.resolve_input(node, slot, type_, visited) if self.node_inputs(node) else None
        if t == PRIMITIVE:
            wv = node.get("widgets_values")
            if isinstance(wv, list) and wv:
                return ("value", wv[0])
            return None
        if t in IGNORED_TYPES:
            return None
        return ("link", node, slot)


# ------------------------------------------------------------------------------------------------
# to_api_prompt
# ------------------------------------------------------------------------------------------------

def to_api_prompt(wf: dict, schemas: Dict[str, dict], *, meta: bool = True,
                  choose: Optional[Callable[[list], str]] = None) -> Dict[str, dict]:
    """The API prompt the front end's graphToPrompt builds from a UI-format workflow. Raises
    ValueError for node types without a schema (the front end would call them missing)."""
    if (wf.get("definitions") or {}).get("subgraphs"):
        raise ValueError("subgraphs are not supported by workflow_format")
    g = _Graph(wf, schemas)
    unknown = sorted({str(n.get("type")) for n in g.nodes.values()
                      if n.get("type") not in schemas and n.get("type") not in VIRTUAL_TYPES})
    if unknown:
        raise ValueError(f"unknown node types: {unknown}")

    # PrimitiveNode.applyToGraph: its value goes into every widget it feeds
    forced: Dict[Tuple[Any, str], Any] = {}
    for node in g.nodes.values():
        if node.get("type") != PRIMITIVE:
            continue
        wv = node.get("widgets_values")
        if not isinstance(wv, list) or not wv:
            continue
        for out in node.get("outputs") or []:
            for lid in out.get("links") or []:
                link = g.links.get(lid)
                target = g.nodes.get(link.target_id) if link else None
                if target is None:
                    continue
                ins = g.node_inputs(target)
                if link.target_slot is not None and link.target_slot < len(ins):
                    wname = (ins[link.target_slot].get("widget") or {}).get("name") or ins[link.target_slot].get("name")
                    forced[(target.get("id"), wname)] = wv[0]

    output: Dict[str, dict] = {}
    order = sorted(g.nodes.values(), key=lambda n: (n.get("order", 0) if isinstance(n.get("order"), int) else 0))
    for node in order:
        t = node.get("type")
        if t in VIRTUAL_TYPES or node.get("mode") in (MODE_NEVER, MODE_BYPASS):
            continue
        schema = schemas[t]
        layout = widget_layout(t, schemas)
        values, _, _ = widget_values(node, layout)
        inputs: Dict[str, Any] = {}
        for w in layout:
            if not w.sent or not w.name:
                continue
            v = forced.get((node.get("id"), w.name), values.get(w.name, widget_default(w)))
            if isinstance(v, str) and (w.opts or {}).get("dynamicPrompts"):
                v = process_dynamic_prompt(v, choose)
            inputs[w.name] = {"__value__": v} if isinstance(v, list) else v
        for i, inp in enumerate(g.node_inputs(node)):
            r = g.resolve_input(node, i)
            if r is None:
                continue
            if r[0] == "value":
                v = r[1]
                inputs[inp.get("name")] = {"__value__": v} if isinstance(v, list) else v
            else:
                inputs[inp.get("name")] = [_nid(r[1].get("id")), int(r[2])]
        entry = {"inputs": inputs, "class_type": t}
        if meta:
            entry["_meta"] = {"title": _title(node, schema)}
        output[_nid(node.get("id"))] = entry
    # links to nodes left out (muted) are dropped
    for entry in output.values():
        for name, v in list(entry["inputs"].items()):
            if isinstance(v, list) and len(v) == 2 and v[0] not in output:
                del entry["inputs"][name]
    return output


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------

def check_widget_value(w: Widget, v) -> Optional[str]:
    t, opts = w.kind, w.opts or {}
    if t == "CONTROL":
        allowed = CONTROL_VALUES + (("increment-wrap",) if w.spec_type == "COMBO" else ())
        return None if v in allowed or v in ("increment-wrap",) else f"control value {v!r} not in {list(CONTROL_VALUES)}"
    if t in ("FILTER", "UPLOAD"):
        return None
    if t in ("INT", "FLOAT"):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
            return f"{v!r} is not a number"
        if t == "INT" and isinstance(v, float) and not v.is_integer():
            return f"{v!r} is not an integer"
        lo, hi = opts.get("min"), opts.get("max")
        if lo is not None and v < lo:
            return f"{v!r} is below min {lo}"
        if hi is not None and v > hi:
            return f"{v!r} is above max {hi}"
        return None
    if t == "STRING":
        return None if isinstance(v, str) else f"{v!r} is not a string"
    if t == "BOOLEAN":
        return None if isinstance(v, bool) else f"{v!r} is not a boolean"
    if t == "COMBO":
        choices = opts.get("options") or []
        if opts.get("multiselect") and isinstance(v, list):
            bad = [x for x in v if choices and x not in choices]
            return f"{bad!r} not in the choices {choices}" if bad else None
        if is_file_combo(choices):
            return None if isinstance(v, str) else f"{v!r} is not a file name (string)"
        if v not in choices:
            shown = choices if len(choices) <= 12 else choices[:12] + [f"... {len(choices) - 12} more"]
            return f"{v!r} is not one of {shown}"
    return None


def validate_workflow(wf: dict, schemas: Dict[str, dict]) -> List[str]:
    """Problems of a UI-format workflow, one string each ([] when clean): unknown node types,
    links to missing nodes/slots or with mismatched types, inconsistent link bookkeeping,
    required inputs with neither link nor widget value, widget values of the wrong kind, out of
    min/max or not among a combo's choices (file combos: any string), wrong widget value counts."""
    problems: List[str] = []
    if not isinstance(wf, dict) or not isinstance(wf.get("nodes"), list):
        return ["not a UI-format workflow (no 'nodes' list)"]
    if (wf.get("definitions") or {}).get("subgraphs"):
        problems.append("subgraphs are not supported by workflow_format")
    nodes = _nodes(wf)
    if len(nodes) != len(wf["nodes"]):
        problems.append("duplicate node ids")
    links = _links(wf)
    if len(links) != len(wf.get("links") or []):
        problems.append("duplicate link ids")

    def label(n):
        return f"#{n.get('id')} {n.get('type')}"

    for n in wf["nodes"]:
        t = n.get("type")
        if t not in schemas and t not in VIRTUAL_TYPES:
            problems.append(f"{label(n)}: unknown node type {t!r}")

    # links
    for lk in links.values():
        o, tnode = nodes.get(lk.origin_id), nodes.get(lk.target_id)
        where = f"link {lk.id} (#{lk.origin_id}:{lk.origin_slot} -> #{lk.target_id}:{lk.target_slot})"
        if o is None or tnode is None:
            problems.append(f"{where}: points at a missing node")
            continue
        outs = o.get("outputs") or []
        ins = tnode.get("inputs") or []
        if not isinstance(lk.origin_slot, int) or not 0 <= lk.origin_slot < len(outs):
            problems.append(f"{where}: {label(o)} has no output slot {lk.origin_slot}")
            continue
        if not isinstance(lk.target_slot, int) or not 0 <= lk.target_slot < len(ins):
            problems.append(f"{where}: {label(tnode)} has no input slot {lk.target_slot}")
            continue
        if ins[lk.target_slot].get("link") != lk.id:
            problems.append(f"{where}: {label(tnode)} input {ins[lk.target_slot].get('name')!r} does not refer back to it")
        if lk.id not in (outs[lk.origin_slot].get("links") or []):
            problems.append(f"{where}: {label(o)} output {lk.origin_slot} does not list it")
        # schema types at both ends (virtual nodes pass anything through)
        ot = None
        if o.get("type") in schemas:
            st = output_types(schemas[o["type"]])
            if lk.origin_slot >= len(st):
                problems.append(f"{where}: {o['type']} has {len(st)} outputs")
                continue
            ot = st[lk.origin_slot]
        elif o.get("type") == PRIMITIVE:
            ot = outs[lk.origin_slot].get("type")
        it = None
        if tnode.get("type") in schemas:
            iname = ins[lk.target_slot].get("name")
            spec = {name: (ty, opts) for name, _s, ty, opts in input_specs(schemas[tnode["type"]])}
            wname = (ins[lk.target_slot].get("widget") or {}).get("name") or iname
            if wname not in spec:
                problems.append(f"{where}: {tnode['type']} has no input {iname!r}")
                continue
            it = spec[wname][0]
        if ot is not None and it is not None and not valid_connection(ot, it):
            problems.append(f"{where}: type mismatch, {o.get('type')} output {ot} -> {tnode.get('type')} input "
                            f"{ins[lk.target_slot].get('name')!r} {it}")
    for n in wf["nodes"]:
        for i, inp in enumerate(n.get("inputs") or []):
            if inp.get("link") is not None and inp["link"] not in links:
                problems.append(f"{label(n)}: input {inp.get('name')!r} refers to missing link {inp['link']}")
        for s, out in enumerate(n.get("outputs") or []):
            for lid in out.get("links") or []:
                if lid not in links:
                    problems.append(f"{label(n)}: output {s} lists missing link {lid}")

    # inputs and widget values
    for n in wf["nodes"]:
        t = n.get("type")
        if t not in schemas or n.get("mode") in (MODE_NEVER, MODE_BYPASS):
            continue
        schema = schemas[t]
        layout = widget_layout(t, schemas)
        values, given, expected = widget_values(n, layout)
        if isinstance(n.get("widgets_values"), list) and given != expected:
            problems.append(f"{label(n)}: {given} widget values, the front end expects {expected} "
                            f"({[w.name for w in layout if w.saved]})")
        linked = {}
        for i, inp in enumerate(n.get("inputs") or []):
            if inp.get("link") is not None and inp["link"] in links:
                linked[(inp.get("widget") or {}).get("name") or inp.get("name")] = inp["link"]
        widget_names = {w.name for w in layout if w.sent}
        for name, section, ty, opts in input_specs(schema):
            if name in linked:
                continue
            if name in widget_names:
                w = next(w for w in layout if w.name == name)
                if name not in values:
                    if section == "required" and isinstance(n.get("widgets_values"), dict):
                        problems.append(f"{label(n)}: required widget {name!r} has no value")
                    continue
                err = check_widget_value(w, values[name])
                if err:
                    problems.append(f"{label(n)}: widget {name!r}: {err}")
            elif section == "required":
                problems.append(f"{label(n)}: required input {name!r} ({ty}) is not connected")
        for w in layout:
            if w.kind in ("CONTROL",) and w.name in values:
                err = check_widget_value(w, values[w.name])
                if err:
                    problems.append(f"{label(n)}: widget {w.name!r}: {err}")

    # PrimitiveNode values must suit every widget they feed; Reroutes must lead somewhere
    for n in wf["nodes"]:
        if n.get("type") == PRIMITIVE:
            wv = n.get("widgets_values")
            for out in n.get("outputs") or []:
                for lid in out.get("links") or []:
                    lk = links.get(lid)
                    tnode = nodes.get(lk.target_id) if lk else None
                    if tnode is None or tnode.get("type") not in schemas:
                        continue
                    ins = tnode.get("inputs") or []
                    if lk.target_slot is None or lk.target_slot >= len(ins):
                        continue
                    wname = (ins[lk.target_slot].get("widget") or {}).get("name")
                    w = next((w for w in widget_layout(tnode["type"], schemas) if w.name == wname), None)
                    if w is None:
                        problems.append(f"{label(n)}: feeds {label(tnode)} input "
                                        f"{ins[lk.target_slot].get('name')!r}, which is not a widget")
                    elif not isinstance(wv, list) or not wv:
                        problems.append(f"{label(n)}: no value")
                    else:
                        err = check_widget_value(w, wv[0])
                        if err:
                            problems.append(f"{label(n)}: value for {label(tnode)}.{wname}: {err}")
    return problems


# ------------------------------------------------------------------------------------------------
# substitution
# ------------------------------------------------------------------------------------------------

SubValue = Union[Any, Callable[[str, str, Any], Any]]


def substitute(api_prompt: Dict[str, dict], subs: Dict[str, SubValue],
               per_class: Optional[Dict[str, Dict[str, SubValue]]] = None,
               changes: Optional[list] = None) -> Dict[str, dict]:
    """A copy of `api_prompt` with literal inputs replaced (links are never touched).

    subs: {"input": value} for every node, or {"Class.input": value} for one class (like
      frontend_check --substitute); per_class: {"Class": {"input": value}}. A value may be a
      callable f(class_type, input_name, old_value) -> new value. Only inputs that are present
      with a literal (non-link) value are replaced. `changes` (a list) collects "#id.input"."""
    out = copy.deepcopy(api_prompt)
    rules: Dict[Tuple[Optional[str], str], SubValue] = {}
    for k, v in (subs or {}).items():
        cls, _, name = k.rpartition(".")
        rules[(cls or None, name)] = v
    for cls, d in (per_class or {}).items():
        for name, v in d.items():
            rules[(cls, name)] = v
    for nid, node in out.items():
        ct = node.get("class_type")
        for name, old in list(node.get("inputs", {}).items()):
            if isinstance(old, list) and len(old) == 2 and isinstance(old[1], int):
                continue  # a link
            rule = rules.get((ct, name), rules.get((None, name), _MISSING))
            if rule is _MISSING:
                continue
            new = rule(ct, name, old) if callable(rule) else rule
            if new != old:
                node["inputs"][name] = new
                if changes is not None:
                    changes.append(f"#{nid}.{name}")
    return out


_MISSING = object()


def load_workflow(path: str) -> dict:
    return _read_json(path)


def is_api_prompt(data: dict) -> bool:
    return isinstance(data, dict) and "nodes" not in data and all(
        isinstance(v, dict) and "class_type" in v for v in data.values())

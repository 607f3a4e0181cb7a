#!/usr/bin/env python
"""Generate the shipped example workflows (workflows/*.json, ComfyUI front end UI format 0.4).

Each workflow is described compactly below (nodes, their widget values by NAME, links as
`input=other_node.OUTPUT`). Widget order, link types and slot numbers come from the node schemas in
tests/data/schemas/ (ComfyUI 0.3.64's core nodes and this pack's, written by tools/update_schemas.py:
run it first when a node's inputs changed), widget layouts from the front end's rules in
tools/workflow_format.py.

    python tools/build_workflows.py                 # (re)write workflows/*.json
    python tools/build_workflows.py --check         # exit 1 if a file differs from what it would write
    python tools/build_workflows.py --only sd15_lcm_lora_refine

Layout: every node belongs to a group (Student, Oracle, Teacher, Output) or is the note; each workflow
arranges those blocks in rows (Workflow.rows), nodes stacked in their group's columns, compact enough
that the front end's "fit view" of a 1600x1000 window still draws node text (scale >= 0.59), and
extra.ds is that fit view, so the graph opens fitted. Seeds are written "fixed" so a shipped workflow
reproduces; change them in the UI.

Checked by: tools/workflow_format.py (validate_workflow, in tier 1), ../shared/tools/frontend_check (the
real front end loads each file, builds the API prompt, runs it with tiny models).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
from tools import workflow_format as WF  # noqa: E402

OUT_DIR = os.path.join(REPO, "workflows")
FRONTEND_VERSION = "1.27.10"

# front-end-only nodes (never executed, not in /object_info): type -> widget names
FRONTEND_ONLY = {"MarkdownNote": ["text"], "Note": ["text"]}

GROUP_COLORS = {"Student": "#3f789e", "Oracle": "#b58b2a", "Teacher": "#a1309b", "Output": "#8A8"}
GROUP_ORDER = ["Student", "Oracle", "Teacher", "Output"]
COL_GAP, ROW_GAP, GROUP_GAP, GROUP_PAD, GROUP_TITLE = 30, 20, 40, 15, 45
NODE_TITLE = 30  # the title bar is drawn above pos; size excludes it
# front end 1.27: nodes lose their text below scale MinFontSizeForLOD (8) / NODE_TEXT_SIZE (14)
MIN_READABLE_SCALE = 0.59
READABLE_SCALE = 0.65

# Model files, as users download them (name, ComfyUI/models/<folder>, where from)
MODELS = {
    "sd15": ("v1-5-pruned-emaonly.safetensors", "checkpoints",
             "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5"),
    "lcm_lora_sd15": ("lcm-lora-sdv1-5.safetensors", "loras",
                      "https://huggingface.co/latent-consistency/lcm-lora-sdv1-5 (rename pytorch_lora_weights.safetensors)"),
    "sdxl": ("sd_xl_base_1.0.safetensors", "checkpoints",
             "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0"),
    "lcm_lora_sdxl": ("lcm-lora-sdxl.safetensors", "loras",
                      "https://huggingface.co/latent-consistency/lcm-lora-sdxl (rename pytorch_lora_weights.safetensors)"),
    "sdxl_turbo": ("sd_xl_turbo_1.0_fp16.safetensors", "checkpoints", "https://huggingface.co/stabilityai/sdxl-turbo"),
    "sdxl_refiner": ("sd_xl_refiner_1.0.safetensors", "checkpoints",
                     "https://huggingface.co/stabilityai/stable-diffusion-xl-refiner-1.0"),
    "cn_canny": ("control_v11p_sd15_canny.pth", "controlnet", "https://huggingface.co/lllyasviel/ControlNet-v1-1"),
    "cn_seg": ("control_v11p_sd15_seg.pth", "controlnet", "https://huggingface.co/lllyasviel/ControlNet-v1-1"),
    "image_reward": ("ImageReward.pt", "image_reward", "https://huggingface.co/THUDM/ImageReward"),
    "lcm_dreamshaper": ("LCM_Dreamshaper_v7_4k.safetensors", "diffusion_models",
                        "https://huggingface.co/SimianLuo/LCM_Dreamshaper_v7 (the single UNet file; or its "
                        "unet/diffusion_pytorch_model.safetensors under any name)"),
}


def model_table(*keys):
    """The files to download, as a markdown list (tables do not fit a narrow note)."""
    rows = []
    for k in keys:
        name, folder, src = MODELS[k]
        rows.append(f"- `{name}` -> `ComfyUI/models/{folder}/`  \n  from {src}")
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------
# schemas
# ----------------------------------------------------------------------------------------------
class Schema:
    """One node type's inputs in front-end order (sockets, then widgets) and its widget layout,
    by the front end's rules as tools/workflow_format.py implements them."""

    def __init__(self, type_, schemas):
        self.type = type_
        specs = WF.input_specs(schemas[type_])
        self.specs = {name: (t, opts) for name, _section, t, opts in specs}
        self.optional = {name for name, section, _t, _o in specs if section == "optional"}
        self.layout = WF.widget_layout(type_, schemas)
        self.widgets = [w.name for w in self.layout if w.sent and w.name in self.specs]
        self.sockets = [name for name in self.specs if name not in self.widgets]
        info = schemas[type_]
        self.outputs = WF.output_types(info)
        self.output_names = list(info.get("output_name") or self.outputs)

    def input_type(self, name):
        return self.specs[name][0]

    def opts(self, name):
        return self.specs[name][1]

    def widgets_values(self, values):
        """widgets_values for {widget: value} (defaults for the rest), each value checked;
        front-end-only widgets get the value a fresh node has (control "fixed", upload "image")."""
        out = []
        for w in self.layout:
            if not w.saved:
                continue
            if w.kind == "CONTROL":
                out.append("fixed")
            elif w.kind == "UPLOAD":
                out.append("image")
            elif w.sent:
                v = values.get(w.name, WF.widget_default(w))
                problem = WF.check_widget_value(w, v) if v is not None else "needs a value"
                if problem:
                    raise ValueError(f"{self.type}.{w.name}: {problem}")
                out.append(v)
            else:
                raise ValueError(f"{self.type}: front-end widget {w.name!r} ({w.kind}) is not supported here")
        return out


# ----------------------------------------------------------------------------------------------
# graph description
# ----------------------------------------------------------------------------------------------
class Out:
    def __init__(self, node, slot):
        self.node, self.slot = node, slot


class Node:
    def __init__(self, wf, type_, group, col, title, size, values, links):
        self.wf, self.type, self.group, self.col, self.title = wf, type_, group, col, title
        self.size_override, self.values, self.links = size, values, links
        self.id = None

    def __getattr__(self, name):  # node.MODEL / node.latent -> output reference
        if name.startswith("_") or name in ("wf", "type"):
            raise AttributeError(name)
        schema = self.wf.schema(self.type)
        for names in (schema.output_names, schema.outputs):
            if name in names:
                return Out(self, names.index(name))
        raise AttributeError(f"{self.type} has no output {name!r} ({schema.output_names})")

    def __getitem__(self, slot):
        return Out(self, slot)


class Workflow:
    def __init__(self, schemas, name):
        self.schemas, self.name, self.nodes, self.notes = schemas, name, [], []
        self.rows = None  # [[block, ...], ...]: blocks are group titles or "note"

    def schema(self, type_):
        if type_ not in self.schemas:
            raise KeyError(f"unknown node type {type_!r}")
        return Schema(type_, self.schemas)

    def add(self, type_, group=None, col=0, title=None, size=None, **kw):
        values = {k: v for k, v in kw.items() if not isinstance(v, Out)}
        links = {k: v for k, v in kw.items() if isinstance(v, Out)}
        node = Node(self, type_, group, col, title, size, values, links)
        self.nodes.append(node)
        return node

    def note(self, text, size=(420, 600), title="Read me"):
        n = Node(self, "MarkdownNote", None, 0, title, size, {"text": text}, {})
        self.notes.append(n)
        return n

    # --- serialisation -----------------------------------------------------------------------
    def _estimate_size(self, node, schema):
        """Roughly what the front end's computeSize gives (20 px a slot row, 24 a widget)."""
        if node.size_override:
            return list(node.size_override)
        h = max(len(schema.sockets), len(schema.outputs)) * 20 + 14
        h += 24 * sum(1 for w in schema.layout if w.saved)
        for w in schema.widgets:
            if schema.opts(w).get("multiline"):
                h += 50
        if node.type == "LoadImage":
            h += 180  # the image preview
        if node.type == "PreviewAny":
            h = 110
        if node.type in ("PreviewImage", "SaveImage"):
            return [300, 270]
        return [300, h]

    def build(self):
        all_nodes = self.notes + self.nodes
        for i, n in enumerate(all_nodes, 1):
            n.id = i
        links, node_json = [], {}
        # outputs' link lists
        out_links = {}
        for n in self.nodes:
            schema = self.schema(n.type)
            for inp, ref in n.links.items():
                if inp not in schema.specs:
                    raise KeyError(f"{self.name}: {n.type} has no input {inp!r}")
                src_schema = self.schema(ref.node.type)
                ltype = src_schema.outputs[ref.slot]
                want = schema.input_type(inp)
                if want not in ("*", ltype) and not (want == "COMBO"):
                    raise TypeError(f"{self.name}: {ref.node.type}[{ref.slot}] ({ltype}) -> {n.type}.{inp} ({want})")
                lid = len(links) + 1
                links.append([lid, ref.node.id, ref.slot, n.id, None, ltype, inp])
                out_links.setdefault((ref.node.id, ref.slot), []).append(lid)
        link_by_target = {(l[3], l[6]): l for l in links}
        order = self._topological_order()
        for n in all_nodes:
            if n.type in FRONTEND_ONLY:
                node_json[n.id] = {
                    "id": n.id, "type": n.type, "pos": [0, 0], "size": list(n.size_override), "flags": {},
                    "order": order[n.id], "mode": 0, "inputs": [], "outputs": [],
                    "title": n.title, "properties": {"Node name for S&R": n.type},
                    "widgets_values": [n.values["text"]], "color": "#432", "bgcolor": "#653",
                }
                continue
            schema = self.schema(n.type)
            unknown = set(n.values) - set(schema.widgets)
            if unknown:
                raise KeyError(f"{self.name}: {n.type} has no widget(s) {sorted(unknown)} (widgets: {schema.widgets})")
            missing = [s for s in schema.sockets if s not in n.links and s not in schema.optional]
            if missing:
                raise KeyError(f"{self.name}: {n.type} required input(s) {missing} not connected")
            inputs = []
            for name in schema.sockets + schema.widgets:
                entry = {"localized_name": name, "name": name, "type": schema.input_type(name)}
                if name in schema.widgets:
                    entry["widget"] = {"name": name}
                if name in schema.optional:
                    entry["shape"] = 7
                link = link_by_target.get((n.id, name))
                entry["link"] = link[0] if link else None
                inputs.append(entry)
                if schema.opts(name).get("image_upload"):  # the front end's upload button
                    inputs.append({"localized_name": "choose file to upload", "name": "upload",
                                   "type": "IMAGEUPLOAD", "widget": {"name": "upload"}, "link": None})
            for slot, l in enumerate(inputs):
                link = link_by_target.get((n.id, l["name"]))
                if link:
                    link[4] = slot
            values = schema.widgets_values(n.values)
            outputs = []
            for slot, (t, nm) in enumerate(zip(schema.outputs, schema.output_names)):
                ls = out_links.get((n.id, slot), [])
                outputs.append({"localized_name": nm, "name": nm, "type": t, "links": ls, "slot_index": slot})
            js = {"id": n.id, "type": n.type, "pos": [0, 0], "size": self._estimate_size(n, schema), "flags": {},
                  "order": order[n.id], "mode": 0, "inputs": inputs, "outputs": outputs,
                  "properties": {"Node name for S&R": n.type}, "widgets_values": values}
            if n.title:
                js["title"] = n.title
            node_json[n.id] = js
        groups = self._layout(node_json)
        data = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-student-teacher/workflows/{self.name}")),
            "revision": 0,
            "last_node_id": len(all_nodes),
            "last_link_id": len(links),
            "nodes": [node_json[n.id] for n in all_nodes],
            "links": [l[:6] for l in links],
            "groups": groups,
            "config": {},
            "extra": {"ds": {"scale": 0.6, "offset": [0, 0]}, "frontendVersion": FRONTEND_VERSION},
            "version": 0.4,
        }
        ds, (bw, bh) = self.fit_view(data)
        if ds["scale"] < MIN_READABLE_SCALE:  # too big to read whole: open readable on its top left instead
            print(f"note: {self.name}: {bw:.0f}x{bh:.0f} fits a 1600x1000 window only at scale {ds['scale']} (the "
                  f"front end draws no text below {MIN_READABLE_SCALE}); it opens at {READABLE_SCALE} on its top left",
                  file=sys.stderr)
            ds = self.top_left_view(data)
        data["extra"]["ds"] = ds
        return data

    def _topological_order(self):
        deps = {n.id: {ref.node.id for ref in n.links.values()} for n in self.nodes}
        order, done = {}, set()
        for n in self.notes:
            order[n.id] = len(order)
        while len(done) < len(deps):
            ready = sorted(i for i, d in deps.items() if i not in done and d <= done)
            if not ready:
                raise ValueError(f"{self.name}: cycle in the graph")
            for i in ready:
                order[i] = len(order)
                done.add(i)
        return order

    def _block(self, name, node_json):
        """Place a group's (or the notes') nodes at the origin; returns (members, width, height)."""
        members = self.notes if name == "note" else [n for n in self.nodes if n.group == name]
        top = 0 if name == "note" else GROUP_TITLE
        x, height = GROUP_PAD if name != "note" else 0, 0
        for c in sorted({n.col for n in members}):
            y = top + NODE_TITLE
            col_nodes = [n for n in members if n.col == c]
            for n in col_nodes:
                node_json[n.id]["pos"] = [x, y]
                y += node_json[n.id]["size"][1] + ROW_GAP + NODE_TITLE
            height = max(height, y - ROW_GAP - NODE_TITLE)
            x += max(node_json[n.id]["size"][0] for n in col_nodes) + COL_GAP
        pad = 0 if name == "note" else GROUP_PAD
        return members, x - COL_GAP + pad, height + pad

    def _layout(self, node_json):
        """self.rows: rows top to bottom; a row is cells left to right; a cell is a block (a group
        title, or "note") or a list of blocks stacked top to bottom."""
        for n in self.nodes:
            if n.group not in GROUP_ORDER:
                raise ValueError(f"{self.name}: {n.type} has no group")
        rows = self.rows or [["note"] + [g for g in GROUP_ORDER]]
        placed = [b for row in rows for cell in row for b in ([cell] if isinstance(cell, str) else cell)]
        for g in {n.group for n in self.nodes} | ({"note"} if self.notes else set()):
            if g not in placed:
                raise ValueError(f"{self.name}: block {g!r} missing from rows {rows}")
        groups, y0 = [], 0
        for row in rows:
            x0, row_h = 0, 0
            for cell in row:
                y, cell_w = y0, 0
                for name in ([cell] if isinstance(cell, str) else cell):
                    members, w, h = self._block(name, node_json)
                    if not members:
                        continue
                    for n in members:
                        node_json[n.id]["pos"] = [node_json[n.id]["pos"][0] + x0, node_json[n.id]["pos"][1] + y]
                    if name != "note":
                        groups.append({"id": len(groups) + 1, "title": name, "bounding": [x0, y, w, h],
                                       "color": GROUP_COLORS[name], "font_size": 24, "flags": {}})
                    y += h + GROUP_GAP
                    cell_w = max(cell_w, w)
                x0 += cell_w + GROUP_GAP
                row_h = max(row_h, y - GROUP_GAP - y0)
            y0 += row_h + GROUP_GAP
        return groups

    def top_left_view(self, data, margin=20):
        rects = [g["bounding"] for g in data["groups"]]
        rects += [[n["pos"][0], n["pos"][1] - NODE_TITLE] for n in data["nodes"]]
        x1, y1 = min(r[0] for r in rects), min(r[1] for r in rects)
        offset = [-x1 + margin / READABLE_SCALE, -y1 + margin / READABLE_SCALE]
        return {"scale": READABLE_SCALE, "offset": [round(offset[0], 2), round(offset[1], 2)]}

    def fit_view(self, data, canvas=(1536, 922), zoom=0.75, pad=10):
        """extra.ds as the front end's "fit view" sets it (LGraphCanvas.fitViewToSelectionAnimated ->
        DragAndScale: scale = zoom * min(canvas / bounds)) for the 1536x922 canvas of a 1600x1000
        window, so the graph opens fitted and the fit-view screenshot matches."""
        rects = [g["bounding"] for g in data["groups"]]
        rects += [[n["pos"][0], n["pos"][1] - NODE_TITLE, n["size"][0], n["size"][1] + NODE_TITLE] for n in data["nodes"]]
        x1 = min(r[0] for r in rects) - pad  # createBounds pads by 10
        y1 = min(r[1] for r in rects) - pad
        bw = max(r[0] + r[2] for r in rects) - x1 + pad
        bh = max(r[1] + r[3] for r in rects) - y1 + pad
        scale = min(zoom * canvas[0] / max(bw, 300), zoom * canvas[1] / max(bh, 300), 10.0)
        offset = [-x1 - bw / 2 + canvas[0] / scale / 2, -y1 - bh / 2 + canvas[1] / scale / 2]
        return {"scale": round(scale, 4), "offset": [round(offset[0], 2), round(offset[1], 2)]}, (bw, bh)


# ----------------------------------------------------------------------------------------------
# the workflows
# ----------------------------------------------------------------------------------------------
PROMPT_T2I = "a photograph of an astronaut riding a horse in a jungle, detailed, sharp focus"
NEGATIVE = ""
TEACHER_CFG = 8.0  # the paper's code: teacher_guidance=8.0
NOTE_SIZE = (700, 460)
ROWS = [["Student", "Oracle"], ["note", "Teacher", "Output"]]
SD15_NOTE_SCHEDULER = (
    "`scheduler` is **normal** on purpose: the rollback and the editing strength are fractions of the "
    "teacher's timestep axis (like diffusers' img2img `strength`, which the paper's code uses). With "
    "*karras* the same 0.5 would start the teacher at a much lower noise level, because Karras sigmas "
    "crowd the low-noise end.")
ORACLE_NOTE = (
    "**ImageReward** (`ImageReward.pt`) goes in `ComfyUI/models/image_reward/`. It scores every student "
    "sample against the prompt; the Oracle Gate shows each sample with its score (green: kept, red: sent "
    "to the teacher).")
CALIBRATE_NOTE = (
    "**No published calibration for this student.** The gate starts in `threshold_mode` **tau** with "
    "tau = {tau}: samples scoring below it go to the teacher. For the paper's percentile rule, run "
    "`calibrate_student.json` once with the same student settings (steps, cfg, size), then set "
    "`threshold_mode` = **percentile**, `calibration` = your new file and `k` (preset to {k}: "
    "about {k}% of samples go to the teacher).")


def prompt_node(wf, text=PROMPT_T2I):
    return wf.add("PrimitiveStringMultiline", "Student", 0, title="Prompt (CLIP + oracle)",
                  value=text)


def own_weights(wf, model):
    """Separate Student Weights after the LoRA: the student and the teacher share one checkpoint, and
    without it every queue re-patches the LoRA into the shared UNet (bench/bench_pipeline.py)."""
    return wf.add("StudentTeacherSeparateStudentWeights", "Student", 0, title="Student's own weights (no re-patch)",
                  model=model).student


def sd15_student(wf, lora=True, separate=True):
    """The SD1.5 checkpoint and the student made from it (the LCM-LoRA on its own weights, unless
    `separate` is False: a graph without the teacher gains nothing from the copy)."""
    ckpt = wf.add("CheckpointLoaderSimple", "Student", 0, title="SD1.5 (teacher; student base)",
                  ckpt_name=MODELS["sd15"][0])
    model = ckpt.MODEL
    if lora:
        lora_node = wf.add("LoraLoaderModelOnly", "Student", 0, title="LCM-LoRA (student)", model=ckpt.MODEL,
                           lora_name=MODELS["lcm_lora_sd15"][0], strength_model=1.0)
        model = own_weights(wf, lora_node.MODEL) if separate else lora_node.MODEL
    return ckpt, model


def oracle_nodes(wf, latent, vae, prompt, mode, tau, k, calibration, teacher_steps, student_steps=0, **more):
    oracle = wf.add("StudentTeacherLoadImageRewardOracle", "Oracle", 0, oracle_file=MODELS["image_reward"][0],
                    device="auto", dtype="auto", preprocess="auto", batch_size=8)
    gate = wf.add("StudentTeacherOracleGate", "Oracle", 1, latent=latent, vae=vae, oracle=oracle.oracle,
                  prompt=prompt, threshold_mode=mode, tau=tau, k=k, calibration=calibration, budget=10.0,
                  student_steps=student_steps, teacher_steps=teacher_steps, **more)
    return oracle, gate


def outputs(wf, teacher, gate, prefix):
    wf.add("SaveImage", "Output", 0, images=teacher.images, filename_prefix=f"StudentTeacher/{prefix}")
    wf.add("PreviewAny", "Output", 0, title="Teacher report", source=teacher.report)
    wf.add("PreviewAny", "Oracle", 0, title="Gate report (scores)", source=gate.report)


def wf_sd15_t2i(schemas, strategy):
    name = f"sd15_lcm_lora_{strategy}"
    wf = Workflow(schemas, name)
    wf.rows = ROWS
    refine = strategy == "refine"
    teacher_steps = 10 if refine else 20
    tau, k = 0.0, 50
    wf.note(f"""# SD1.5 + LCM-LoRA student, SD1.5 teacher ({strategy})

The **student** (SD1.5 + LCM-LoRA, 5 steps, cfg 1.0) samples a batch of 4. The **oracle**
(ImageReward) scores each sample; samples under the threshold go to the **teacher** (the same SD1.5
checkpoint without the LoRA), which {"**refines** them: rolls them back part of the way to noise (rollback 0.5) and runs 10 DPM++ 2M steps" if refine else "**regenerates** them from the same empty latent and the SAME seed (the shared `seed` primitive) in 20 DPM++ 2M steps"}.
Kept samples pass through unchanged; if every sample is kept the teacher never loads.

## Files
{model_table("sd15", "lcm_lora_sd15", "image_reward")}

## Knobs that matter
- Gate: {CALIBRATE_NOTE.format(tau=tau, k=k)}
- Teacher `steps` R and `rollback`: average cost per sample = 5 + (k/100) x R steps.
- {SD15_NOTE_SCHEDULER}
- The prompt lives in the **Prompt** node: CLIP and the oracle must see the same text.
""", size=NOTE_SIZE)
    prompt = prompt_node(wf)
    ckpt, student_model = sd15_student(wf)
    pos = wf.add("CLIPTextEncode", "Student", 1, title="Positive", clip=ckpt.CLIP, text=prompt.STRING)
    neg = wf.add("CLIPTextEncode", "Student", 1, title="Negative (teacher only at cfg 1)", clip=ckpt.CLIP,
                 text=NEGATIVE)
    empty = wf.add("EmptyLatentImage", "Student", 1, width=512, height=512, batch_size=4)
    if refine:
        seed = 0
    else:
        seed = wf.add("PrimitiveInt", "Student", 2, title="seed (student AND teacher)",
                      value=0).INT
    student = wf.add("StudentTeacherConsistencySampler", "Student", 2, model=student_model, positive=pos.CONDITIONING,
                     negative=neg.CONDITIONING, latent_image=empty.LATENT, seed=seed, steps=5, cfg=1.0,
                     schedule="lcm", denoise=1.0)
    _, gate = oracle_nodes(wf, student.latent, ckpt.VAE, prompt.STRING, "tau", tau, k, "none", teacher_steps)
    extra = {} if refine else {"source_latent": empty.LATENT, "source_denoise": 1.0}
    teacher = wf.add("StudentTeacherImprove", "Teacher", 0, model=ckpt.MODEL, positive=pos.CONDITIONING,
                     negative=neg.CONDITIONING, latent=student.latent, gate=gate.gate, vae=ckpt.VAE,
                     strategy=strategy, rollback_mode="strength", rollback=0.5, steps=teacher_steps,
                     sampler_name="dpmpp_2m", scheduler="normal", cfg=TEACHER_CFG, seed=seed, **extra)
    outputs(wf, teacher, gate, name)
    return wf


def wf_sdxl_lcm_refine(schemas):
    name = "sdxl_lcm_refine"
    wf = Workflow(schemas, name)
    wf.rows = ROWS
    wf.note(f"""# LCM-SDXL student, SDXL-Base teacher (refine)

The paper's main LCM-SDXL setup (Table 5): the **student** is SDXL-Base + LCM-LoRA-SDXL, 4 steps,
cfg 1.0, 1024x1024. The **oracle** (ImageReward) keeps samples scoring at least tau = the **70th
percentile** of the published LCM-SDXL calibration (`lcm_sdxl_4steps_paper.json`, shipped with the
pack); the rest are **refined** by SDXL-Base: rollback 0.85, 12 UniPC steps.

## Files
{model_table("sdxl", "lcm_lora_sdxl", "image_reward")}

## Knobs that matter
- `k`: the share of samples sent to the teacher. Average cost = 4 + (k/100) x 12 steps
  (k = 50 gives 10). `threshold_mode` **budget** picks k from an average-steps budget.
- The published percentiles come from the paper's LCM-SDXL (the full `lcm-sdxl` UNet, 4 steps). The
  LCM-LoRA student scores a little differently; for exact shares recalibrate with
  `calibrate_student.json` (SDXL checkpoint + `lcm-lora-sdxl`, 1024x1024, 4 steps).
- `rollback` 0.85 on the **normal** scheduler = the paper's img2img strength 0.85.
""", size=NOTE_SIZE)
    prompt = prompt_node(wf)
    ckpt = wf.add("CheckpointLoaderSimple", "Student", 0, title="SDXL-Base (teacher; student base)",
                  ckpt_name=MODELS["sdxl"][0])
    lora = wf.add("LoraLoaderModelOnly", "Student", 0, title="LCM-LoRA-SDXL (student)", model=ckpt.MODEL,
                  lora_name=MODELS["lcm_lora_sdxl"][0], strength_model=1.0)
    student_model = own_weights(wf, lora.MODEL)
    pos = wf.add("CLIPTextEncode", "Student", 1, title="Positive", clip=ckpt.CLIP, text=prompt.STRING)
    neg = wf.add("CLIPTextEncode", "Student", 1, title="Negative (teacher only at cfg 1)", clip=ckpt.CLIP,
                 text=NEGATIVE)
    empty = wf.add("EmptyLatentImage", "Student", 1, width=1024, height=1024, batch_size=4)
    student = wf.add("StudentTeacherConsistencySampler", "Student", 2, model=student_model, positive=pos.CONDITIONING,
                     negative=neg.CONDITIONING, latent_image=empty.LATENT, seed=0, steps=4, cfg=1.0,
                     schedule="lcm", denoise=1.0)
    _, gate = oracle_nodes(wf, student.latent, ckpt.VAE, prompt.STRING, "percentile", 0.0, 70,
                           "lcm_sdxl_4steps_paper.json", 12)
    teacher = wf.add("StudentTeacherImprove", "Teacher", 0, model=ckpt.MODEL, positive=pos.CONDITIONING,
                     negative=neg.CONDITIONING, latent=student.latent, gate=gate.gate, vae=ckpt.VAE,
                     strategy="refine", rollback_mode="strength", rollback=0.85, steps=12,
                     sampler_name="uni_pc", scheduler="normal", cfg=TEACHER_CFG, seed=0)
    outputs(wf, teacher, gate, name)
    return wf


def wf_sdxl_turbo_refiner(schemas):
    name = "sdxl_turbo_refiner"
    wf = Workflow(schemas, name)
    wf.rows = [["Student", "Oracle"], ["note", "Teacher", "Output"]]
    wf.note(f"""# SDXL-Turbo student, SDXL-Refiner teacher (refine)

The paper's SDXL-Turbo setup (Table 5): the **student** SDXL-Turbo samples in 2 steps (cfg 1.0,
`schedule` turbo, 512x512). The **oracle** keeps samples scoring at least the **50th percentile** of
the published SDXL-Turbo calibration (`sdxl_turbo_2steps_paper.json`, shipped with the pack). The
rest are **refined** by SDXL-Refiner: rollback 0.4, 4 UniPC steps (average cost 2 + 0.5 x 4 = 4 steps).

The refiner has its own text encoder, so it gets its **own conditioning** (CLIPTextEncodeSDXLRefiner,
aesthetic score 6 / 2.5) from the same Prompt node. Both models share the SDXL latent space and VAE.

## Files
{model_table("sdxl_turbo", "sdxl_refiner", "image_reward")}

## Knobs that matter
- `k` and the teacher `steps`: average cost = 2 + (k/100) x 4.
- The paper recommends the refiner for small rollbacks (0.1-0.4) and SDXL-Base for larger ones.
- The refiner's `width`/`height` (512) should match the image size.
""", size=(440, 500))
    prompt = prompt_node(wf)
    turbo = wf.add("CheckpointLoaderSimple", "Student", 0, title="SDXL-Turbo (student)",
                   ckpt_name=MODELS["sdxl_turbo"][0])
    pos = wf.add("CLIPTextEncode", "Student", 1, title="Positive", clip=turbo.CLIP, text=prompt.STRING)
    neg = wf.add("CLIPTextEncode", "Student", 1, title="Negative (unused at cfg 1)", clip=turbo.CLIP,
                 text=NEGATIVE)
    empty = wf.add("EmptyLatentImage", "Student", 1, width=512, height=512, batch_size=4)
    student = wf.add("StudentTeacherConsistencySampler", "Student", 2, model=turbo.MODEL, positive=pos.CONDITIONING,
                     negative=neg.CONDITIONING, latent_image=empty.LATENT, seed=0, steps=2, cfg=1.0,
                     schedule="turbo", denoise=1.0)
    _, gate = oracle_nodes(wf, student.latent, turbo.VAE, prompt.STRING, "percentile", 0.0, 50,
                           "sdxl_turbo_2steps_paper.json", 4)
    refiner = wf.add("CheckpointLoaderSimple", "Teacher", 0, title="SDXL-Refiner (teacher)",
                     ckpt_name=MODELS["sdxl_refiner"][0])
    rpos = wf.add("CLIPTextEncodeSDXLRefiner", "Teacher", 0, title="Refiner positive", clip=refiner.CLIP,
                  text=prompt.STRING, ascore=6.0, width=512, height=512)
    rneg = wf.add("CLIPTextEncodeSDXLRefiner", "Teacher", 1, title="Refiner negative", clip=refiner.CLIP,
                  text=NEGATIVE, ascore=2.5, width=512, height=512)
    teacher = wf.add("StudentTeacherImprove", "Teacher", 2, model=refiner.MODEL, positive=rpos.CONDITIONING,
                     negative=rneg.CONDITIONING, latent=student.latent, gate=gate.gate, vae=turbo.VAE,
                     strategy="refine", rollback_mode="strength", rollback=0.4, steps=4,
                     sampler_name="uni_pc", scheduler="normal", cfg=TEACHER_CFG, seed=0)
    outputs(wf, teacher, gate, name)
    return wf


def wf_sd15_edit(schemas):
    name = "sd15_edit_sdedit"
    wf = Workflow(schemas, name)
    wf.rows = [["Student", "note"], ["Oracle", "Teacher", "Output"]]
    tau, k = 0.0, 50
    wf.note(f"""# Text-guided editing (SDEdit): student edits, teacher regenerates the rejected ones

`LoadImage` -> VAE encode -> 4 copies -> the **student** (SD1.5 + LCM-LoRA, 5 steps) edits them at
strength (`denoise`) 0.6 towards the prompt. The **oracle** scores each edit; rejected edits are
**regenerated** by the **teacher** (SD1.5) from the SAME source latent, the SAME seed (shared `seed`
primitive) and the same strength (`source_denoise` 0.6) - the paper uses regeneration for editing.

## Files
{model_table("sd15", "lcm_lora_sd15", "image_reward")}
Put your photo in `ComfyUI/input/` (or upload it in the Load Image node).

## Knobs that matter
- Edit strength: the student's `denoise` and the teacher's `source_denoise` must be equal.
- Gate: {CALIBRATE_NOTE.format(tau=tau, k=k)}
- {SD15_NOTE_SCHEDULER}
""", size=(470, 500))
    prompt = prompt_node(wf, "a watercolor painting, soft pastel colors, paper texture")
    ckpt, student_model = sd15_student(wf)
    image = wf.add("LoadImage", "Student", 1, title="Source image", image="example.png")
    pos = wf.add("CLIPTextEncode", "Student", 2, title="Positive", clip=ckpt.CLIP, text=prompt.STRING)
    neg = wf.add("CLIPTextEncode", "Student", 2, title="Negative (teacher only at cfg 1)", clip=ckpt.CLIP,
                 text=NEGATIVE)
    enc = wf.add("VAEEncode", "Student", 1, pixels=image.IMAGE, vae=ckpt.VAE)
    rep = wf.add("RepeatLatentBatch", "Student", 2, title="4 edits of the same image", samples=enc.LATENT, amount=4)
    seed = wf.add("PrimitiveInt", "Student", 3, title="seed (student AND teacher)",
                  value=0).INT
    student = wf.add("StudentTeacherConsistencySampler", "Student", 3, model=student_model, positive=pos.CONDITIONING,
                     negative=neg.CONDITIONING, latent_image=rep.LATENT, seed=seed, steps=5, cfg=1.0,
                     schedule="lcm", denoise=0.6)
    _, gate = oracle_nodes(wf, student.latent, ckpt.VAE, prompt.STRING, "tau", tau, k, "none", 20)
    teacher = wf.add("StudentTeacherImprove", "Teacher", 0, model=ckpt.MODEL, positive=pos.CONDITIONING,
                     negative=neg.CONDITIONING, latent=student.latent, gate=gate.gate, vae=ckpt.VAE,
                     strategy="regenerate", rollback_mode="strength", rollback=0.5, steps=20,
                     sampler_name="dpmpp_2m", scheduler="normal", cfg=TEACHER_CFG, seed=seed,
                     source_latent=enc.LATENT, source_denoise=0.6)
    outputs(wf, teacher, gate, name)
    return wf


def wf_sd15_controlnet(schemas, kind):
    name = f"sd15_controlnet_{kind}"
    wf = Workflow(schemas, name)
    wf.rows = [["Student"], ["note", "Oracle", "Teacher", "Output"]]
    tau, k = 0.0, 50
    cn = MODELS["cn_canny" if kind == "canny" else "cn_seg"]
    hint = ("`LoadImage` -> `Canny` edge map" if kind == "canny"
            else "`LoadImage` of a **segmentation map** (ADE20K colours, e.g. from a segmentation preprocessor) used directly")
    wf.note(f"""# ControlNet ({kind}): LCM-LoRA student, SD1.5 teacher (refine)

{hint} -> `Apply ControlNet` on the prompt conditioning, **shared by student and teacher** (same
SD1.5 architecture). The **student** (SD1.5 + LCM-LoRA, 5 steps, cfg 1.0) samples 4 images; the
**oracle** scores them; rejected samples are **refined** by SD1.5: rollback 0.5, 10 UniPC steps, the
paper's ControlNet setting (Appendix D.6, k = 50).

## Files
{model_table("sd15", "lcm_lora_sd15", "cn_canny" if kind == "canny" else "cn_seg", "image_reward")}
Put your {"photo" if kind == "canny" else "segmentation map"} in `ComfyUI/input/` (or upload it in the Load Image node).

## Knobs that matter
- Gate: {CALIBRATE_NOTE.format(tau=tau, k=k)} (The Calibrate node samples without ControlNet; its
  text-to-image percentiles are only an approximation here.)
- ControlNet `strength` applies to both models.
- {SD15_NOTE_SCHEDULER}
""", size=(440, 500))
    prompt = prompt_node(wf, "a cozy living room with a large window, warm evening light"
                         if kind == "seg" else "a futuristic house on a hill, golden hour, detailed")
    ckpt, student_model = sd15_student(wf)
    image = wf.add("LoadImage", "Student", 1, title="Hint source" if kind == "canny" else "Segmentation map",
                   image="example.png")
    pos = wf.add("CLIPTextEncode", "Student", 2, title="Positive", clip=ckpt.CLIP, text=prompt.STRING)
    neg = wf.add("CLIPTextEncode", "Student", 2, title="Negative (teacher only at cfg 1)", clip=ckpt.CLIP,
                 text=NEGATIVE)
    cnl = wf.add("ControlNetLoader", "Student", 2, control_net_name=cn[0])
    hint_image = image.IMAGE
    if kind == "canny":
        hint_image = wf.add("Canny", "Student", 1, image=image.IMAGE, low_threshold=0.4, high_threshold=0.8).IMAGE
    apply = wf.add("ControlNetApplyAdvanced", "Student", 3, title="Apply ControlNet (student and teacher)",
                   positive=pos.CONDITIONING, negative=neg.CONDITIONING, control_net=cnl.CONTROL_NET,
                   image=hint_image, strength=1.0, start_percent=0.0, end_percent=1.0)
    empty = wf.add("EmptyLatentImage", "Student", 3, width=512, height=512, batch_size=4)
    student = wf.add("StudentTeacherConsistencySampler", "Student", 4, model=student_model, positive=apply.positive,
                     negative=apply.negative, latent_image=empty.LATENT, seed=0, steps=5, cfg=1.0,
                     schedule="lcm", denoise=1.0)
    _, gate = oracle_nodes(wf, student.latent, ckpt.VAE, prompt.STRING, "tau", tau, k, "none", 10)
    teacher = wf.add("StudentTeacherImprove", "Teacher", 0, model=ckpt.MODEL, positive=apply.positive,
                     negative=apply.negative, latent=student.latent, gate=gate.gate, vae=ckpt.VAE,
                     strategy="refine", rollback_mode="strength", rollback=0.5, steps=10,
                     sampler_name="uni_pc", scheduler="normal", cfg=TEACHER_CFG, seed=0)
    outputs(wf, teacher, gate, name)
    return wf


def wf_calibrate(schemas):
    name = "calibrate_student"
    wf = Workflow(schemas, name)
    wf.rows = [["note", ["Student", "Output"], "Oracle"]]
    wf.note(f"""# Calibrate the oracle threshold for your student

Generates one student sample per prompt of `calibration_prompts.txt` (shipped with the pack; put your
own lists in `ComfyUI/models/image_reward/prompts/`), scores them with ImageReward and saves the 10th
... 90th score percentiles to `ComfyUI/models/image_reward/calibration/<filename>.json` - the format
of the paper's `IR_percentiles_*.json`. Press **Refresh** (R) afterwards: the file appears in the
Oracle Gate's `calibration` list; set `threshold_mode` = percentile.

Calibrate with **exactly** the student settings the gate will see (checkpoint + LoRA, `steps`, `cfg`,
`schedule`, width/height); the gate warns when they differ. The paper uses 500+ held-out prompts;
64 give a rough tau, use `max_prompts` to go faster.

## Files
{model_table("sd15", "lcm_lora_sd15", "image_reward")}
""", size=(560, 440))
    ckpt, student_model = sd15_student(wf, separate=False)
    oracle = wf.add("StudentTeacherLoadImageRewardOracle", "Oracle", 0, oracle_file=MODELS["image_reward"][0],
                    device="auto", dtype="auto", preprocess="auto", batch_size=8)
    cal = wf.add("StudentTeacherCalibrateThreshold", "Oracle", 1, model=student_model, clip=ckpt.CLIP, vae=ckpt.VAE,
                 oracle=oracle.oracle, prompts="", prompts_file="calibration_prompts.txt", max_prompts=0,
                 negative_prompt="", width=512, height=512, steps=5, cfg=1.0, schedule="lcm", seed=0,
                 batch_size=4, filename="lcm_lora_sd15_5steps")
    wf.add("PreviewImage", "Output", 0, title="Score histogram", images=cal.histogram)
    wf.add("PreviewAny", "Output", 0, title="Percentiles", source=cal.summary)
    return wf


def wf_adaptive(schemas):
    name = "sd15_adaptive_all_in_one"
    wf = Workflow(schemas, name)
    wf.rows = [[["Student", "note"], "Oracle", "Teacher", "Output"]]
    tau, k = 0.0, 50
    wf.note(f"""# All in one node: Adaptive Student-Teacher Sampler

The same pipeline as `sd15_lcm_lora_refine.json` in one node: student (SD1.5 + LCM-LoRA, 5 steps,
cfg 1.0) -> ImageReward gate -> teacher refine (SD1.5, rollback 0.5, 10 DPM++ 2M steps) for the
rejected samples. Use the separate nodes to see or change each stage.

## Files
{model_table("sd15", "lcm_lora_sd15", "image_reward")}

## Knobs that matter
- {CALIBRATE_NOTE.format(tau=tau, k=k)}
- `strategy` regenerate re-runs the teacher from the empty latent with the same seed.
""", size=(660, 440))
    prompt = prompt_node(wf)
    ckpt, student_model = sd15_student(wf)
    pos = wf.add("CLIPTextEncode", "Student", 1, title="Positive", clip=ckpt.CLIP, text=prompt.STRING)
    neg = wf.add("CLIPTextEncode", "Student", 1, title="Negative (teacher only at cfg 1)", clip=ckpt.CLIP,
                 text=NEGATIVE)
    empty = wf.add("EmptyLatentImage", "Student", 1, width=512, height=512, batch_size=4)
    oracle = wf.add("StudentTeacherLoadImageRewardOracle", "Oracle", 0, oracle_file=MODELS["image_reward"][0],
                    device="auto", dtype="auto", preprocess="auto", batch_size=8)
    ada = wf.add("StudentTeacherAdaptiveSampler", "Teacher", 0, student=student_model, teacher=ckpt.MODEL,
                 positive=pos.CONDITIONING, negative=neg.CONDITIONING, latent_image=empty.LATENT, vae=ckpt.VAE,
                 oracle=oracle.oracle, prompt=prompt.STRING, seed=0, student_steps=5, student_cfg=1.0,
                 schedule="lcm", threshold_mode="tau", tau=tau, k=k, calibration="none", budget=10.0,
                 strategy="refine", rollback_mode="strength", rollback=0.5, teacher_steps=10,
                 sampler_name="dpmpp_2m", scheduler="normal", teacher_cfg=TEACHER_CFG)
    wf.add("SaveImage", "Output", 0, images=ada.images, filename_prefix=f"StudentTeacher/{name}")
    wf.add("PreviewAny", "Output", 0, title="Report", source=ada.report)
    return wf


def wf_lcm_dreamshaper_w_sweep(schemas):
    name = "sd15_lcm_dreamshaper_w_sweep"
    wf = Workflow(schemas, name)
    wf.rows = ROWS
    tau, k, steps = 0.0, 50, 10
    wf.note(f"""# Guidance-embedded student: LCM-Dreamshaper-v7, a sweep of w in one queue

**LCM-Dreamshaper-v7** was distilled with the guidance scale w as an input (guided distillation): one
student covers a range of w in 4 steps at cfg 1 (one model pass per step). ComfyUI's own loaders drop
its w layer; **Load Guidance-Embedded Student** keeps it. The student samples a batch of 4 with
`w` = **3, 5, 7, 9** (one w per sample): low w is more diverse, high w follows the prompt harder. The
**oracle** scores each sample (the gate report shows its w); samples under tau are **refined** by the
teacher (SD1.5 here; Dreamshaper v7, the model LCM-Dreamshaper was distilled from, fits even better):
rollback 0.5, {steps} DPM++ 2M steps.

## Files
{model_table("lcm_dreamshaper", "sd15", "image_reward")}
(`v1-5-pruned-emaonly` also gives the CLIP text encoder and the VAE the student uses.)

## Knobs that matter
- `w` on the student: one value for all samples, or a list cycled over the batch. w follows diffusers'
  convention (w - 1 is embedded); the original LCM code's w 8 is diffusers' 9 (`w_convention`).
- Gate: {CALIBRATE_NOTE.format(tau=tau, k=k)} Calibrate at the w you gate with: a calibration made at
  another w is flagged in the gate report.
- {SD15_NOTE_SCHEDULER}
""", size=NOTE_SIZE)
    prompt = prompt_node(wf)
    ckpt = wf.add("CheckpointLoaderSimple", "Student", 0, title="SD1.5 (teacher, CLIP, VAE)",
                  ckpt_name=MODELS["sd15"][0])
    student_model = wf.add("StudentTeacherLoadGuidedStudent", "Student", 0, unet_name=MODELS["lcm_dreamshaper"][0],
                           w=8.0, w_convention="diffusers")
    pos = wf.add("CLIPTextEncode", "Student", 1, title="Positive", clip=ckpt.CLIP, text=prompt.STRING)
    neg = wf.add("CLIPTextEncode", "Student", 1, title="Negative (teacher only at cfg 1)", clip=ckpt.CLIP,
                 text=NEGATIVE)
    empty = wf.add("EmptyLatentImage", "Student", 1, width=512, height=512, batch_size=4)
    student = wf.add("StudentTeacherConsistencySampler", "Student", 2, model=student_model.model,
                     positive=pos.CONDITIONING, negative=neg.CONDITIONING, latent_image=empty.LATENT, seed=0, steps=4,
                     cfg=1.0, schedule="lcm", denoise=1.0, w="3, 5, 7, 9")
    _, gate = oracle_nodes(wf, student.latent, ckpt.VAE, prompt.STRING, "tau", tau, k, "none", steps)
    teacher = wf.add("StudentTeacherImprove", "Teacher", 0, model=ckpt.MODEL, positive=pos.CONDITIONING,
                     negative=neg.CONDITIONING, latent=student.latent, gate=gate.gate, vae=ckpt.VAE, strategy="refine",
                     rollback_mode="strength", rollback=0.5, steps=steps, sampler_name="dpmpp_2m",
                     scheduler="normal", cfg=TEACHER_CFG, seed=0)
    outputs(wf, teacher, gate, name)
    return wf


PROMPT_LIST = [
    "a photograph of an astronaut riding a horse in a jungle, detailed, sharp focus",
    "a red fox in fresh snow, morning light, wildlife photography",
    "a bowl of ramen on a wooden table, steam rising, food photography",
    "an old lighthouse on a cliff during a storm, dramatic sky",
    "a watercolor painting of a quiet canal in Venice",
    "a cozy reading nook with a cat asleep on a pile of books",
    "a futuristic city at night with neon signs and rain, cinematic",
    "a portrait of an elderly fisherman, weathered face, natural light",
]


def prompt_list_node(wf, clip, prompts, col=1):
    return wf.add("StudentTeacherEncodePrompts", "Student", col, title="Prompt list (one per line)", clip=clip,
                  prompts="\n".join(prompts), prompts_file="none", max_prompts=0)


def wf_prompt_list(schemas):
    name = "sd15_prompt_list_batch"
    wf = Workflow(schemas, name)
    wf.rows = ROWS
    tau, k, steps = 0.0, 50, 10
    wf.note(f"""# Eight prompts in one batch: each sample scored against its own prompt

**Encode Prompt List** turns one prompt per line into one CONDITIONING with a row per prompt; its
`count` sets the Empty Latent Image's batch size, so the **student** (SD1.5 + LCM-LoRA, 5 steps) draws
one sample per prompt in one batch. The prompt texts travel with the samples: the **Oracle Gate**
(its `prompt` left empty) scores sample i against prompt i, and the **teacher** (SD1.5) refines the
samples under tau with their own prompts: rollback 0.5, {steps} DPM++ 2M steps. Each sample equals
its prompt sampled alone with the same seed and batch index.

## Files
{model_table("sd15", "lcm_lora_sd15", "image_reward")}

## Knobs that matter
- The prompt list: edit the lines, or pick a file in `prompts_file` (the pack's `prompts/` folder or
  `ComfyUI/models/image_reward/prompts/`). A prompt in the gate's `prompt` overrides every sample's.
- Gate: {CALIBRATE_NOTE.format(tau=tau, k=k)}
- {SD15_NOTE_SCHEDULER}
""", size=NOTE_SIZE)
    _, _, gate, teacher = sd15_prompt_list_refine(wf, PROMPT_LIST, None, tau, k, steps)
    outputs(wf, teacher, gate, name)
    return wf


def sd15_prompt_list_refine(wf, prompts, batch_size, tau, k, steps):
    """SD1.5 + LCM-LoRA on a prompt list (batch_size None: one sample per prompt) -> tau gate -> the
    SD1.5 teacher refining from the gate's latent. -> (checkpoint, oracle loader, gate, teacher)."""
    ckpt, student_model = sd15_student(wf)
    encoded = prompt_list_node(wf, ckpt.CLIP, prompts)
    neg = wf.add("CLIPTextEncode", "Student", 1, title="Negative (teacher only at cfg 1)", clip=ckpt.CLIP,
                 text=NEGATIVE)
    empty = wf.add("EmptyLatentImage", "Student", 2, width=512, height=512, batch_size=batch_size or encoded.count)
    student = wf.add("StudentTeacherConsistencySampler", "Student", 2, model=student_model,
                     positive=encoded.conditioning, negative=neg.CONDITIONING, latent_image=empty.LATENT, seed=0,
                     steps=5, cfg=1.0, schedule="lcm", denoise=1.0)
    oracle, gate = oracle_nodes(wf, student.latent, ckpt.VAE, "", "tau", tau, k, "none", steps)
    teacher = wf.add("StudentTeacherImprove", "Teacher", 0, model=ckpt.MODEL, positive=encoded.conditioning,
                     negative=neg.CONDITIONING, latent=gate.latent, gate=gate.gate, vae=ckpt.VAE, strategy="refine",
                     rollback_mode="strength", rollback=0.5, steps=steps, sampler_name="dpmpp_2m",
                     scheduler="normal", cfg=TEACHER_CFG, seed=0)
    return ckpt, oracle, gate, teacher


def wf_two_students(schemas):
    name = "sd15_two_students_routed"
    wf = Workflow(schemas, name)
    wf.rows = ROWS
    tau, k, steps = 0.0, 50, 10
    wf.note(f"""# Two students, each serving its share of the prompts

**Route Prompts to Students** sends each prompt of the list to one student (multi-student
distillation: each student owns part of the prompts), by **prompt embedding**: the student whose
prototype prompts are nearest in the checkpoint's own CLIP space. Student 1 is SD1.5 + LCM-LoRA
(photographs), student 2 is the guidance-embedded **LCM-Dreamshaper-v7** (paintings, illustrations).
Each student samples its sub-batch in one call; the samples come back in batch order, each recording
its student. The **gate** looks tau up per sample from its student's calibration (`calibration` for
student 1, `calibration_2` for student 2) and reports acceptance and average steps student by
student; the **teacher** (SD1.5) refines the samples under tau: rollback 0.5, {steps} DPM++ 2M steps.

## Files
{model_table("sd15", "lcm_lora_sd15", "lcm_dreamshaper", "image_reward")}

## Knobs that matter
- `route`: embedding (prototypes), keywords (regular expressions per student), centroids (a file made by
  `tools/split_prompts.py`, for students fine-tuned on K-means groups), best_of (every student samples
  every prompt, the oracle keeps the best: costs both students' steps).
- Gate: starts in tau mode (tau = {tau}). Students score differently, so calibrate each: the Calibrate
  node takes both students (`student_2`) and writes one file per student from the same prompts; then
  set `threshold_mode` percentile, `calibration` and `calibration_2`.
- {SD15_NOTE_SCHEDULER}
""", size=(700, 400))
    ckpt, lora_student = sd15_student(wf)
    guided = wf.add("StudentTeacherLoadGuidedStudent", "Student", 0, unet_name=MODELS["lcm_dreamshaper"][0],
                    w=8.0, w_convention="diffusers")
    prompts = prompt_list_node(wf, ckpt.CLIP, PROMPT_LIST)
    neg = wf.add("CLIPTextEncode", "Student", 1, title="Negative (teacher only at cfg 1)", clip=ckpt.CLIP,
                 text=NEGATIVE)
    empty = wf.add("EmptyLatentImage", "Student", 1, width=512, height=512, batch_size=prompts.count)
    router = wf.add("StudentTeacherRouteStudents", "Student", 2, student_1=lora_student, student_2=guided.model,
                    positive=prompts.conditioning, negative=neg.CONDITIONING, latent_image=empty.LATENT, clip=ckpt.CLIP,
                    seed=0, steps=4, cfg=1.0, schedule="lcm", route="embedding", default_student=1,
                    rules="1: a photograph of a person\n1: wildlife photography\n1: food photography\n"
                          "2: a watercolor painting\n2: digital art of a fantasy city\n2: an illustration")
    _, gate = oracle_nodes(wf, router.latent, ckpt.VAE, "", "tau", tau, k, "none", steps, calibration_2="none")
    teacher = wf.add("StudentTeacherImprove", "Teacher", 0, model=ckpt.MODEL, positive=prompts.conditioning,
                     negative=neg.CONDITIONING, latent=router.latent, gate=gate.gate, vae=ckpt.VAE, strategy="refine",
                     rollback_mode="strength", rollback=0.5, steps=steps, sampler_name="dpmpp_2m",
                     scheduler="normal", cfg=TEACHER_CFG, seed=0)
    wf.add("SaveImage", "Output", 0, images=teacher.images, filename_prefix=f"StudentTeacher/{name}")
    wf.add("PreviewAny", "Output", 1, title="Teacher report", source=teacher.report)  # side by side: a short row
    wf.add("PreviewAny", "Oracle", 0, title="Gate report (scores)", source=gate.report)
    wf.add("PreviewAny", "Oracle", 0, title="Which student served which prompt", source=router.report)
    return wf


def wf_sd15_keep_better(schemas):
    name = "sd15_teacher_keep_better"
    wf = Workflow(schemas, name)
    wf.rows = [["Student", "Oracle"], ["note", "Teacher", "Output"]]
    tau, k, steps = 0.0, 50, 10
    wf.note(f"""# Student -> gate -> teacher -> gate that keeps the better version

As workflow 1 (SD1.5 + LCM-LoRA student, SD1.5 teacher refining the samples under tau), with a
**second Oracle Gate** after the teacher. Chained after an improver, a gate decodes and scores **only
the samples the teacher changed** (the others keep their score and image), and with **keep_better**
it keeps, per sample, whichever version scored higher: the teacher can no longer make a sample worse.
Its report shows each sample's score and, where the student's version won, the teacher's score too;
the average steps cover the whole chain. Save the second gate's images.

## Files
{model_table("sd15", "lcm_lora_sd15", "image_reward")}

## Knobs that matter
- Gate 1: {CALIBRATE_NOTE.format(tau=tau, k=k)}
- Gate 2: its tau only labels the final samples (kept / to teacher) for a further stage; keep_better
  is what matters here.
- {SD15_NOTE_SCHEDULER}
""", size=NOTE_SIZE)
    ckpt, oracle, gate, teacher = sd15_prompt_list_refine(wf, [PROMPT_T2I], 4, tau, k, steps)
    gate2 = wf.add("StudentTeacherOracleGate", "Output", 0, title="Oracle Gate 2 (keep the better)",
                   latent=teacher.latent, vae=ckpt.VAE, oracle=oracle.oracle, prompt="", threshold_mode="tau",
                   tau=tau, k=k, calibration="none", budget=10.0, student_steps=0, teacher_steps=steps,
                   keep_better=True)
    wf.add("PreviewAny", "Oracle", 0, title="Gate report (scores)", source=gate.report)
    wf.add("SaveImage", "Output", 1, images=gate2.images, filename_prefix=f"StudentTeacher/{name}")
    wf.add("PreviewAny", "Output", 1, title="Gate 2 report (whole chain)", source=gate2.report)
    return wf


def wf_sdxl_turbo_cascade(schemas):
    name = "sdxl_turbo_cascade"
    wf = Workflow(schemas, name)
    wf.rows = [["note", "Student", "Oracle"], ["Teacher", "Output"]]  # reading order from the top left
    wf.note(f"""# A cascade: SDXL-Turbo, a cheap retry, then the refiner, then SDXL-Base

Light to heavy, behind one quality bar (the 50th percentile of the published SDXL-Turbo calibration):
1. **SDXL-Turbo** samples 4 images in 2 steps; **gate 1** keeps those above the bar.
2. **Student Retry**: Turbo draws the rejected ones again from fresh noise (2 more steps each);
   **gate 2** scores only the retried samples and keeps the better of each sample's two versions.
3. **SDXL-Refiner** refines what is still under the bar at a small rollback (0.3, 4 steps); **gate 3**
   again scores only what changed and keeps the better version.
4. **SDXL-Base** refines the rest at a large rollback (0.7, 10 steps): the paper's split, the refiner
   for small rollbacks and the base model for large ones.
Each gate's report covers the whole chain: every sample's stages and the average steps spent.

## Files
{model_table("sdxl_turbo", "sdxl_refiner", "sdxl", "image_reward")}

## Knobs that matter
- `k` on the gates: the bar. Each stage only sees what the stages before it could not fix.
- The refiner's `width`/`height` (512) should match the image size.
""", size=(440, 560))
    turbo = wf.add("CheckpointLoaderSimple", "Student", 0, title="SDXL-Turbo (student)",
                   ckpt_name=MODELS["sdxl_turbo"][0])
    prompts = prompt_list_node(wf, turbo.CLIP, [PROMPT_T2I], col=0)
    neg = wf.add("CLIPTextEncode", "Student", 1, title="Negative (unused at cfg 1)", clip=turbo.CLIP, text=NEGATIVE)
    empty = wf.add("EmptyLatentImage", "Student", 1, width=512, height=512, batch_size=4)
    student = wf.add("StudentTeacherConsistencySampler", "Student", 1, model=turbo.MODEL,
                     positive=prompts.conditioning, negative=neg.CONDITIONING, latent_image=empty.LATENT, seed=0,
                     steps=2, cfg=1.0, schedule="turbo", denoise=1.0)
    calibration = dict(threshold_mode="percentile", tau=0.0, k=50, calibration="sdxl_turbo_2steps_paper.json",
                       budget=10.0, student_steps=0)
    oracle = wf.add("StudentTeacherLoadImageRewardOracle", "Oracle", 0, oracle_file=MODELS["image_reward"][0],
                    device="auto", dtype="auto", preprocess="auto", batch_size=8)
    gate1 = wf.add("StudentTeacherOracleGate", "Oracle", 1, title="Gate 1", latent=student.latent, vae=turbo.VAE,
                   oracle=oracle.oracle, prompt="", teacher_steps=2, **calibration)
    retry = wf.add("StudentTeacherStudentRetry", "Student", 2, title="Student Retry (Turbo, fresh noise)",
                   model=turbo.MODEL, positive=prompts.conditioning, negative=neg.CONDITIONING, latent=gate1.latent,
                   gate=gate1.gate, vae=turbo.VAE, seed=0, steps=2, cfg=1.0, schedule="turbo", retry=1)
    gate2 = wf.add("StudentTeacherOracleGate", "Oracle", 2, title="Gate 2 (keep the better)", latent=retry.latent,
                   vae=turbo.VAE, oracle=oracle.oracle, prompt="", teacher_steps=4, keep_better=True, **calibration)
    refiner = wf.add("CheckpointLoaderSimple", "Teacher", 0, title="SDXL-Refiner (small rollback)",
                     ckpt_name=MODELS["sdxl_refiner"][0])
    rpos = wf.add("CLIPTextEncodeSDXLRefiner", "Teacher", 0, title="Refiner positive", clip=refiner.CLIP,
                  text=prompts.prompts, ascore=6.0, width=512, height=512)
    rneg = wf.add("CLIPTextEncodeSDXLRefiner", "Teacher", 0, title="Refiner negative", clip=refiner.CLIP,
                  text=NEGATIVE, ascore=2.5, width=512, height=512)
    refined = wf.add("StudentTeacherImprove", "Teacher", 1, title="Refiner (rollback 0.3)", model=refiner.MODEL,
                     positive=rpos.CONDITIONING, negative=rneg.CONDITIONING, latent=gate2.latent, gate=gate2.gate,
                     vae=turbo.VAE, strategy="refine", rollback_mode="strength", rollback=0.3, steps=4,
                     sampler_name="uni_pc", scheduler="normal", cfg=TEACHER_CFG, seed=0)
    gate3 = wf.add("StudentTeacherOracleGate", "Oracle", 3, title="Gate 3 (keep the better)", latent=refined.latent,
                   vae=turbo.VAE, oracle=oracle.oracle, prompt="", teacher_steps=10, keep_better=True, **calibration)
    base = wf.add("CheckpointLoaderSimple", "Teacher", 2, title="SDXL-Base (large rollback)",
                  ckpt_name=MODELS["sdxl"][0])
    based = wf.add("StudentTeacherImprove", "Teacher", 2, title="SDXL-Base (rollback 0.7)", model=base.MODEL,
                   positive=prompts.conditioning, negative=neg.CONDITIONING, latent=gate3.latent, gate=gate3.gate,
                   vae=turbo.VAE, strategy="refine", rollback_mode="strength", rollback=0.7, steps=10,
                   sampler_name="uni_pc", scheduler="normal", cfg=TEACHER_CFG, seed=0)
    wf.add("SaveImage", "Output", 0, images=based.images, filename_prefix=f"StudentTeacher/{name}")
    wf.add("PreviewAny", "Output", 0, title="Report (whole chain)", source=based.report)
    return wf


BUILDERS = {
    "sd15_lcm_lora_refine": lambda s: wf_sd15_t2i(s, "refine"),
    "sd15_lcm_lora_regenerate": lambda s: wf_sd15_t2i(s, "regenerate"),
    "sdxl_lcm_refine": wf_sdxl_lcm_refine,
    "sdxl_turbo_refiner": wf_sdxl_turbo_refiner,
    "sd15_edit_sdedit": wf_sd15_edit,
    "sd15_controlnet_canny": lambda s: wf_sd15_controlnet(s, "canny"),
    "sd15_controlnet_seg": lambda s: wf_sd15_controlnet(s, "seg"),
    "calibrate_student": wf_calibrate,
    "sd15_adaptive_all_in_one": wf_adaptive,
    "sd15_lcm_dreamshaper_w_sweep": wf_lcm_dreamshaper_w_sweep,
    "sd15_prompt_list_batch": wf_prompt_list,
    "sd15_two_students_routed": wf_two_students,
    "sd15_teacher_keep_better": wf_sd15_keep_better,
    "sdxl_turbo_cascade": wf_sdxl_turbo_cascade,
}


def build_all(schemas, only=None):
    return {name: fn(schemas).build() for name, fn in BUILDERS.items() if not only or name in only}


def dumps(data):
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=OUT_DIR)
    ap.add_argument("--only", nargs="*", choices=sorted(BUILDERS))
    ap.add_argument("--check", action="store_true", help="compare with the files on disk, write nothing")
    a = ap.parse_args(argv)
    built = build_all(WF.load_schemas(), a.only)
    stale = []
    os.makedirs(a.out, exist_ok=True)
    for name, data in built.items():
        path = os.path.join(a.out, name + ".json")
        text = dumps(data)
        if a.check:
            try:
                with open(path, encoding="utf-8") as f:
                    same = f.read() == text
            except FileNotFoundError:
                same = False
            if not same:
                stale.append(path)
            continue
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {os.path.relpath(path, REPO)}: {len(data['nodes'])} nodes, {len(data['links'])} links")
    if stale:
        print("out of date (run tools/build_workflows.py):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

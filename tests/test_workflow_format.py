"""Tier 1: tools/workflow_format.py (UI-format workflow checks and conversion), no ComfyUI needed.

Ground truth: the prompts the REAL front end 1.27.10 built from the workflows in tests/data/workflows/
(app.graphToPrompt, captured with ../shared/tools/frontend_check --no-run --prompts) are in
tests/data/frontend_prompts/; the widget layouts it builds are in tests/data/schemas/frontend_widgets.json."""
import copy
import json
import os

import pytest

from tools import workflow_format as W

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
# the same txt2img graph written by hand in API format (CheckpointLoaderSimple -> KSampler -> SaveImage)
TXT2IMG_API = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"}},
    "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": ["1", 1]}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
    "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                               "latent_image": ["4", 0], "seed": 0, "steps": 4, "cfg": 7.0,
                                               "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
    "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
    "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "frontend_check_api"}},
}


def load(*p):
    with open(os.path.join(*p), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def schemas():
    return W.load_schemas()


@pytest.fixture
def txt2img():
    return load(DATA, "workflows", "core_txt2img.json")


def node(wf, nid):
    return next(n for n in wf["nodes"] if n["id"] == nid)


def has(problems, *words):
    return any(all(w in p for w in words) for p in problems)


# --- schemas and layouts ------------------------------------------------------------------------

def test_schemas_load(schemas):
    core = W.load_schemas(include_pack=False)
    assert len(core) > 300 and "KSampler" in core
    pack = load(W.PACK_OBJECT_INFO)
    assert set(pack) <= set(schemas)
    assert all(k.startswith("StudentTeacher") for k in pack)


def test_schema_rules_reproduce_the_front_end_layouts(schemas):
    """For every core node the front end's recorded widget layout equals the one the rules derive
    from the schema, except nodes whose front-end extensions add widgets of their own."""
    special = {"Load3D", "Load3DAnimation", "LoadImageOutput", "Preview3D", "Preview3DAnimation", "PreviewAny",
               "SaveGLB", "WebcamCapture"}
    recorded = W._frontend_layouts()
    assert recorded, "tests/data/frontend_widgets.json is missing"
    differ = set()
    for t, layout in recorded.items():
        if t not in schemas:
            continue
        rules = [(w.name, w.saved, w.sent) for w in W.widget_layout_from_schema(schemas[t])]
        if rules != [(n, saved, sent) for n, _ft, saved, sent in layout]:
            differ.add(t)
    assert differ == special


def test_widget_layout_examples(schemas):
    names = lambda t: [(w.name, w.saved, w.sent) for w in W.widget_layout(t, schemas)]  # noqa: E731
    assert names("KSampler")[:2] == [("seed", True, True), ("control_after_generate", True, False)]
    assert names("LoadImage") == [("image", True, True), ("upload", True, False)]
    assert names("PreviewAny") == [("preview", False, True)]
    # rules for a schema the front end never saw
    sch = {"input": {"required": {"noise_seed": ["INT", {}], "x": ["FLOAT", {"forceInput": True}],
                                  "pick": [["a", "b"], {"control_after_generate": True}],
                                  "img": [["i.png"], {"image_upload": True}]},
                     "optional": {"flag": ["BOOLEAN", {}], "seed": ["INT", {"control_after_generate": False}]}},
           "input_order": {"required": ["noise_seed", "x", "pick", "img"], "optional": ["flag", "seed"]}}
    assert [(w.name, w.sent) for w in W.widget_layout_from_schema(sch)] == [
        ("noise_seed", True), ("control_after_generate", False), ("pick", True), ("control_after_generate", False),
        ("control_filter_list", False), ("img", True), ("upload", False), ("flag", True), ("seed", True)]


# --- the front end's examples -------------------------------------------------------------------

def test_core_txt2img_is_clean_and_converts_like_the_front_end(schemas, txt2img):
    assert W.validate_workflow(txt2img, schemas) == []
    prompt = W.to_api_prompt(txt2img, schemas)
    assert prompt == load(DATA, "frontend_prompts", "core_txt2img.api.json")


def _canonical(prompt):
    """Node ids renamed by class type + position in a topological order, for comparing graphs."""
    order, seen = [], set()

    def visit(nid):
        if nid in seen:
            return
        seen.add(nid)
        for v in prompt[nid]["inputs"].values():
            if isinstance(v, list) and len(v) == 2:
                visit(v[0])
        order.append(nid)

    for nid in sorted(prompt, key=lambda k: (prompt[k]["class_type"], k)):
        visit(nid)
    rename = {nid: f"{i}:{prompt[nid]['class_type']}" for i, nid in enumerate(order)}
    return {rename[nid]: {k: ([rename[v[0]], v[1]] if isinstance(v, list) and len(v) == 2 else v)
                          for k, v in prompt[nid]["inputs"].items()} for nid in order}


def test_core_txt2img_matches_the_api_example(schemas, txt2img):
    """core_txt2img_api.json is the same graph written by hand in API format: same nodes, links and
    values, except ids, the front end's _meta titles and two strings that differ on purpose."""
    mine = _canonical(W.to_api_prompt(txt2img, schemas, meta=False))
    api = _canonical(TXT2IMG_API)
    assert list(mine) == list(api)
    diffs = {(nid, k): (mine[nid][k], api[nid].get(k)) for nid in mine for k in mine[nid]
             if mine[nid][k] != api[nid].get(k)}
    assert all(set(mine[n]) == set(api[n]) for n in mine)
    assert {k for _n, k in diffs} <= {"text", "filename_prefix"}
    assert {v for v in diffs.values()} == {("a red cube on a table", "a red cube"), ("blurry, watermark", "blurry"),
                                           ("frontend_check", "frontend_check_api")}


def test_missing_node_is_reported(schemas, txt2img):
    wf = copy.deepcopy(txt2img)
    node(wf, 8)["type"] = "NoSuchNodeFrontendCheck"
    problems = W.validate_workflow(wf, schemas)
    assert problems == ["#8 NoSuchNodeFrontendCheck: unknown node type 'NoSuchNodeFrontendCheck'"]
    with pytest.raises(ValueError, match="NoSuchNodeFrontendCheck"):
        W.to_api_prompt(wf, schemas)
    assert W.is_api_prompt(TXT2IMG_API) and not W.is_api_prompt(txt2img)


def test_front_end_features_convert_like_the_front_end(schemas):
    """Reroute, PrimitiveNode (seed), a bypassed LoRA, a muted node, notes, dynamic prompts,
    a widget converted to an input, LoadImage's upload button, control_after_generate."""
    wf = load(DATA, "workflows", "frontend_features.json")
    assert W.validate_workflow(wf, schemas) == []
    prompt = W.to_api_prompt(wf, schemas)
    assert prompt == load(DATA, "frontend_prompts", "frontend_features.api.json")
    assert prompt["9"]["inputs"]["model"] == ["1", 0]          # through the bypassed LoRA and the Reroute
    assert prompt["9"]["inputs"]["seed"] == 1234               # the PrimitiveNode's value
    assert "13" not in prompt and "images" not in prompt["14"]["inputs"]  # muted node and its link


# --- conversion details -------------------------------------------------------------------------

def test_dynamic_prompts():
    assert W.process_dynamic_prompt("a {red|blue} cube // c\nx /* y */z") == "a red cube \nx z"
    assert W.process_dynamic_prompt("a {red|blue} cube", choose=lambda o: o[-1]) == "a blue cube"
    assert W.process_dynamic_prompt(r"\{kept\} {a|{b|c}}", choose=lambda o: o[-1]) == "{kept} c"


def test_widgets_values_dict_and_list_values(schemas, txt2img):
    wf = copy.deepcopy(txt2img)
    node(wf, 3)["widgets_values"] = {"seed": 5, "steps": 2, "cfg": 1.0, "sampler_name": "euler",
                                     "scheduler": "normal", "denoise": 1.0}
    p = W.to_api_prompt(wf, schemas)
    assert p["3"]["inputs"]["seed"] == 5 and p["3"]["inputs"]["steps"] == 2
    assert W.validate_workflow(wf, schemas) == []


def test_substitute(schemas, txt2img):
    p = W.to_api_prompt(txt2img, schemas)
    changes = []
    q = W.substitute(p, {"ckpt_name": "tiny_sd15.safetensors", "KSampler.steps": 2,
                         "text": lambda cls, name, old: old.upper()},
                     per_class={"SaveImage": {"filename_prefix": "x"}, "VAEDecode": {"samples": "not a link"}},
                     changes=changes)
    assert q["4"]["inputs"]["ckpt_name"] == "tiny_sd15.safetensors"
    assert q["3"]["inputs"]["steps"] == 2 and q["6"]["inputs"]["text"] == "A RED CUBE ON A TABLE"
    assert q["9"]["inputs"]["filename_prefix"] == "x"
    assert q["8"]["inputs"]["samples"] == ["3", 0]  # links are never replaced
    assert p["4"]["inputs"]["ckpt_name"] == "v1-5-pruned-emaonly-fp16.safetensors"  # a copy
    assert sorted(changes) == ["#3.steps", "#4.ckpt_name", "#6.text", "#7.text", "#9.filename_prefix"]


# --- broken workflows: one problem kind each ----------------------------------------------------

def broken(txt2img, change):
    wf = copy.deepcopy(txt2img)
    change(wf)
    return wf


CASES = {
    "unknown type": (lambda wf: node(wf, 8).update(type="VAEDecodeX"), ["#8 VAEDecodeX", "unknown node type"]),
    "type mismatch": (lambda wf: wf["links"].__setitem__(0, [1, 4, 2, 3, 0, "VAE"]) or
                      node(wf, 4)["outputs"][0].update(links=[]) or node(wf, 4)["outputs"][2]["links"].append(1),
                      ["type mismatch", "VAE", "'model'"]),
    "missing origin node": (lambda wf: wf["links"].__setitem__(1, [2, 55, 0, 3, 3, "LATENT"]), ["link 2", "missing node"]),
    "missing target node": (lambda wf: wf["links"].__setitem__(8, [9, 8, 0, 99, 0, "IMAGE"]), ["link 9", "missing node"]),
    "missing origin slot": (lambda wf: wf["links"].__setitem__(7, [8, 4, 7, 8, 1, "VAE"]), ["link 8", "no output slot 7"]),
    "missing target slot": (lambda wf: wf["links"].__setitem__(8, [9, 8, 0, 9, 3, "IMAGE"]), ["link 9", "no input slot 3"]),
    "link not referred back": (lambda wf: node(wf, 9)["inputs"][0].update(link=None), ["link 9", "does not refer back"]),
    "dangling input link": (lambda wf: node(wf, 9)["inputs"][0].update(link=77), ["missing link 77"]),
    "required input unconnected": (lambda wf: (wf["links"].pop(0), node(wf, 3)["inputs"][0].update(link=None),
                                               node(wf, 4)["outputs"][0].update(links=[])),
                                   ["#3 KSampler", "required input 'model'", "not connected"]),
    "too few widget values": (lambda wf: node(wf, 3).update(widgets_values=[0, "fixed", 4, 7, "euler", "normal"]),
                              ["#3 KSampler", "6 widget values", "expects 7"]),
    "too many widget values": (lambda wf: node(wf, 5).update(widgets_values=[64, 64, 1, 1]),
                               ["#5 EmptyLatentImage", "4 widget values", "expects 3"]),
    "no control value (old file)": (lambda wf: node(wf, 3).update(widgets_values=[0, 4, 7, "euler", "normal", 1]),
                                    ["#3 KSampler", "6 widget values"]),
    "int below min": (lambda wf: node(wf, 5).update(widgets_values=[8, 64, 1]), ["'width'", "below min 16"]),
    "int above max": (lambda wf: node(wf, 3).update(widgets_values=[0, "fixed", 20000, 7, "euler", "normal", 1]),
                      ["'steps'", "above max 10000"]),
    "float above max": (lambda wf: node(wf, 3).update(widgets_values=[0, "fixed", 4, 7, "euler", "normal", 1.5]),
                        ["'denoise'", "above max 1.0"]),
    "int not integral": (lambda wf: node(wf, 5).update(widgets_values=[64.5, 64, 1]), ["'width'", "not an integer"]),
    "number not a number": (lambda wf: node(wf, 3).update(widgets_values=[0, "fixed", 4, "7", "euler", "normal", 1]),
                            ["'cfg'", "not a number"]),
    "bool is not a number": (lambda wf: node(wf, 5).update(widgets_values=[64, 64, True]), ["'batch_size'", "not a number"]),
    "combo not a choice": (lambda wf: node(wf, 3).update(widgets_values=[0, "fixed", 4, 7, "nope", "normal", 1]),
                           ["'sampler_name'", "'nope' is not one of"]),
    "file combo not a string": (lambda wf: node(wf, 4).update(widgets_values=[5]), ["'ckpt_name'", "not a file name"]),
    "string not a string": (lambda wf: node(wf, 6).update(widgets_values=[5]), ["#6 CLIPTextEncode", "'text'", "not a string"]),
    "bad control value": (lambda wf: node(wf, 3).update(widgets_values=[0, "sometimes", 4, 7, "euler", "normal", 1]),
                          ["'control_after_generate'", "sometimes"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_problem_is_reported(schemas, txt2img, case):
    change, words = CASES[case]
    problems = W.validate_workflow(broken(txt2img, change), schemas)
    assert has(problems, *words), problems


def test_file_combos_accept_any_file_name(schemas, txt2img):
    wf = broken(txt2img, lambda wf: node(wf, 4).update(widgets_values=["my_own_model.safetensors"]))
    assert W.validate_workflow(wf, schemas) == []
    assert W.is_file_combo([]) and W.is_file_combo(["none", "a.json"]) and not W.is_file_combo(["none", "auto"])


def test_primitive_node_values_are_checked(schemas):
    wf = load(DATA, "workflows", "frontend_features.json")
    node(wf, 8)["widgets_values"] = [-1, "fixed"]
    assert has(W.validate_workflow(wf, schemas), "#8 PrimitiveNode", "seed", "below min 0")


def test_not_a_workflow(schemas):
    assert W.validate_workflow({"1": {"class_type": "KSampler", "inputs": {}}}, schemas) != []
    assert W.validate_workflow({"nodes": [], "links": [], "definitions": {"subgraphs": [{"id": "x"}]}}, schemas) == [
        "subgraphs are not supported by workflow_format"]

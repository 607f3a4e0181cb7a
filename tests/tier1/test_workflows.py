"""Tier 1: the shipped workflows and the converter that reads them (tests/support/workflows.py).

Ground truth for the converter: the API prompt the REAL front end 1.27.10 built from
tests/data/workflows/core_txt2img.json (app.graphToPrompt, captured with ../shared/tools/frontend_check
--no-run --prompts), in tests/data/frontend_prompts/. Every shipped workflow fits the node schemas
(ComfyUI 0.3.64's and the pack's snapshot), and no node's widgets were reordered (saved graphs keep
their values)."""
import copy
import os

import pytest

import workflows as W

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
SHIPPED = W.SHIPPED


@pytest.fixture(scope="module")
def schemas():
    return W.load_schemas()


@pytest.fixture
def txt2img():
    return W.load(os.path.join(DATA, "workflows", "core_txt2img.json"))


def node(wf, nid):
    return next(n for n in wf["nodes"] if n["id"] == nid)


def test_the_converter_builds_the_front_ends_prompt(schemas, txt2img):
    assert W.problems(txt2img, schemas) == []
    front_end = W.load(os.path.join(DATA, "frontend_prompts", "core_txt2img.api.json"))
    assert W.to_api(txt2img, schemas) == {k: {"class_type": v["class_type"], "inputs": v["inputs"]}
                                          for k, v in front_end.items()}


def test_the_parity_test_can_fail(schemas, txt2img, monkeypatch):
    """A converter that read KSampler's widgets in another order (steps and cfg swapped) builds another
    prompt than the front end, and the comparison above says so."""
    real = W.saved_widgets

    def swapped(schema):
        names = real(schema)
        if "steps" in names and "cfg" in names:
            i, j = names.index("steps"), names.index("cfg")
            names[i], names[j] = names[j], names[i]
        return names
    monkeypatch.setattr(W, "saved_widgets", swapped)
    front_end = W.load(os.path.join(DATA, "frontend_prompts", "core_txt2img.api.json"))
    ours = W.to_api(txt2img, schemas)["3"]["inputs"]
    assert (ours["steps"], ours["cfg"]) == (7, 4) != (front_end["3"]["inputs"]["steps"], front_end["3"]["inputs"]["cfg"])


@pytest.mark.parametrize("path", SHIPPED, ids=[os.path.basename(p) for p in SHIPPED])
def test_a_shipped_workflow_fits_the_schemas(schemas, path):
    wf = W.load(path)
    assert W.problems(wf, schemas) == []
    prompt = W.to_api(wf, schemas)
    assert prompt and all(n["class_type"].startswith(("StudentTeacher",)) or n["class_type"] in schemas
                          for n in prompt.values())


def test_widgets_only_grow_at_the_end(schemas):
    """A saved graph stores widget values by position: inserting a widget before others would move every
    saved value onto the wrong widget. The rule the schema updater and the tier-2 check apply."""
    pack = {k: v for k, v in schemas.items() if k.startswith("StudentTeacher")}
    assert W.widget_order_problems(pack, pack) == []
    grown = copy.deepcopy(pack)
    gate = grown["StudentTeacherOracleGate"]
    gate["input"]["optional"]["new_last"] = ["BOOLEAN", {"default": False}]
    gate["input_order"]["optional"].append("new_last")
    assert W.widget_order_problems(pack, grown) == []
    gate["input"]["required"]["inserted"] = ["FLOAT", {"default": 0.0}]
    gate["input_order"]["required"].insert(3, "inserted")
    problems = W.widget_order_problems(pack, grown)
    assert len(problems) == 1 and problems[0].startswith("StudentTeacherOracleGate: widgets [")
    del grown["StudentTeacherImprove"]
    assert "StudentTeacherImprove: the node is gone" in "\n".join(W.widget_order_problems(pack, grown))


def test_substitute(schemas, txt2img):
    p = W.to_api(txt2img, schemas)
    q = W.substitute(p, {"ckpt_name": "tiny_sd15.safetensors", "KSampler.steps": 2,
                         "text": lambda cls, name, old: old.upper(), "samples": "not a link"})
    assert q["4"]["inputs"]["ckpt_name"] == "tiny_sd15.safetensors"
    assert q["3"]["inputs"]["steps"] == 2 and q["6"]["inputs"]["text"] == "A RED CUBE ON A TABLE"
    assert q["8"]["inputs"]["samples"] == ["3", 0]  # links are never replaced
    assert p["4"]["inputs"]["ckpt_name"] == "v1-5-pruned-emaonly-fp16.safetensors"  # a copy


def broken(txt2img, change):
    wf = copy.deepcopy(txt2img)
    change(wf)
    return wf


CASES = {
    "unknown type": (lambda wf: node(wf, 8).update(type="VAEDecodeX"), ["#8 VAEDecodeX", "unknown node type"]),
    "type mismatch": (lambda wf: wf["links"].__setitem__(0, [1, 4, 2, 3, 0, "VAE"]),
                      ["type mismatch", "'model'", "VAE"]),
    "missing origin node": (lambda wf: wf["links"].__setitem__(1, [2, 55, 0, 3, 3, "LATENT"]), ["link 2", "missing node"]),
    "missing target node": (lambda wf: wf["links"].__setitem__(8, [9, 8, 0, 99, 0, "IMAGE"]), ["link 9", "missing node"]),
    "missing origin slot": (lambda wf: wf["links"].__setitem__(7, [8, 4, 7, 8, 1, "VAE"]), ["link 8", "no output slot 7"]),
    "missing target slot": (lambda wf: wf["links"].__setitem__(8, [9, 8, 0, 9, 3, "IMAGE"]), ["link 9", "no input slot 3"]),
    "link not referred back": (lambda wf: node(wf, 9)["inputs"][0].update(link=None), ["link 9", "does not refer back"]),
    "dangling input link": (lambda wf: node(wf, 9)["inputs"][0].update(link=77), ["missing link 77"]),
    "required input unconnected": (lambda wf: (wf["links"].pop(0), node(wf, 3)["inputs"][0].update(link=None)),
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
    "bypassed node": (lambda wf: node(wf, 8).update(mode=4), ["#8 VAEDecode", "bypassed"]),
    "dynamic prompt": (lambda wf: node(wf, 6).update(widgets_values=["a {red|blue} cube"]), ["'text'", "dynamic prompt"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_problem_is_reported(schemas, txt2img, case):
    change, words = CASES[case]
    problems = W.problems(broken(txt2img, change), schemas)
    assert any(all(w in p for w in words) for p in problems), problems
    with pytest.raises(ValueError):
        W.to_api(broken(txt2img, change), schemas)


def test_file_combos_accept_any_file_name(schemas, txt2img):
    wf = broken(txt2img, lambda wf: node(wf, 4).update(widgets_values=["my_own_model.safetensors"]))
    assert W.problems(wf, schemas) == []
    assert W.is_file_combo([]) and W.is_file_combo(["none", "a.json"]) and not W.is_file_combo(["none", "auto"])


def test_not_a_workflow(schemas):
    assert W.problems({"1": {"class_type": "KSampler", "inputs": {}}}, schemas) != []
    assert W.problems({"nodes": [], "links": [], "definitions": {"subgraphs": [{"id": "x"}]}}, schemas) != []


def test_schemas_cover_the_pack(schemas):
    """Always runs (also with no workflows): the core and pack schemas load."""
    assert "KSampler" in schemas and len(schemas) > 300
    assert any(k.startswith("StudentTeacher") for k in schemas), "tests/data/schemas/pack.json lists no pack nodes"

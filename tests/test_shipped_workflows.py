"""The shipped workflows (workflows/*.json).

Tier 1: each one validates against the node schemas (core 0.3.64 + the pack's snapshot) with no
problems and converts to an API prompt. Tier 2 (COMFYUI_PATH): each one, converted the way the
front end does and with its model files swapped for the tiny test models, executes in real
ComfyUI."""
import glob
import os

import pytest

from tools import workflow_format as W
from comfyui_harness import run_prompt
from tiny_models import (TINY_CONTROLNET_SD15, TINY_GUIDED_SD15_UNET, TINY_IMAGE_REWARD, TINY_LCM_LORA_SD15,
                         TINY_LCM_LORA_SDXL, TINY_SD15, TINY_SDXL, TINY_SDXL_REFINER)

WORKFLOW_DIR = os.path.join(W.REPO_ROOT, "workflows")
WORKFLOWS = sorted(glob.glob(os.path.join(WORKFLOW_DIR, "*.json")))


def ckpt_for(name: str) -> str:
    """The tiny checkpoint standing in for a real one, by its file name."""
    n = name.lower()
    if "refiner" in n:
        return TINY_SDXL_REFINER
    if "xl" in n or "turbo" in n:
        return TINY_SDXL
    return TINY_SD15


def lora_for(name: str) -> str:
    return TINY_LCM_LORA_SDXL if "xl" in name.lower() else TINY_LCM_LORA_SD15


# Default substitutions for every workflow: {"[Class.]input": value or f(class, input, old)}.
DEFAULT_SUBSTITUTIONS = {
    "ckpt_name": lambda cls, name, old: ckpt_for(old),
    "lora_name": lambda cls, name, old: lora_for(old),
    "control_net_name": TINY_CONTROLNET_SD15,
    "unet_name": TINY_GUIDED_SD15_UNET,
    "oracle_file": TINY_IMAGE_REWARD,
    # small images: the tiny models are about wiring, not quality
    "EmptyLatentImage.width": 64,
    "EmptyLatentImage.height": 64,
}

# Per-workflow additions/overrides (the hook): file name -> {"[Class.]input": value}.
SUBSTITUTIONS = {
    "calibrate_student.json": {"StudentTeacherCalibrateThreshold.max_prompts": 2,
                               "StudentTeacherCalibrateThreshold.width": 64,
                               "StudentTeacherCalibrateThreshold.height": 64},
}


def ids(paths):
    return [os.path.basename(p) for p in paths]


@pytest.fixture(scope="module")
def schemas():
    return W.load_schemas()


def test_schemas_cover_the_pack(schemas):
    """Always runs (also with no workflows): the core and pack schemas load."""
    assert "KSampler" in schemas
    pack = [k for k in schemas if k.startswith("StudentTeacher")]
    assert pack, "tests/data/pack_object_info.json lists no pack nodes"


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_workflow_is_valid(schemas, path):
    wf = W.load_workflow(path)
    assert W.validate_workflow(wf, schemas) == []
    prompt = W.to_api_prompt(wf, schemas)
    assert prompt, "the workflow has no executable nodes"


def tiny_prompt(schemas, path):
    prompt = W.to_api_prompt(W.load_workflow(path), schemas)
    subs = {**DEFAULT_SUBSTITUTIONS, **SUBSTITUTIONS.get(os.path.basename(path), {})}
    return W.substitute(prompt, subs)


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_workflow_runs_in_comfyui(comfy, schemas, path):
    prompt = tiny_prompt(schemas, path)
    for node in prompt.values():  # build the tiny models this workflow uses
        for value in node["inputs"].values():
            if isinstance(value, str) and value.startswith("tiny_") and value.endswith(".safetensors"):
                comfy.tiny(value)
    try:
        run = run_prompt(comfy, prompt, fresh=True)
        outputs = [nid for nid, n in prompt.items()
                   if getattr(comfy.nodes.NODE_CLASS_MAPPINGS[n["class_type"]], "OUTPUT_NODE", False)]
        assert outputs and all(run.ran(nid) for nid in outputs)
        gates = [nid for nid, n in prompt.items() if n["class_type"] in GATED]
        if gates:
            assert_mixed_decisions(comfy, prompt, run, gates)
    finally:
        comfy.free_memory()


GATED = ("StudentTeacherOracleGate", "StudentTeacherAdaptiveSampler")


def split_tau(scores):
    """A tau that keeps the better half of the scores and sends the rest to the teacher."""
    ordered = sorted(scores)
    assert ordered[0] < ordered[-1], f"the tiny oracle gave every sample the same score {ordered[0]}"
    mid = len(ordered) // 2
    return (ordered[mid - 1] + ordered[mid]) / 2


def gate_scores(prompt, run, nid):
    if prompt[nid]["class_type"] == "StudentTeacherOracleGate":
        return run.output(nid, 1).scores.tolist()
    report = run.output(nid, 2)  # the all-in-one node's report: "#i: score +x -> ..."
    return [float(line.split("score")[1].split("->")[0]) for line in report.splitlines() if "score" in line]


def assert_mixed_decisions(comfy, prompt, run, gates):
    """With tau between the scores, at least one sample is kept and one goes to the teacher."""
    for nid in gates:
        prompt[nid]["inputs"].update(threshold_mode="tau", tau=split_tau(gate_scores(prompt, run, nid)))
    rerun = run_prompt(comfy, prompt)
    for nid in gates:
        if prompt[nid]["class_type"] == "StudentTeacherOracleGate":
            kept = rerun.output(nid, 1).accepted.tolist()
        else:
            kept = [line.endswith("kept") for line in rerun.output(nid, 2).splitlines() if "score" in line]
        assert any(kept) and not all(kept), f"gate {nid}: {kept}"


def test_generated_files_are_up_to_date():
    """The workflows and the workflow fixture are what their generators write today."""
    from tools import build_workflows, make_test_workflows
    assert build_workflows.main(["--check"]) == 0, "run python tools/build_workflows.py"
    assert make_test_workflows.main(["--check"]) == 0, "run python tools/make_test_workflows.py"

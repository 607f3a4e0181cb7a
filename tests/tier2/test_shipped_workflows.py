"""Tier 2: every shipped workflow (workflows/*.json), converted the way the front end does and with its
model files swapped for the tiny test models, executes in real ComfyUI; with tau between the scores,
each gate keeps some samples and sends others on. (Tier 1 checks the files: tests/tier1/test_workflows.py.)"""
import os

import pytest

import workflows as W
from comfyui_harness import run_prompt
from tiny_workflows import tiny_files, tiny_prompt

WORKFLOWS = W.SHIPPED


def ids(paths):
    return [os.path.basename(p) for p in paths]


@pytest.fixture(scope="module")
def schemas():
    return W.load_schemas()


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_workflow_runs_in_comfyui(comfy, schemas, path):
    prompt = tiny_prompt(path, schemas)
    for name in tiny_files(prompt):  # build the tiny models this workflow uses
        comfy.tiny(name)
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

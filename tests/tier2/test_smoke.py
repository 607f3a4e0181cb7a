"""Tier 2 smoke tests: the pack loads into real ComfyUI and the tiny models work with core nodes.

Skipped without COMFYUI_PATH (see tests/support/comfyui_harness.py)."""
import sys

import pytest
import torch

from comfyui_harness import PACK_NODE_PREFIX, api_txt2img, capture_logs, run_prompt
from tiny_models import (LORA_TARGETS, TINY_CONTROLNET_SD15, TINY_IMAGE_REWARD, TINY_LCM_LORA_SD15, TINY_SD15,
                         TINY_SDXL, TINY_SDXL_REFINER)

# log lines that mean a tiny model did not load cleanly
BAD_LOG = ("missing", "not loaded", "left over", "could not", "unexpected", "error")


def clean(lines):
    return [line for line in lines if any(b in line.lower() for b in BAD_LOG)]


def test_pack_loads(comfy):
    assert comfy.pack_module is not None
    assert comfy.pack_nodes, "the pack registered no nodes"
    for name, cls in comfy.pack_nodes.items():
        assert name.startswith(PACK_NODE_PREFIX), name
        assert comfy.nodes.NODE_CLASS_MAPPINGS[name] is cls
    assert not [line for line in comfy.pack_load_log if "Traceback" in line or "Cannot import" in line]


def test_pack_registers_image_reward_folder(comfy):
    import os
    paths, exts = comfy.folder_paths.folder_names_and_paths["image_reward"]
    harness_dir = os.path.join(comfy.models_root, "image_reward")
    assert [p for p in paths if p != harness_dir], "the pack did not register an image_reward folder"
    assert ".safetensors" in exts
    comfy.tiny(TINY_IMAGE_REWARD)
    assert TINY_IMAGE_REWARD in comfy.folder_paths.get_filename_list("image_reward")


@pytest.mark.parametrize("ckpt, family", [(TINY_SD15, "SD15"), (TINY_SDXL, "SDXL")])
def test_txt2img(comfy, ckpt, family):
    comfy.tiny(ckpt)
    with capture_logs() as lines:
        run = run_prompt(comfy, api_txt2img(ckpt, steps=2), fresh=True)
    assert clean(lines) == []
    assert type(run.output("1", 0).model.model_config).__name__ == family
    assert sorted(run.executed) == ["1", "2", "3", "4", "5", "6", "7"] and run.cached == []
    image = run.output("6")
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()
    assert run.output("5")["samples"].shape == (1, 4, 8, 8)
    files = run.images("7")
    assert len(files) == 1
    # a second prompt with another seed re-runs only the sampler and what follows it
    again = run_prompt(comfy, api_txt2img(ckpt, steps=2, seed=1))
    assert set(again.executed) == {"5", "6", "7"} and set(again.cached) == {"1", "2", "3", "4"}
    assert not again.ran("1")
    if ckpt == TINY_SDXL:
        comfy.free_memory()


def test_sdxl_refiner_conditions(comfy):
    ckpt = comfy.tiny(TINY_SDXL_REFINER)
    g = api_txt2img(ckpt, steps=2)
    for nid, text in (("2", "a red cube"), ("3", "blurry")):
        g[nid] = {"class_type": "CLIPTextEncodeSDXLRefiner",
                  "inputs": {"ascore": 6.0 if nid == "2" else 2.5, "width": 64, "height": 64, "text": text,
                             "clip": ["1", 1]}}
    with capture_logs() as lines:
        run = run_prompt(comfy, g, fresh=True)
    assert clean(lines) == []
    assert type(run.output("1", 0).model.model_config).__name__ == "SDXLRefiner"
    cond = run.output("2")
    assert cond[0][0].shape[-1] == 1280 and cond[0][1]["aesthetic_score"] == 6.0
    assert torch.isfinite(run.output("6")).all()
    comfy.free_memory()


def test_controlnet_applies(comfy):
    comfy.tiny(TINY_SD15)
    comfy.tiny(TINY_CONTROLNET_SD15)
    plain = api_txt2img(TINY_SD15, steps=2, seed=3)
    g = dict(plain)
    g["8"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": TINY_CONTROLNET_SD15}}
    g["9"] = {"class_type": "LoadImage", "inputs": {"image": "example.png"}}
    g["10"] = {"class_type": "ControlNetApplyAdvanced",
               "inputs": {"positive": ["2", 0], "negative": ["3", 0], "control_net": ["8", 0],
                          "image": ["9", 0], "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0,
                          "vae": ["1", 2]}}
    g["5"] = {**plain["5"], "inputs": {**plain["5"]["inputs"], "positive": ["10", 0], "negative": ["10", 1]}}
    with capture_logs() as lines:
        run = run_prompt(comfy, g, fresh=True)
        base = run_prompt(comfy, plain)
    assert clean(lines) == []
    assert run.output("10")[0][1].get("control") is not None
    assert not torch.allclose(run.output("5")["samples"], base.output("5")["samples"])


def test_lora_applies_without_unloaded_keys(comfy):
    comfy.tiny(TINY_SD15)
    comfy.tiny(TINY_LCM_LORA_SD15)
    plain = api_txt2img(TINY_SD15, steps=2, seed=4)
    g = dict(plain)
    g["8"] = {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1],
                                                     "lora_name": TINY_LCM_LORA_SD15,
                                                     "strength_model": 1.0, "strength_clip": 1.0}}
    g["5"] = {**plain["5"], "inputs": {**plain["5"]["inputs"], "model": ["8", 0]}}
    with capture_logs() as lines:
        run = run_prompt(comfy, g, fresh=True)
        base = run_prompt(comfy, plain)
    assert [line for line in lines if "lora key not loaded" in line] == []
    assert clean(lines) == []
    patched = run.output("8", 0)
    assert len(patched.patches) == len(LORA_TARGETS)
    assert not torch.allclose(run.output("5")["samples"], base.output("5")["samples"])


class _Boom:
    """A throw-away output node that fails at execution time."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 10})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "run"
    CATEGORY = "testing"

    def run(self, value):
        raise ValueError(f"boom {value}")


def test_failures_are_reported(comfy):
    comfy.tiny(TINY_SD15)
    bad = api_txt2img("no_such_model.safetensors")
    with pytest.raises(AssertionError, match="ckpt_name"):
        run_prompt(comfy, bad)
    run = run_prompt(comfy, bad, check=False)
    assert not run.success and "1" in run.node_errors

    comfy.nodes.NODE_CLASS_MAPPINGS["_StudentTeacherTestBoom"] = _Boom
    try:
        g = api_txt2img(TINY_SD15)
        g["8"] = {"class_type": "_StudentTeacherTestBoom", "inputs": {"value": 3}}
        with pytest.raises(AssertionError, match="boom 3"):
            run_prompt(comfy, {"8": g["8"]})
        run = run_prompt(comfy, {"8": g["8"]}, check=False)
        assert not run.success and "ValueError" in run.error and run.executed == ["8"]
    finally:
        del comfy.nodes.NODE_CLASS_MAPPINGS["_StudentTeacherTestBoom"]


def test_unused_nodes_never_execute(comfy):
    comfy.tiny(TINY_SD15)
    g = api_txt2img(TINY_SD15)
    g["8"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}}
    run = run_prompt(comfy, g, fresh=True)
    assert run.ran("5") and not run.ran("8")
    assert run.values.get("8") is None


def test_the_nodes_and_the_tests_share_one_copy_of_the_pack(comfy):
    from student_teacher.schedulers.record import SampleRecord
    loaded = sys.modules[f"{comfy.pack_module.__name__}.schedulers.record"]
    assert loaded.SampleRecord is SampleRecord

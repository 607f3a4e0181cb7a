"""Tier 2: a student on its own weights (Separate Student Weights) samples exactly as the student that
shares the teacher's checkpoint, and queue after queue ComfyUI patches no weight again, where the shared
wiring re-patches the LoRA on every queue."""
import collections

import pytest
import torch

from comfyui_harness import run_prompt
from tiny_models import TINY_IMAGE_REWARD, TINY_LCM_LORA_SD15, TINY_SD15

P = "StudentTeacher"


@pytest.fixture(scope="module")
def host(comfy):
    for name in (TINY_SD15, TINY_LCM_LORA_SD15, TINY_IMAGE_REWARD):
        comfy.tiny(name)
    return comfy


@pytest.fixture
def patched_weights(monkeypatch):
    """Counts the weights ComfyUI patches (ModelPatcher.patch_weight_to_device calls)."""
    import comfy.model_patcher
    counts = collections.Counter()
    original = comfy.model_patcher.ModelPatcher.patch_weight_to_device

    def counting(self, key, *args, **kwargs):
        counts["patched"] += 1
        return original(self, key, *args, **kwargs)
    monkeypatch.setattr(comfy.model_patcher.ModelPatcher, "patch_weight_to_device", counting)
    return counts


def lora_wiring(seed, separate):
    """The shipped SD1.5 + LCM-LoRA wiring: student = checkpoint + LoRA, teacher = the checkpoint's model."""
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD15}},
        "lora": {"class_type": "LoraLoaderModelOnly",
                 "inputs": {"model": ["ckpt", 0], "lora_name": TINY_LCM_LORA_SD15, "strength_model": 1.0}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a red cube"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "student": {"class_type": P + "ConsistencySampler",
                    "inputs": {"model": ["lora", 0], "positive": ["pos", 0], "negative": ["neg", 0],
                               "latent_image": ["empty", 0], "seed": seed, "steps": 2, "cfg": 1.0, "schedule": "lcm",
                               "denoise": 1.0}},
        "oracle": {"class_type": P + "LoadImageRewardOracle",
                   "inputs": {"oracle_file": TINY_IMAGE_REWARD, "device": "cpu", "dtype": "fp32", "preprocess": "auto",
                              "batch_size": 8}},
        "gate": {"class_type": P + "OracleGate",
                 "inputs": {"latent": ["student", 0], "vae": ["ckpt", 2], "oracle": ["oracle", 0], "prompt": "a red cube",
                            "threshold_mode": "tau", "tau": 100.0, "k": 50, "calibration": "none", "budget": 10.0,
                            "student_steps": 0, "teacher_steps": 2}},
        "teacher": {"class_type": P + "Improve",
                    "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0],
                               "latent": ["gate", 3], "gate": ["gate", 1], "strategy": "refine",
                               "rollback_mode": "strength", "rollback": 0.5, "steps": 2, "sampler_name": "euler",
                               "scheduler": "normal", "cfg": 2.0, "seed": seed, "vae": ["ckpt", 2]}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["teacher", 1]}},
    }
    if separate:
        g["own"] = {"class_type": P + "SeparateStudentWeights", "inputs": {"model": ["lora", 0]}}
        g["student"]["inputs"]["model"] = ["own", 0]
    return g


def test_a_student_on_its_own_weights_is_not_repatched_per_queue(host, patched_weights):
    shared, separate = [], []
    for seed in (1, 2, 3):  # a new seed each queue, as control_after_generate does
        patched_weights.clear()
        run = run_prompt(host, lora_wiring(seed, separate=False), fresh=seed == 1)
        shared.append((patched_weights["patched"], run.output("student")["samples"], run.output("teacher")["samples"]))
    for seed in (1, 2, 3):
        patched_weights.clear()
        run = run_prompt(host, lora_wiring(seed, separate=True))
        separate.append((patched_weights["patched"], run.output("student")["samples"], run.output("teacher")["samples"]))
    assert shared[1][0] > 0 and shared[2][0] == shared[1][0]  # the shared wiring re-patches every queue
    assert separate[1][0] == separate[2][0] == 0              # its own weights: patched once, in queue 1
    for (_, s_shared, t_shared), (_, s_own, t_own) in zip(shared, separate):
        assert torch.equal(s_shared, s_own) and torch.equal(t_shared, t_own)


def test_without_room_for_a_copy_the_student_keeps_sharing_and_says_so(host, monkeypatch):
    import sys
    from comfyui_harness import capture_logs
    weights = next(m for name, m in list(sys.modules.items()) if name.endswith("nodes.weights") and
                   hasattr(m, "with_own_weights"))
    seen = []
    monkeypatch.setattr(weights, "room_for_copy", lambda size, free: seen.append((size, free)) or False)
    with capture_logs() as lines:
        run = run_prompt(host, lora_wiring(7, separate=True), fresh=True)
    assert run.output("own") is run.output("lora")  # the student that was given, no copy
    assert seen and seen[0][0] > 0 and seen[0][1] > 0  # asked with the UNet's size and the free memory
    assert any("Separate Student Weights" in line and "re-patched" in line for line in lines)

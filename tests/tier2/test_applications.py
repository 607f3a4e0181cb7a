"""Tier 2: calibration, text-guided editing (regenerate) and ControlNet (refine) in real ComfyUI."""
import json
import os
import sys

import pytest
import torch

from comfyui_harness import run_prompt
from tiny_models import TINY_CONTROLNET_SD15, TINY_IMAGE_REWARD, TINY_SD15

P = "StudentTeacher"
PROMPTS = ["a red cube", "a blue sphere on grass", "a cat", "a city at night", "a bowl of soup",
           "an old car", "a mountain lake", "a green apple"]


@pytest.fixture(scope="module")
def host(comfy, tmp_path_factory):
    comfy.tiny(TINY_SD15)
    comfy.tiny(TINY_IMAGE_REWARD)
    comfy.tiny(TINY_CONTROLNET_SD15)
    # calibrations land in a temp folder, not in the ComfyUI checkout
    cal_dir = str(tmp_path_factory.mktemp("calibration"))
    paths, exts = comfy.folder_paths.folder_names_and_paths["image_reward_calibration"]
    comfy.folder_paths.folder_names_and_paths["image_reward_calibration"] = ([cal_dir] + list(paths), exts)
    comfy.cal_dir = cal_dir
    return comfy


def base_graph():
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD15}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red cube"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "6": {"class_type": P + "LoadImageRewardOracle",
              "inputs": {"oracle_file": TINY_IMAGE_REWARD, "device": "cpu", "dtype": "fp32",
                         "preprocess": "exact", "batch_size": 8}},
    }


def test_calibration_node_writes_file_and_histogram_that_the_gate_reads(host):
    g = base_graph()
    g["20"] = {"class_type": P + "CalibrateThreshold",
               "inputs": {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "oracle": ["6", 0],
                          "prompts": "\n".join(PROMPTS), "prompts_file": "none", "max_prompts": 0,
                          "negative_prompt": "", "width": 64, "height": 64, "steps": 2, "cfg": 1.0,
                          "schedule": "lcm", "seed": 0, "batch_size": 4, "filename": "tier2_cal"}}
    g["21"] = {"class_type": "PreviewImage", "inputs": {"images": ["20", 0]}}
    run = run_prompt(host, g, fresh=True)
    path = os.path.join(host.cal_dir, "tier2_cal.json")
    data = json.load(open(path))
    assert set(data) == {str(k) for k in range(10, 100, 10)} | {"metadata"}
    assert data["metadata"]["steps"] == 2 and data["metadata"]["prompt_count"] == 8
    hist = run.output("20")
    assert hist.ndim == 4 and hist.shape[0] == 1 and hist.shape[-1] == 3
    assert len(run.images("21")) == 1

    # the gate reads it: percentile 50 -> that file's tau
    g = base_graph()
    g["4"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}}
    g["5"] = {"class_type": P + "ConsistencySampler",
              "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
                         "seed": 0, "steps": 3, "cfg": 1.0, "schedule": "lcm", "denoise": 1.0}}
    g["7"] = {"class_type": P + "OracleGate",
              "inputs": {"latent": ["5", 0], "vae": ["1", 2], "oracle": ["6", 0], "prompt": "a red cube",
                         "threshold_mode": "percentile", "tau": 0.0, "k": 50, "calibration": "tier2_cal.json",
                         "budget": 10.0, "student_steps": 0, "teacher_steps": 3}}
    g["8"] = {"class_type": "PreviewAny", "inputs": {"source": ["7", 2]}}
    decision = run_prompt(host, g).output("7", 1)
    assert decision.threshold.tau == pytest.approx(data["50"])
    assert any("calibration used steps = 2" in n for n in decision.notes)  # student ran 3 steps


def editing_graph(image_node, student_seed=0):
    g = base_graph()
    g["30"] = {"class_type": "LoadImage", "inputs": {"image": "example.png"}}
    g["31"] = {"class_type": "ImageInvert", "inputs": {"image": ["30", 0]}}
    g["32"] = {"class_type": "VAEEncode", "inputs": {"pixels": [image_node, 0], "vae": ["1", 2]}}
    g["5"] = {"class_type": P + "ConsistencySampler",
              "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["32", 0],
                         "seed": student_seed, "steps": 2, "cfg": 1.0, "schedule": "lcm", "denoise": 0.6}}
    g["7"] = {"class_type": P + "OracleGate",
              "inputs": {"latent": ["5", 0], "vae": ["1", 2], "oracle": ["6", 0], "prompt": "a red cube",
                         "threshold_mode": "tau", "tau": 10.0, "k": 50, "calibration": "none",
                         "budget": 10.0, "student_steps": 0, "teacher_steps": 3}}
    g["9"] = {"class_type": P + "Improve",
              "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["5", 0],
                         "strategy": "regenerate", "rollback_mode": "strength", "rollback": 0.5, "steps": 3,
                         "sampler_name": "euler", "scheduler": "normal", "cfg": 2.0, "seed": 5, "vae": ["1", 2],
                         "gate": ["7", 1], "source_latent": ["32", 0], "source_denoise": 0.6}}
    g["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["9", 1]}}
    return g


def test_editing_regenerates_from_the_source_image_not_the_student_output(host):
    def run(image_node, student_seed):
        r = run_prompt(host, editing_graph(image_node, student_seed))
        return r.output("5")["samples"], r.output("9")["samples"]

    student_a, teacher_a = run("30", 0)
    student_b, teacher_b = run("30", 123)         # another student output, same source image
    assert not torch.equal(student_a, student_b)
    assert torch.equal(teacher_a, teacher_b)
    _, teacher_c = run("31", 0)                   # another source image
    assert not torch.allclose(teacher_a, teacher_c)


def test_controlnet_hints_follow_their_samples_into_the_teacher(host):
    """Two hints in one batch, only the second sample rejected: the teacher must use hint 2."""
    import nodes
    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(TINY_SD15)[:3]
    cnet = nodes.ControlNetLoader().load_controlnet(TINY_CONTROLNET_SD15)[0]
    pos = nodes.CLIPTextEncode().encode(clip, "a red cube")[0]
    neg = nodes.CLIPTextEncode().encode(clip, "")[0]
    g = torch.Generator().manual_seed(0)
    hints = torch.rand(2, 64, 64, 3, generator=g)

    def control(hint_batch):
        return nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, cnet, hint_batch, 1.0, 0.0, 1.0)

    cpos, cneg = control(hints)
    student = {"samples": torch.randn(2, 4, 8, 8, generator=g), "batch_index": [0, 1]}
    gating = sys.modules[host.pack_module.__name__ + ".schedulers.gating"]
    record = sys.modules[host.pack_module.__name__ + ".schedulers.record"]
    decision = gating.decide(torch.tensor([1.0, -1.0]), gating.Threshold(0.0, None, "test"),
                             record.bare_records([0, 1]))
    improve = host.pack_nodes[P + "Improve"]()
    args = dict(strategy="refine", rollback_mode="strength", rollback=0.5, steps=3, sampler_name="euler",
                scheduler="normal", cfg=1.0, seed=3, vae=vae)
    both = improve.run(model, cpos, cneg, student, gate=decision, **args)["result"][0]["samples"]
    assert torch.equal(both[0], student["samples"][0])

    def alone(hint):
        p, n = control(hint)
        one = {"samples": student["samples"][1:], "batch_index": [1]}
        return improve.run(model, p, n, one, **args)["result"][0]["samples"][0]

    torch.testing.assert_close(both[1], alone(hints[1:]), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(both[1], alone(hints[:1]), rtol=1e-4, atol=1e-4)


def test_calibration_cli_runs_headless(host, tmp_path):
    """tools/calibrate.py boots its own ComfyUI and writes the calibration file."""
    import subprocess
    root = host.models_root
    cal_dir, out_dir = tmp_path / "calibration", tmp_path / "output"
    (tmp_path / "paths.yaml").write_text(
        f"tiny:\n    checkpoints: {root}/checkpoints\n    image_reward: {root}/image_reward\n"
        f"    image_reward_calibration: {cal_dir}\n")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS[:4]) + "\n")
    cli = os.path.join(host.pack_root, "tools", "calibrate.py")
    done = subprocess.run([sys.executable, cli, "--comfyui", host.path, "--cpu",
                           "--extra-model-paths-config", str(tmp_path / "paths.yaml"),
                           "--output-directory", str(out_dir), "--checkpoint", TINY_SD15,
                           "--oracle", TINY_IMAGE_REWARD, "--prompts", str(tmp_path / "prompts.txt"),
                           "--width", "64", "--height", "64", "--steps", "2", "--schedule", "sampler",
                           "--sampler", "euler_ancestral", "--name", "cli_cal"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.load(open(cal_dir / "cli_cal.json"))
    assert data["metadata"]["prompt_count"] == 4 and "50" in data
    assert data["metadata"]["sampler"] == "euler_ancestral" and data["metadata"]["schedule"] == "sampler"
    assert "k=50" in done.stdout and list(out_dir.glob("calibration_cli_cal*.png"))

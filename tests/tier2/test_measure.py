"""Tier 2: Measure Student vs Teacher in real ComfyUI with tiny models: it gives the plot, the report and a
measured calibration; a gated run at the k the measurement picks (same prompts, same seed) ends with the
curve's point; the gate's measured modes read k from the file (CPU)."""
import json

import numpy as np
import pytest

from comfyui_harness import run_prompt
from tiny_models import TINY_IMAGE_REWARD, TINY_PICKSCORE, TINY_SD15

P = "StudentTeacher"
PROMPTS = ["a red cube", "a castle at dusk", "two cats on a sofa", "a bowl of ramen", "a foggy harbour",
           "a yellow bicycle", "an old lighthouse", "a bowl of cherries"]
SEED, S, R, ALONE = 11, 2, 2, 3
TEACHER = {"strategy": "refine", "rollback_mode": "strength", "rollback": 0.6, "sampler_name": "euler",
           "scheduler": "normal", "teacher_cfg": 2.0}


@pytest.fixture(scope="module")
def host(comfy):
    for name in (TINY_SD15, TINY_IMAGE_REWARD, TINY_PICKSCORE):
        comfy.tiny(name)
    comfy.folder_paths.filename_list_cache.clear()
    return comfy


def oracle(file):
    return {"class_type": P + "LoadImageRewardOracle",
            "inputs": {"oracle_file": file, "device": "cpu", "dtype": "fp32", "preprocess": "auto", "batch_size": 4,
                       "kind": "auto"}}


def measure_graph(filename, judge=TINY_PICKSCORE, **more):
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD15}},
        "o": oracle(TINY_IMAGE_REWARD),
        "j": oracle(judge),
        "m": {"class_type": P + "MeasureStudentVsTeacher",
              "inputs": {"student": ["1", 0], "teacher": ["1", 0], "clip": ["1", 1], "vae": ["1", 2],
                         "oracle": ["o", 0], "judge": ["j", 0], "prompts": "\n".join(PROMPTS), "prompts_file": "none",
                         "max_prompts": 0, "negative_prompt": "", "width": 64, "height": 64, "seed": SEED,
                         "student_steps": S, "student_cfg": 1.0, "schedule": "lcm", **TEACHER, "teacher_steps": R,
                         "teacher_alone_steps": ALONE, "tolerance": 5.0, "batch_size": 3, "filename": filename,
                         **more}},
        "v": {"class_type": "PreviewImage", "inputs": {"images": ["m", 0]}},
    }


def gated_run(calibration, threshold_mode, k=50, budget=10.0, tolerance=5.0):
    """The all-in-one node over the same prompts, seed and settings, gated by the measured file."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD15}},
        "o": oracle(TINY_IMAGE_REWARD),
        "p": {"class_type": P + "EncodePrompts",
              "inputs": {"clip": ["1", 1], "prompts": "\n".join(PROMPTS), "prompts_file": "none", "max_prompts": 0}},
        "n": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "e": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": len(PROMPTS)}},
        "a": {"class_type": P + "AdaptiveSampler",
              "inputs": {"student": ["1", 0], "teacher": ["1", 0], "positive": ["p", 0], "negative": ["n", 0],
                         "latent_image": ["e", 0], "vae": ["1", 2], "oracle": ["o", 0], "prompt": "", "seed": SEED,
                         "student_steps": S, "student_cfg": 1.0, "schedule": "lcm", "threshold_mode": threshold_mode,
                         "tau": 0.0, "k": k, "calibration": calibration, "budget": budget,
                         "strategy": TEACHER["strategy"], "rollback_mode": TEACHER["rollback_mode"],
                         "rollback": TEACHER["rollback"], "teacher_steps": R, "sampler_name": TEACHER["sampler_name"],
                         "scheduler": TEACHER["scheduler"], "teacher_cfg": TEACHER["teacher_cfg"],
                         "tolerance": tolerance}},
        "v": {"class_type": "PreviewImage", "inputs": {"images": ["a", 0]}},
    }


@pytest.fixture(scope="module")
def measured(host):
    run = run_prompt(host, measure_graph("t2_measured"), fresh=True)
    path = run.output("m", 1).splitlines()[0].removeprefix("saved ").split(" (")[0]
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    host.folder_paths.filename_list_cache.clear()
    return run, path, data


def test_the_node_gives_plot_report_and_a_measured_calibration(host, measured):
    run, path, data = measured
    plot, report = run.output("m", 0), run.output("m", 1)
    assert plot.shape[0] == 1 and plot.shape[3] == 3 and plot.shape[1] >= 300
    assert "student beats improved by PickScore" in report and "student beats teacher alone by ImageReward" in report
    assert "best k = " in report and "WARNING" not in report
    samples = data["metadata"]["samples"]
    assert samples["prompt_index"] == list(range(len(PROMPTS)))
    assert {"judge_student", "judge_improved", "judge_teacher", "gate_improved", "gate_teacher"} <= set(samples)
    assert data["metadata"]["measurement"]["judge"]["kind"] == "PickScore"
    assert any(i.endswith(".png") for i in run.images("m"))   # the plot's PNG in the output folder
    # the student, improved and teacher-alone samples differ to the judge
    assert samples["judge_student"] != samples["judge_improved"] != samples["judge_teacher"]


def test_the_same_oracle_as_judge_is_said_loudly(host):
    run = run_prompt(host, measure_graph("t2_flattering", judge=TINY_IMAGE_REWARD, teacher_alone_steps=0,
                                         max_prompts=3))
    assert run.output("m", 1).splitlines()[2].startswith("WARNING: the judge IS the gating oracle")


@pytest.mark.parametrize("mode", ["percentile", "cheapest within", "best for budget"])
def test_a_gated_run_at_the_chosen_k_reproduces_the_curve(host, measured, mode):
    from student_teacher.schedulers.measure import best_for_budget, cheapest_within, measurement_of
    measuring, path, data = measured
    curve = measurement_of(data["metadata"], "m").curve()
    budget = S + 0.5 * R
    point = {"percentile": curve[50], "cheapest within": cheapest_within(curve, 5.0),
             "best for budget": best_for_budget(curve, budget)}[mode]
    file = path.rsplit("/", 1)[-1]
    run = run_prompt(host, gated_run(file, mode, k=50, budget=budget))
    judge = measuring.output("j")   # the judge the measurement used
    images = run.output("a", 0)
    judged = judge.score(images, PROMPTS).numpy().astype(np.float64)
    assert float(judged.mean()) == pytest.approx(point.quality, abs=1e-4)
    assert f"k = {point.k}" in run.output("a", 2) or mode == "percentile"


def test_a_flow_student_is_measured_too(host):
    """FLUX.1-schnell student, FLUX.1-dev teacher (16-channel latents, schedule sampler, the teacher alone from
    the student's own noise)."""
    from tiny_models import TINY_CLIP_L, TINY_FLUX_DEV, TINY_FLUX_SCHNELL, TINY_VAE_FLUX
    for name in (TINY_FLUX_SCHNELL, TINY_FLUX_DEV, TINY_VAE_FLUX, TINY_CLIP_L):
        host.tiny(name)
    host.folder_paths.filename_list_cache.clear()
    g = measure_graph("t2_flux_measured", max_prompts=2, schedule="sampler", student_sampler="euler",
                      student_scheduler="simple", sampler_name="euler", scheduler="simple", teacher_cfg=1.0)
    g["s"] = {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_FLUX_SCHNELL, "weight_dtype": "default"}}
    g["t"] = {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_FLUX_DEV, "weight_dtype": "default"}}
    g["c"] = {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": TINY_CLIP_L, "clip_name2": TINY_CLIP_L,
                                                         "type": "sd3"}}
    g["a"] = {"class_type": "VAELoader", "inputs": {"vae_name": TINY_VAE_FLUX}}
    g["m"]["inputs"].update(student=["s", 0], teacher=["t", 0], clip=["c", 0], vae=["a", 0])
    del g["1"]
    run = run_prompt(host, g)
    path = run.output("m", 1).splitlines()[0].removeprefix("saved ").split(" (")[0]
    with open(path, encoding="utf-8") as f:
        samples = json.load(f)["metadata"]["samples"]
    assert len(samples["judge_teacher"]) == 2 and np.isfinite(samples["judge_improved"]).all()
    assert samples["judge_student"] != samples["judge_improved"]

    g["m"]["inputs"]["teacher"] = ["1", 0]   # an SD1.5 teacher for FLUX latents: refused, naming the input
    g["1"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD15}}
    refused = run_prompt(host, g, check=False)
    assert not refused.success and "teacher: the teacher is a SD15 model, the student makes Flux latents" in \
        refused.error

#!/usr/bin/env python
"""Send bad graphs to a REAL ComfyUI server (main.py) running this pack, the way API users meet it.

    python tests/support/http_bad_inputs.py --comfyui /path/to/ComfyUI --models DIR [--python PY]

DIR holds the tiny test models (tests/support/make_tiny_models.py DIR makes them): checkpoints/tiny_sd15 and
tiny_sdxl, diffusion_models/tiny_guided_sd15_unet, image_reward/tiny_image_reward, oracles/tiny_pickscore.
The script starts
`main.py --cpu` on a free loopback port with this pack (a custom_nodes entry in a temporary extra_model_paths.yaml), user files in a temporary
folder, and then, over HTTP: POSTs every bad graph of CASES to /prompt and checks that each one is
refused - at validation (HTTP 400) or when it runs (the history's execution_error) - with a message
that names the input (and, for the pack's own checks, says "Fix:"); interrupts a long teacher run;
queues two prompts back to back; and runs a good graph at the end to show the server still serves.
Prints one line per case and a summary; exit status 1 if any case did not behave. The tier-2 test
tests/tier2/test_http.py runs it.
"""
import argparse
import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import aiohttp

P = "StudentTeacher"
SD15, SDXL, ORACLE = "tiny_sd15.safetensors", "tiny_sdxl.safetensors", "tiny_image_reward.safetensors"
GUIDED = "tiny_guided_sd15_unet.safetensors"
# FLUX (diffusion_models/, vae/) and a CLIP-L text encoder (text_encoders/) read as SD3's: 4096-wide text
FLUX_SCHNELL, FLUX_DEV, FLUX_VAE, CLIP_L = ("tiny_flux_schnell.pt", "tiny_flux_dev.pt", "tiny_vae_flux.safetensors",
                                            "tiny_clip_l.safetensors")
PICKSCORE = "tiny_pickscore.safetensors"  # in models/oracles/
PAPER = "lcm_sdxl_4steps_paper.json"
# user files the server is given (start_server writes them): none may be changed, and the payload never runs
LATIN1, TRUNCATED, PAYLOAD = "latin1.txt", "truncated_unet.safetensors", "payload_unet.pt"
ROUTED_S2, ENSEMBLE = "routed_student2.json", ("ens_steps2.json", "ens_steps4.json")
PAYLOAD_RAN = "payload_ran"


# --- graphs ----------------------------------------------------------------------------------------

def base(batch=2, ckpt=SD15):
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "xl": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SDXL}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a red cube"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch}},
        "oracle": {"class_type": P + "LoadImageRewardOracle",
                   "inputs": {"oracle_file": ORACLE, "device": "cpu", "dtype": "fp32", "preprocess": "exact",
                              "batch_size": 8}},
        "student": {"class_type": P + "ConsistencySampler",
                    "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0],
                               "latent_image": ["empty", 0], "seed": 1, "steps": 2, "cfg": 1.0, "schedule": "lcm",
                               "denoise": 1.0}},
        "gate": {"class_type": P + "OracleGate",
                 "inputs": {"latent": ["student", 0], "vae": ["ckpt", 2], "oracle": ["oracle", 0],
                            "prompt": "a red cube", "threshold_mode": "tau", "tau": 10.0, "k": 50,
                            "calibration": "none", "budget": 10.0, "student_steps": 0, "teacher_steps": 2}},
        "teacher": {"class_type": P + "Improve",
                    "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0],
                               "latent": ["student", 0], "gate": ["gate", 1], "strategy": "refine",
                               "rollback_mode": "strength", "rollback": 0.5, "steps": 2, "sampler_name": "euler",
                               "scheduler": "normal", "cfg": 2.0, "seed": 1, "vae": ["ckpt", 2],
                               "source_latent": ["empty", 0], "source_denoise": 1.0}},
        "save": {"class_type": "PreviewImage", "inputs": {"images": ["teacher", 1]}},
    }


def with_inputs(graph, node, **inputs):
    graph[node]["inputs"].update(inputs)
    return graph


def without(graph, node, *inputs):
    for name in inputs:
        del graph[node]["inputs"][name]
    return graph


def only(graph, *nodes):
    return {k: v for k, v in graph.items() if k in nodes}


def rollback_node(**inputs):
    g = only(base(), "ckpt", "empty")
    g["rb"] = {"class_type": P + "RollbackNoise",
               "inputs": {"latent": ["empty", 0], "model": ["ckpt", 0], "rollback_mode": "strength", "rollback": 0.5,
                          "steps": 4, "sampler_name": "euler", "scheduler": "normal", "seed": 0, **inputs}}
    g["out"] = {"class_type": "PreviewAny", "inputs": {"source": ["rb", 1]}}
    return g


def flux(guidance=None, batch=2):
    """FLUX.1-schnell student (schedule sampler, euler + simple), gate, FLUX.1-dev teacher (cfg 1; its
    positive through FluxGuidance when `guidance` is given)."""
    g = base(batch)
    g.update({
        "fte": {"class_type": "CLIPLoader", "inputs": {"clip_name": CLIP_L, "type": "sd3", "device": "default"}},
        "fpos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["fte", 0], "text": "a red cube"}},
        "fneg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["fte", 0], "text": ""}},
        "schnell": {"class_type": "UNETLoader", "inputs": {"unet_name": FLUX_SCHNELL, "weight_dtype": "default"}},
        "dev": {"class_type": "UNETLoader", "inputs": {"unet_name": FLUX_DEV, "weight_dtype": "default"}},
        "fvae": {"class_type": "VAELoader", "inputs": {"vae_name": FLUX_VAE}},
        "fempty": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch}},
    })
    tpos = ["fpos", 0]
    if guidance is not None:
        g["fguide"] = {"class_type": "FluxGuidance", "inputs": {"conditioning": ["fpos", 0], "guidance": guidance}}
        tpos = ["fguide", 0]
    with_inputs(g, "student", model=["schnell", 0], positive=["fpos", 0], negative=["fneg", 0],
                latent_image=["fempty", 0], schedule="sampler", sampler_name="euler", scheduler="simple")
    with_inputs(g, "gate", vae=["fvae", 0])
    with_inputs(g, "teacher", model=["dev", 0], positive=tpos, negative=["fneg", 0], vae=["fvae", 0], cfg=1.0,
                scheduler="simple", rollback_mode="vp", source_latent=["fempty", 0])
    return g


def flux_rollback(**inputs):
    g = rollback_node(model=["dev", 0], latent=["fempty", 0], scheduler="simple", **inputs)
    g.update({k: v for k, v in flux().items() if k in ("dev", "fempty")})
    return g


def adaptive(**inputs):
    g = only(base(), "ckpt", "pos", "neg", "empty", "oracle")
    g["ada"] = {"class_type": P + "AdaptiveSampler",
                "inputs": {"student": ["ckpt", 0], "teacher": ["ckpt", 0], "positive": ["pos", 0],
                           "negative": ["neg", 0], "latent_image": ["empty", 0], "vae": ["ckpt", 2],
                           "oracle": ["oracle", 0], "prompt": "a cube", "seed": 0, "student_steps": 2,
                           "student_cfg": 1.0, "schedule": "lcm", "threshold_mode": "tau", "tau": 0.0, "k": 50,
                           "calibration": "none", "budget": 10.0, "strategy": "refine", "rollback_mode": "strength",
                           "rollback": 0.5, "teacher_steps": 2, "sampler_name": "euler", "scheduler": "normal",
                           "teacher_cfg": 2.0, **inputs}}
    g["save"] = {"class_type": "PreviewImage", "inputs": {"images": ["ada", 0]}}
    return g


def calibrate(**inputs):
    g = only(base(), "ckpt", "oracle")
    g["cal"] = {"class_type": P + "CalibrateThreshold",
                "inputs": {"model": ["ckpt", 0], "clip": ["ckpt", 1], "vae": ["ckpt", 2], "oracle": ["oracle", 0],
                           "prompts": "a cube\na ball", "prompts_file": "none", "max_prompts": 0,
                           "negative_prompt": "", "width": 64, "height": 64, "steps": 1, "cfg": 1.0,
                           "schedule": "lcm", "seed": 0, "batch_size": 2, "filename": "http_check", **inputs}}
    return g


def measure(**inputs):
    g = only(base(), "ckpt", "xl", "oracle")
    g["measure"] = {"class_type": P + "MeasureStudentVsTeacher",
                    "inputs": {"student": ["ckpt", 0], "teacher": ["ckpt", 0], "clip": ["ckpt", 1], "vae": ["ckpt", 2],
                               "oracle": ["oracle", 0], "judge": ["oracle", 0], "prompts": "a cube\na ball",
                               "prompts_file": "none", "max_prompts": 0, "negative_prompt": "", "width": 64,
                               "height": 64, "seed": 0, "student_steps": 1, "student_cfg": 1.0, "schedule": "lcm",
                               "strategy": "refine", "rollback_mode": "strength", "rollback": 0.5,
                               "teacher_steps": 1, "sampler_name": "euler", "scheduler": "normal",
                               "teacher_cfg": 2.0, "teacher_alone_steps": 0, "tolerance": 5.0, "batch_size": 2,
                               "filename": "http_measure", **inputs}}
    return g


def x0_student():
    g = base()
    g["x0"] = {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["ckpt", 0], "sampling": "x0", "zsnr": False}}
    return with_inputs(g, "student", model=["x0", 0])


def other_batch_gate():
    g = base()
    g["empty2"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 3}}
    g["student2"] = {"class_type": g["student"]["class_type"],
                     "inputs": dict(g["student"]["inputs"], latent_image=["empty2", 0])}
    return with_inputs(g, "teacher", latent=["student2", 0])


def guided_student(w):
    g = base()
    g["guided"] = {"class_type": P + "LoadGuidedStudent", "inputs": {"unet_name": GUIDED, "w": 8.0,
                                                                   "w_convention": "diffusers"}}
    return with_inputs(g, "student", model=["guided", 0], w=w)


def attach_to(file):
    g = base()
    g["attach"] = {"class_type": P + "AttachGuidanceEmbedding",
                   "inputs": {"model": ["ckpt", 0], "file": file, "w": 8.0, "w_convention": "diffusers"}}
    return with_inputs(g, "student", model=["attach", 0])


def prompt_list(batch=2, **route):
    g = base(batch=batch)
    g["pos"] = {"class_type": P + "EncodePrompts",
                "inputs": {"clip": ["ckpt", 1], "prompts": "a red cube\na blue ball", "prompts_file": "none",
                           "max_prompts": 0}}
    if route:
        g["student"] = {"class_type": P + "RouteStudents",
                        "inputs": {"student_1": ["ckpt", 0], "student_2": ["ckpt", 0], "positive": ["pos", 0],
                                   "negative": ["neg", 0], "latent_image": ["empty", 0], "seed": 1, "steps": 2,
                                   "cfg": 1.0, "schedule": "lcm", "route": "keywords",
                                   "default_student": 1, **route}}
    return with_inputs(g, "gate", prompt="")


def retry_graph(**inputs):
    g = base()
    g["retry"] = {"class_type": P + "StudentRetry",
                  "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0],
                             "latent": ["gate", 3], "gate": ["gate", 1], "seed": 1, "steps": 2, "cfg": 1.0,
                             "schedule": "lcm", "retry": 1, "vae": ["ckpt", 2], **inputs}}
    g["save"] = {"class_type": "PreviewImage", "inputs": {"images": ["retry", 1]}}
    return g


def ensemble(**inputs):
    g = base()
    g["ensemble"] = {"class_type": P + "EnsembleOracles",
                     "inputs": {"oracle_1": ["oracle", 0], "calibration_1": PAPER, "weight_1": 1.0,
                                "oracle_2": ["oracle", 0], "calibration_2": "none", "weight_2": 1.0, **inputs}}
    g["gate"]["inputs"]["oracle"] = ["ensemble", 0]
    return g


def merge(**inputs):
    return {"merge": {"class_type": P + "MergeCalibrations",
                      "inputs": {"calibration": PAPER, "calibration_2": "none", "filename": "merged", **inputs}}}


def long_prompt_list(**route):
    """A routed prompt list whose first prompt makes a backtracking pattern run for ages."""
    g = prompt_list(route="keywords", **route)
    g["pos"]["inputs"]["prompts"] = "a" * 40 + "!\na blue ball"
    return g


def routed_gate(calibration):
    g = prompt_list(route="keywords", rules="1: cube")
    return with_inputs(g, "gate", threshold_mode="percentile", calibration=calibration)


def xl_text(graph, node, name):
    graph["xlpos"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["xl", 1], "text": "a red cube"}}
    return with_inputs(graph, node, **{name: ["xlpos", 0]})


def core_latent_budget():
    g = base()
    g["ks"] = {"class_type": "KSampler", "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0],
                                                  "latent_image": ["empty", 0], "seed": 0, "steps": 1, "cfg": 1.0,
                                                  "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}}
    with_inputs(g, "gate", latent=["ks", 0], threshold_mode="budget", calibration=PAPER, budget=3.0)
    g = {k: v for k, v in g.items() if k not in ("student", "teacher")}
    g["save"] = {"class_type": "PreviewImage", "inputs": {"images": ["gate", 0]}}
    return g


NAN = math.nan
# (name, graph, the input the message must name, True if the pack's own "Fix:" is expected)
CASES = [
    ("gate tau NaN", lambda: with_inputs(base(), "gate", tau=NAN), "tau", True),
    ("gate budget NaN", lambda: with_inputs(base(), "gate", threshold_mode="budget", calibration=PAPER, budget=NAN),
     "budget", True),
    ("student cfg NaN", lambda: with_inputs(base(), "student", cfg=NAN), "cfg", True),
    ("student denoise NaN", lambda: with_inputs(base(), "student", denoise=NAN), "denoise", True),
    ("teacher rollback NaN", lambda: with_inputs(base(), "teacher", rollback=NAN), "rollback", True),
    ("teacher cfg NaN", lambda: with_inputs(base(), "teacher", cfg=NAN), "cfg", True),
    ("teacher source_denoise NaN", lambda: with_inputs(base(), "teacher", strategy="regenerate", source_denoise=NAN),
     "source_denoise", True),
    ("rollback node NaN", lambda: rollback_node(rollback=NAN), "rollback", True),
    ("adaptive teacher_cfg NaN", lambda: adaptive(teacher_cfg=NAN), "teacher_cfg", True),
    ("calibrate cfg NaN", lambda: calibrate(cfg=NAN), "cfg", True),
    ("gate tau inf", lambda: with_inputs(base(), "gate", tau=math.inf), "tau", False),
    ("rollback above 1", lambda: with_inputs(base(), "teacher", rollback=1.5), "rollback", False),
    ("student steps 0", lambda: with_inputs(base(), "student", steps=0), "steps", False),
    ("seed not a number", lambda: with_inputs(base(), "student", seed="abc"), "seed", False),
    ("oracle missing input", lambda: without(base(), "gate", "oracle"), "oracle", False),
    ("oracle file not there", lambda: with_inputs(base(), "oracle", oracle_file="nope.pt"), "oracle_file", False),
    ("oracle file not a checkpoint", lambda: with_inputs(base(), "oracle", oracle_file="broken.pt"), "oracle_file", True),
    ("oracle of another kind", lambda: with_inputs(base(), "oracle", kind="PickScore"), "kind", True),
    ("oracle kind not a kind", lambda: with_inputs(base(), "oracle", kind="Beauty"), "kind", False),
    ("calibration of another oracle", lambda: with_inputs(with_inputs(base(), "oracle", oracle_file=PICKSCORE), "gate",
                                                          threshold_mode="percentile", calibration=PAPER),
     "calibration", True),
    ("ensemble from official percentiles", lambda: ensemble(), "calibration_1", True),
    ("ensemble weight NaN", lambda: ensemble(calibration_2=PAPER, weight_2=NAN), "weight_2", True),
    ("merge an official file", lambda: merge(calibration_2=PAPER), "calibration", True),
    ("calibration not there", lambda: with_inputs(base(), "gate", calibration="nope.json"), "calibration", False),
    ("calibration not JSON", lambda: with_inputs(base(), "gate", threshold_mode="percentile", calibration="broken.json"),
     "calibration", True),
    ("percentile without calibration", lambda: with_inputs(base(), "gate", threshold_mode="percentile"),
     "calibration", True),
    ("k not calibrated", lambda: with_inputs(base(), "gate", threshold_mode="percentile", calibration=PAPER, k=95), "k",
     True),
    ("budget above refine-all", lambda: with_inputs(base(), "gate", threshold_mode="budget", calibration=PAPER,
                                                    budget=100.0), "budget", True),
    ("budget with a core latent", core_latent_budget, "student_steps", True),
    ("SDXL teacher on SD1.5 samples, no teacher_vae", lambda: with_inputs(base(), "teacher", model=["xl", 0]),
     "teacher_vae", True),
    ("other-family teacher, editing regenerate", lambda: with_inputs(base(), "teacher", model=["xl", 0],
                                                                     teacher_vae=["xl", 2], strategy="regenerate",
                                                                     source_denoise=0.5), "source_denoise", True),
    ("FLUX student on the lcm schedule", lambda: with_inputs(flux(), "student", schedule="lcm"), "model", True),
    ("FLUX student on the turbo schedule", lambda: with_inputs(flux(), "student", schedule="turbo"), "model", True),
    ("FLUX student given SD1.5 text", lambda: with_inputs(flux(), "student", positive=["pos", 0]), "positive", True),
    ("FLUX teacher on SD1.5 samples, no teacher_vae", lambda: with_inputs(
        with_inputs(flux(), "student", model=["ckpt", 0], positive=["pos", 0], negative=["neg", 0],
                    latent_image=["empty", 0]), "gate", vae=["ckpt", 2]), "teacher_vae", True),
    ("FLUX rollback to pure noise for SamplerCustom", lambda: flux_rollback(rollback=1.0), "rollback", True),
    ("student sampler not a sampler", lambda: with_inputs(flux(), "student", sampler_name="warp"), "sampler_name",
     False),
    ("SD1.5 teacher given SDXL text", lambda: xl_text(base(), "teacher", "positive"), "positive", True),
    ("student given SDXL text", lambda: xl_text(base(), "student", "positive"), "positive", True),
    ("regenerate without source", lambda: without(with_inputs(base(), "teacher", strategy="regenerate"), "teacher",
                                                  "source_latent"), "source_latent", True),
    ("gate of another batch", other_batch_gate, "gate", True),
    ("x0 student on the lcm schedule", x0_student, "model", True),
    ("calibrate with one prompt", lambda: calibrate(prompts="a cube"), "prompts", True),
    ("measure tolerance NaN", lambda: measure(tolerance=NAN), "tolerance", True),
    ("measure with one prompt", lambda: measure(prompts="a cube"), "prompts", True),
    ("measure from beyond the list", lambda: measure(first_prompt=5), "first_prompt", True),
    ("measure with a teacher of another family", lambda: measure(teacher=["xl", 0]), "teacher", True),
    ("gate cheapest within an unmeasured calibration", lambda: with_inputs(
        base(), "gate", threshold_mode="cheapest within", calibration=PAPER), "calibration", True),
    ("adaptive tolerance NaN", lambda: adaptive(threshold_mode="cheapest within", tolerance=NAN), "tolerance", True),
    ("calibrate without a file name", lambda: calibrate(filename="  "), "filename", True),
    ("adaptive percentile without calibration", lambda: adaptive(threshold_mode="percentile"), "calibration", True),
    ("w not a number", lambda: guided_student("3, lots"), "w", True),
    ("w for a student without a w embedding", lambda: with_inputs(base(), "student", w="5"), "w", True),
    ("w embedding from a file without one", lambda: attach_to(SD15), "file", True),
    ("guided student default w NaN", lambda: with_inputs(guided_student(""), "guided", w=NAN), "w", True),
    ("gate without any prompt", lambda: with_inputs(base(), "gate", prompt=""), "prompt", True),
    ("prompt list of 2 for 3 samples", lambda: prompt_list(batch=3), "positive", True),
    ("route embedding without clip", lambda: prompt_list(route="embedding", rules="1: a cube"), "clip", True),
    ("route rules without a student number", lambda: prompt_list(rules="cube"), "rules", True),
    ("default student not connected", lambda: prompt_list(default_student=3), "default_student", True),
    ("route centroids without a file", lambda: prompt_list(route="centroids", clip=["ckpt", 1]), "centroids", True),
    ("best_of without the oracle", lambda: prompt_list(route="best_of"), "oracle", True),
    ("calibrate file name with a null byte", lambda: calibrate(filename="a\x00b"), "filename", True),
    ("calibrate file name too long", lambda: calibrate(filename="x" * 300), "filename", True),
    ("w far outside the range", lambda: guided_student("1e306"), "w", True),
    ("route rules with a broken pattern", lambda: prompt_list(route="keywords", rules="1: (cube"), "rules", True),
    ("route students with a gap", lambda: prompt_list(route="keywords", rules="1: cube", student_4=["ckpt", 0]),
     "student_3", True),
    ("scheduler without valid sigmas", lambda: with_inputs(base(), "teacher", scheduler="kl_optimal", steps=1,
                                                           rollback_mode="vp", rollback=1.0), "scheduler", True),
    ("student retry number 0", lambda: retry_graph(retry=0), "retry", False),
    ("student retry without a gate", lambda: without(retry_graph(), "retry", "gate"), "gate", False),
    ("route pattern that backtracks for ages", lambda: long_prompt_list(rules="1: ^(a|a)*$"), "rules", True),
    ("prompt file not UTF-8", lambda: with_inputs(prompt_list(), "pos", prompts_file=LATIN1), "prompts_file", True),
    ("guided student file truncated", lambda: with_inputs(guided_student(""), "guided", unet_name=TRUNCATED),
     "unet_name", True),
    ("guided student file with a pickle payload", lambda: with_inputs(guided_student(""), "guided", unet_name=PAYLOAD),
     "unet_name", True),
    ("best_of over SD1.5 and SDXL students", lambda: prompt_list(route="best_of", student_2=["xl", 0], vae=["ckpt", 2],
                                                                 oracle=["oracle", 0]), "student_2", True),
    ("routed student 2's calibration in slot 1", lambda: routed_gate(ROUTED_S2), "calibration", True),
    ("ensemble members calibrated on other samples", lambda: ensemble(calibration_1=ENSEMBLE[0],
                                                                      calibration_2=ENSEMBLE[1]),
     "calibration_2", True),
]


# graphs on the new paths that must RUN (name, graph)
GOOD = [
    ("FLUX schnell -> gate -> FLUX dev + FluxGuidance", lambda: flux(guidance=3.5)),
    ("FLUX dev teacher without FluxGuidance (3.5)", lambda: flux()),
    ("SD1.5 student -> SDXL teacher via teacher_vae", lambda: xl_text(xl_text(
        with_inputs(base(), "teacher", model=["xl", 0], teacher_vae=["xl", 2]), "teacher", "positive"),
        "teacher", "negative")),
]


# --- the server ------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(comfyui, python, models, work, port, pack):
    nodes_dir = os.path.join(work, "custom_nodes")
    os.makedirs(nodes_dir)
    os.symlink(pack, os.path.join(nodes_dir, "student_teacher"))
    cal = os.path.join(work, "calibration")
    os.makedirs(cal)
    with open(os.path.join(cal, "broken.json"), "w") as f:
        f.write("{not json")
    oracle_dir = os.path.join(work, "image_reward")
    os.makedirs(oracle_dir)
    with open(os.path.join(oracle_dir, "broken.pt"), "w") as f:
        f.write("this is a text file, not weights\n")
    user_files(work, cal, models)
    config = os.path.join(work, "paths.yaml")
    with open(config, "w") as f:
        f.write(f"tiny:\n    checkpoints: {models}/checkpoints\n"
                f"    diffusion_models: |\n        {models}/diffusion_models\n        {work}/diffusion_models\n"
                f"    vae: {models}/vae\n    text_encoders: {models}/text_encoders\n"
                f"    image_reward: |\n        {models}/image_reward\n"
                f"        {oracle_dir}\n    oracles: {models}/oracles\n    image_reward_calibration: {cal}\n"
                f"    student_teacher_prompts: {work}/prompts\n    custom_nodes: {nodes_dir}\n")
    args = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-api-nodes",
            "--dont-print-server", "--verbose", "WARNING", "--extra-model-paths-config", config,
            "--database-url", f"sqlite:///{work}/db.sqlite"]
    for kind in ("output", "input", "temp", "user"):
        os.makedirs(os.path.join(work, kind))
        args += [f"--{kind}-directory", os.path.join(work, kind)]
    log = open(os.path.join(work, "server.log"), "w")
    return subprocess.Popen(args, cwd=comfyui, stdout=log, stderr=subprocess.STDOUT), log


class Payload:
    """Pickled into a .pt: loading it with pickle would create PAYLOAD_RAN (a weights-only load refuses)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def user_files(work, cal, models):
    """The bad files of the cases, as a user would have them: a latin-1 prompt list, a truncated and a
    malicious student file, a routed student's calibration and two ensemble calibrations of other steps."""
    import torch
    for folder in ("prompts", "diffusion_models"):
        os.makedirs(os.path.join(work, folder))
    with open(os.path.join(work, "prompts", LATIN1), "wb") as f:
        f.write("un café\nune crêpe\n".encode("latin-1"))
    with open(os.path.join(models, "diffusion_models", GUIDED), "rb") as f:
        head = f.read(4096)
    with open(os.path.join(work, "diffusion_models", TRUNCATED), "wb") as f:
        f.write(head)
    torch.save({"time_embedding.cond_proj.weight": Payload(os.path.join(work, PAYLOAD_RAN))},
               os.path.join(work, "diffusion_models", PAYLOAD))
    files = {ROUTED_S2: {"50": 0.0, "metadata": {"student": "student 2", "students": 2}}}
    for name, steps in zip(ENSEMBLE, (2, 4)):
        files[name] = {"50": 0.0, "metadata": {"steps": steps, "score_mean": 0.0, "score_std": 1.0}}
    for name, data in files.items():
        with open(os.path.join(cal, name), "w") as f:
            json.dump(data, f)


def user_files_intact(work):
    """(all there, unchanged, and no payload ran, detail)"""
    names = [os.path.join(work, "prompts", LATIN1), os.path.join(work, "diffusion_models", TRUNCATED),
             os.path.join(work, "diffusion_models", PAYLOAD)] + \
        [os.path.join(work, "calibration", n) for n in (ROUTED_S2, "broken.json") + ENSEMBLE]
    missing = [os.path.basename(n) for n in names if not os.path.isfile(n)]
    ran = os.path.exists(os.path.join(work, PAYLOAD_RAN))
    return not missing and not ran, f"missing {missing}" if missing else ("the payload ran" if ran else "all there")


class Client:
    def __init__(self, session, url):
        self.session, self.url, self.client_id = session, url, uuid.uuid4().hex

    async def wait_ready(self, server, timeout=180):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if server.poll() is not None:
                raise RuntimeError("the server exited while starting")
            try:
                async with self.session.get(self.url + "/object_info/" + P + "OracleGate") as r:
                    if r.status == 200 and P + "OracleGate" in await r.json():
                        return time.time() - t0
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
        raise RuntimeError("the server did not come up")

    async def post(self, graph):
        body = json.dumps({"prompt": graph, "client_id": self.client_id})  # NaN and inf as JSON allows them
        async with self.session.post(self.url + "/prompt", data=body,
                                     headers={"Content-Type": "application/json"}) as r:
            return r.status, await r.json()

    async def result(self, prompt_id, timeout=600):
        t0 = time.time()
        while time.time() - t0 < timeout:
            async with self.session.get(f"{self.url}/history/{prompt_id}") as r:
                entry = (await r.json()).get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                return entry["status"]
            await asyncio.sleep(0.2)
        raise RuntimeError(f"prompt {prompt_id} did not finish")

    async def run(self, graph):
        """('rejected', text) | ('error', text) | ('interrupted', text) | ('success', '')"""
        status, body = await self.post(graph)
        if status != 200:
            lines = [body.get("error", {}).get("message", "")]
            for nid, ne in (body.get("node_errors") or {}).items():
                lines += [f"{nid}: {e.get('message')}: {e.get('details')}" for e in ne.get("errors", [])]
            return "rejected", "\n".join(lines)
        st = await self.result(body["prompt_id"])
        for event, data in st.get("messages", []):
            if event == "execution_error":
                return "error", f"{data.get('node_id')}: {data.get('exception_message')}"
            if event == "execution_interrupted":
                return "interrupted", ""
        return ("success", "") if st.get("status_str") == "success" else ("error", json.dumps(st))


def judge(kind, text, name, own_fix):
    if kind == "success":
        return "ran although the input is bad"
    if name not in text:
        return f"the message does not name {name!r}"
    if own_fix and (f"{name}: " not in text or "Fix: " not in text):
        return "the pack's message lacks '<input>: ... Fix: ...'"
    if "Traceback" in text or "mat1 and mat2" in text:
        return "an internal error reached the user"
    return None


async def interrupt_mid_teacher(client):
    """A teacher of 400 steps, interrupted once it runs: the prompt ends interrupted."""
    g = with_inputs(base(batch=1), "teacher", steps=400)
    status, body = await client.post(g)
    assert status == 200, body
    async with client.session.ws_connect(f"{client.url.replace('http', 'ws')}/ws?clientId={client.client_id}") as ws:
        t0 = time.time()
        while time.time() - t0 < 300:
            msg = await ws.receive(timeout=300)
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if data.get("type") == "progress" and data["data"].get("node") == "teacher" and data["data"]["value"] >= 3:
                break
    async with client.session.post(client.url + "/interrupt", json={}) as r:
        assert r.status == 200
    st = await client.result(body["prompt_id"])
    events = [e for e, _ in st.get("messages", [])]
    return "execution_interrupted" in events, f"events {events}"


async def two_queued(client):
    """Two prompts queued back to back: the first fails with its own message, the second runs."""
    bad, good = with_inputs(base(), "gate", tau=NAN), with_inputs(base(), "teacher", seed=2)
    (s1, b1), (s2, b2) = await client.post(bad), await client.post(good)
    assert s1 == s2 == 200, (b1, b2)
    r1, r2 = await client.result(b1["prompt_id"]), await client.result(b2["prompt_id"])
    ok = r1.get("status_str") == "error" and r2.get("status_str") == "success"
    return ok, f"first {r1.get('status_str')}, second {r2.get('status_str')}"


async def check(url, server, work, verbose=True):
    failures, lines = 0, []

    def report(ok, name, detail):
        nonlocal failures
        failures += not ok
        line = f"{'PASS' if ok else 'FAIL'}  {name:42s} {detail}"
        lines.append(line)
        if verbose:
            print(line, flush=True)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:
        client = Client(session, url)
        boot = await client.wait_ready(server)
        if verbose:
            print(f"server ready in {boot:.1f} s at {url}", flush=True)
        kind, text = await client.run(base())
        report(kind == "success", "a good graph runs", kind)
        for name, make in GOOD:
            kind, text = await client.run(make())
            report(kind == "success", name, kind + (f": {text.strip().splitlines()[-1][:160]}" if text.strip() else ""))
        for name, make, input_name, own_fix in CASES:
            kind, text = await client.run(make())
            problem = judge(kind, text, input_name, own_fix)
            first = text.strip().splitlines()[-1] if text.strip() else kind
            report(problem is None, name, f"{kind}: {first[:160]}" + (f"  <- {problem}" if problem else ""))
        ok, detail = await interrupt_mid_teacher(client)
        report(ok, "interrupt mid-teacher", detail)
        ok, detail = await two_queued(client)
        report(ok, "two queued prompts", detail)
        kind, _ = await client.run(with_inputs(base(), "teacher", seed=3))
        report(kind == "success" and server.poll() is None, "still serving afterwards", kind)
        ok, detail = user_files_intact(work)
        report(ok, "user files intact, no payload run", detail)
    total = len(lines)
    summary = f"{total - failures} passed, {failures} failed"
    print(summary, flush=True)
    return failures, lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder ($COMFYUI_PATH)")
    ap.add_argument("--python", default=sys.executable, help="the Python of ComfyUI's environment")
    ap.add_argument("--models", required=True, help="folder with checkpoints/, image_reward/, oracles/ tiny models")
    ap.add_argument("--pack", default=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    a = ap.parse_args(argv)
    if not a.comfyui:
        sys.exit("give --comfyui or set COMFYUI_PATH")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="st_http_") as work:
        server, log = start_server(os.path.abspath(a.comfyui), a.python, os.path.abspath(a.models), work, port,
                                   os.path.abspath(a.pack))
        try:
            failures, _ = asyncio.run(check(f"http://127.0.0.1:{port}", server, work))
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
            if "failures" not in locals() or failures:
                with open(os.path.join(work, "server.log")) as f:
                    print("--- server log (tail) ---\n" + "".join(f.readlines()[-40:]), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

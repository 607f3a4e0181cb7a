"""Tier 2: results that must be right on every path, and bad inputs that must be refused clearly.

Rollback noise in the model's latent space and on its own noise stream, NaN/inf refused for every FLOAT
input of every node, models that do not fit their inputs, v-prediction and zsnr students (against
diffusers' LCMScheduler), regenerate without a source, calibrations never overwritten and re-read
when they change, the oracle loaded whole, and every node's defaults running on the first queue."""
import json
import math
import os
import sys

import pytest
import torch

from comfyui_harness import run_prompt
from tiny_models import TINY_IMAGE_REWARD, TINY_SD15, TINY_SDXL

P = "StudentTeacher"
TEACHER = "tiny_sd15_teacher_c.safetensors"  # a loader of its own, so the teacher is a cache entry of its own


@pytest.fixture(scope="module")
def host(comfy, tmp_path_factory):
    import shutil
    for name in (TINY_SD15, TINY_SDXL, TINY_IMAGE_REWARD):
        comfy.tiny(name)
    student = comfy.model_path("checkpoints", TINY_SD15)
    teacher = os.path.join(os.path.dirname(student), TEACHER)
    if not os.path.exists(teacher):
        shutil.copyfile(student, teacher)
    comfy.folder_paths.filename_list_cache.pop("checkpoints", None)
    cal_dir = str(tmp_path_factory.mktemp("calibration"))  # calibrations land here, not in ComfyUI's folder
    paths, exts = comfy.folder_paths.folder_names_and_paths["image_reward_calibration"]
    comfy.folder_paths.folder_names_and_paths["image_reward_calibration"] = ([cal_dir] + list(paths), exts)
    comfy.cal_dir = cal_dir
    return comfy


def pack(host, module):
    return sys.modules[f"{host.pack_module.__name__}.{module}"]


def loaded(ckpt):
    import nodes
    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt)[:3]
    encode = nodes.CLIPTextEncode().encode
    return model, vae, encode(clip, "a red cube on a table")[0], encode(clip, "blurry")[0]


# --- rollback noise --------------------------------------------------------------------------------

@pytest.mark.parametrize("ckpt", [TINY_SD15, TINY_SDXL])
@pytest.mark.parametrize("mode,amount", [("strength", 0.5), ("vp", 0.6)])
def test_rollback_noise_with_core_sampler_custom_equals_refine(host, ckpt, mode, amount):
    """Rollback Noise -> core SamplerCustom (add_noise off, same sampler) is Teacher Improve's refine."""
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import SamplerCustom
    model, vae, pos, neg = loaded(ckpt)
    g = torch.Generator().manual_seed(1)
    latent = {"samples": torch.randn(2, 4, 8, 8, generator=g) * 3, "batch_index": [0, 1]}
    refined = host.pack_nodes[P + "Improve"]().run(
        model, pos, neg, latent, strategy="refine", rollback_mode=mode, rollback=amount, steps=3,
        sampler_name="dpmpp_2m", scheduler="normal", cfg=2.0, seed=5, vae=vae)["result"][0]["samples"]
    noised, sigmas = host.pack_nodes[P + "RollbackNoise"]().run(latent, model, mode, amount, 3, "dpmpp_2m",
                                                               "normal", 5)
    out = SamplerCustom().sample(model, False, 0, 2.0, pos, neg, comfy.samplers.sampler_object("dpmpp_2m"), sigmas,
                                 noised)[0]["samples"]
    torch.testing.assert_close(out, refined, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(refined, latent["samples"], atol=1e-2)


def test_rollback_noise_is_fresh_noise_of_unit_size_in_the_models_space(host):
    """x = x0 + sigma * z in the model's own latent space, z independent of the student's initial noise."""
    import comfy.sample
    model, _, _, _ = loaded(TINY_SD15)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(8, 4, 32, 32, generator=g) * 4  # 4096 values: independent noise has |cos| ~ 0.016
    latent = {"samples": x0, "batch_index": list(range(8))}
    noised, sigmas = host.pack_nodes[P + "RollbackNoise"]().run(latent, model, "vp", 0.5, 10, "uni_pc", "normal", 3)
    assert float(sigmas[0]) == pytest.approx(1.0)  # vp s = 0.5 is sigma 1
    to_model = model.get_model_object("process_latent_in")
    z = (to_model(noised["samples"]) - to_model(x0)) / sigmas[0]
    assert abs(float(z.std()) - 1.0) < 0.03 and abs(float(z.mean())) < 0.03
    initial = comfy.sample.prepare_noise(x0, 3, list(range(8)))  # what the student started from (seed 3)
    corr = torch.nn.functional.cosine_similarity(z.flatten(1), initial.flatten(1), dim=1)
    assert corr.abs().max() < 0.1, corr


# --- NaN and inf, generated from the schemas -------------------------------------------------------

SOURCES = {
    "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD15}},
    "pos": {"class_type": P + "EncodePrompts",
            "inputs": {"clip": ["ckpt", 1], "prompts": "a red cube", "prompts_file": "none", "max_prompts": 0}},
    "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
    "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
    "student": {"class_type": P + "ConsistencySampler",
                "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0],
                           "latent_image": ["empty", 0], "seed": 0, "steps": 1, "cfg": 1.0, "schedule": "lcm",
                           "denoise": 1.0}},
    "gatesrc": {"class_type": P + "OracleGate",
                "inputs": {"latent": ["student", 0], "vae": ["ckpt", 2], "oracle": ["oracle", 0], "prompt": "",
                           "threshold_mode": "tau", "tau": 10.0, "k": 50, "calibration": "none", "budget": 10.0,
                           "student_steps": 0, "teacher_steps": 2}},
    "image": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": 0}},
    "oracle": {"class_type": P + "LoadImageRewardOracle",
               "inputs": {"oracle_file": TINY_IMAGE_REWARD, "device": "cpu", "dtype": "fp32", "preprocess": "exact",
                          "batch_size": 8}},
}
SOCKET_SOURCES = {"MODEL": ["ckpt", 0], "CLIP": ["ckpt", 1], "VAE": ["ckpt", 2], "CONDITIONING": ["pos", 0],
                  "LATENT": ["student", 0], "IMAGE": ["image", 0], "IR_ORACLE": ["oracle", 0],
                  "ST_GATE": ["gatesrc", 1]}
FILE_CHOICES = {"oracle_file": TINY_IMAGE_REWARD}


def default_graph(host, class_type, **values):
    """A graph running `class_type` with its schema's default widgets (`values` override them) and every
    socket fed from SOURCES; "node" is the node under test, "out" previews its first output."""
    info = host.node_info(class_type)
    inputs = {}
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            if isinstance(kind, list) or kind == "COMBO":
                choices = kind if isinstance(kind, list) else opts.get("options", [])
                inputs[name] = FILE_CHOICES.get(name, opts.get("default", choices[0] if choices else None))
            elif kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                inputs[name] = opts.get("default", {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[kind])
            elif kind in SOCKET_SOURCES and (section == "required" or name == "source_latent"):
                inputs[name] = SOCKET_SOURCES[kind]
            elif section == "required":
                raise AssertionError(f"no source for {class_type}.{name} ({kind}): add one to SOCKET_SOURCES")
    if "negative" in inputs:
        inputs["negative"] = ["neg", 0]
    inputs.update(values)
    return {**SOURCES, "node": {"class_type": class_type, "inputs": inputs},
            "out": {"class_type": "PreviewAny", "inputs": {"source": ["node", 0]}}}


def float_inputs_of_every_node():
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "schemas", "pack.json"), encoding="utf-8") as f:
        schemas = json.load(f)
    return [(node, name) for node, info in sorted(schemas.items()) for section in ("required", "optional")
            for name, spec in info["input"].get(section, {}).items() if spec[0] == "FLOAT"]


@pytest.mark.parametrize("how", ["nan", "nan from a Float node", "inf", "-inf"])
@pytest.mark.parametrize("node,name", float_inputs_of_every_node())
def test_every_float_input_refuses_nan_and_inf(host, node, name, how):
    """NaN passes ComfyUI's min/max validation (every comparison is false), as a widget value sent over
    the API or as a linked value: the node refuses it by name. inf is stopped by ComfyUI's own max."""
    value = float(how.split()[0])
    g = default_graph(host, node, **{name: value})
    if "Float node" in how:
        g["float"] = {"class_type": "PrimitiveFloat", "inputs": {"value": value}}
        g["node"]["inputs"][name] = ["float", 0]
    run = run_prompt(host, g, check=False)
    assert not run.success
    if math.isinf(value):
        [err] = run.node_errors["node"]["errors"]
        assert err["details"] == name and err["type"] in ("value_bigger_than_max", "value_smaller_than_min")
    else:
        assert not run.node_errors  # ComfyUI's own validation lets NaN through ...
        assert f"#node {node}" in run.error and f"{name}: got nan. Fix: give a finite number" in run.error, run.error


def test_the_schema_list_covers_every_node_with_a_float(host):
    covered = {node for node, _ in float_inputs_of_every_node()}
    live = {k for k, cls in host.pack_nodes.items()
            if any(s[0] == "FLOAT" for sec in cls.INPUT_TYPES().values() for s in sec.values())}
    assert covered == live


# --- the first queue -------------------------------------------------------------------------------

@pytest.mark.parametrize("node", ["OracleGate", "AdaptiveSampler", "ConsistencySampler", "Improve", "RollbackNoise",
                                  "StudentRetry"])
def test_a_fresh_node_runs_with_its_defaults(host, node):
    run_prompt(host, default_graph(host, P + node))


def test_the_default_threshold_needs_no_calibration(host):
    info = host.node_info(P + "OracleGate")["input"]["required"]
    assert info["threshold_mode"][1]["default"] == "tau" and info["calibration"][0][0] == "none"


# --- models that do not fit their inputs -----------------------------------------------------------

def pipeline(teacher_ckpt=TEACHER, teacher_clip="ckpt", student_ckpt=TINY_SD15, strategy="refine"):
    return {
        **SOURCES,
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": student_ckpt}},
        "teacher": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": teacher_ckpt}},
        "tpos": {"class_type": "CLIPTextEncode", "inputs": {"clip": [teacher_clip, 1], "text": "a red cube"}},
        "tneg": {"class_type": "CLIPTextEncode", "inputs": {"clip": [teacher_clip, 1], "text": ""}},
        "student": {"class_type": P + "ConsistencySampler",
                    "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0],
                               "latent_image": ["empty", 0], "seed": 1, "steps": 2, "cfg": 1.0, "schedule": "lcm",
                               "denoise": 1.0}},
        "gate": {"class_type": P + "OracleGate",
                 "inputs": {"latent": ["student", 0], "vae": ["ckpt", 2], "oracle": ["oracle", 0], "prompt": "a red cube",
                            "threshold_mode": "tau", "tau": 10.0, "k": 50, "calibration": "none", "budget": 10.0,
                            "student_steps": 0, "teacher_steps": 3}},
        "out": {"class_type": "PreviewAny", "inputs": {"source": ["node", 2]}},
        "node": {"class_type": P + "Improve",
                 "inputs": {"model": ["teacher", 0], "positive": ["tpos", 0], "negative": ["tneg", 0],
                            "latent": ["student", 0], "gate": ["gate", 1], "strategy": strategy,
                            "rollback_mode": "strength", "rollback": 0.5, "steps": 2, "sampler_name": "euler",
                            "scheduler": "normal", "cfg": 2.0, "seed": 1, "vae": ["ckpt", 2],
                            "source_latent": ["empty", 0], "source_denoise": 1.0}},
    }


def failure(host, graph):
    run = run_prompt(host, graph, check=False)
    assert not run.success and "mat1 and mat2" not in run.error
    return run.error


def test_a_teacher_of_another_family_needs_its_vae_and_its_conditioning(host):
    # an SDXL teacher on SD1.5 samples without its VAE: the samples cannot reach it
    for clip in ("ckpt", "teacher"):
        err = failure(host, pipeline(teacher_ckpt=TINY_SDXL, teacher_clip=clip))
        assert ("teacher_vae: the teacher is a SDXL model, the samples are SD15 latents. "
                "Fix: connect the teacher's VAE to teacher_vae") in err, err
    # with its VAE but the student's conditioning
    g = pipeline(teacher_ckpt=TINY_SDXL, teacher_clip="ckpt")
    g["node"]["inputs"]["teacher_vae"] = ["teacher", 2]
    err = failure(host, g)
    assert "positive: is 768 wide but model (SDXL) expects 2048" in err, err
    # the right family, the wrong text encoder
    g = pipeline()
    g["sdxl"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SDXL}}
    g["tpos"]["inputs"]["clip"] = ["sdxl", 1]
    err = failure(host, g)
    assert ("positive: is 2048 wide but model (SD15) expects 768. "
            "Fix: encode it with the text encoder(s) of the SD15 model") in err


def test_a_student_given_another_familys_conditioning_is_refused(host):
    g = default_graph(host, P + "ConsistencySampler")
    g["sdxl"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SDXL}}
    g["node"]["inputs"]["model"] = ["sdxl", 0]
    err = failure(host, g)
    assert "positive: is 768 wide but model (SDXL) expects 2048" in err, err


def test_a_vae_of_another_latent_size_is_refused(host):
    glue = pack(host, "nodes.model_checks")

    class VAE16:
        latent_channels = 16

    with pytest.raises(ValueError, match="vae: decodes 16-channel latents, the samples have 4"):
        glue.check_vae_fits(VAE16(), torch.zeros(1, 4, 8, 8))


# --- regenerate without a source --------------------------------------------------------------------

def test_regenerate_without_source_latent_says_what_to_connect(host):
    g = pipeline(strategy="regenerate")
    del g["node"]["inputs"]["source_latent"]
    err = failure(host, g)
    assert "there is no input to that node" not in err
    assert "source_latent: regenerate needs the latent the student started from. Fix: connect" in err, err


# --- v-prediction and zsnr students ----------------------------------------------------------------

def diffusers_lcm(unet, context, noise, renoise, prediction_type, steps):
    """diffusers' LCMScheduler driving the same UNet: the reference multistep consistency sampling."""
    import diffusers.schedulers.scheduling_lcm as lcm
    sched = lcm.LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                             prediction_type=prediction_type)
    sched.set_timesteps(steps)
    draws = iter(renoise)
    real_randn = lcm.randn_tensor
    lcm.randn_tensor = lambda *a, **k: next(draws)
    try:
        x = noise
        for t in sched.timesteps:
            out = unet(x, torch.full((x.shape[0],), float(t)), context=context)
            x, denoised = sched.step(out, t, x, return_dict=False)
    finally:
        lcm.randn_tensor = real_randn
    return denoised


@pytest.mark.parametrize("prediction", ["eps", "v_prediction"])
def test_consistency_student_equals_diffusers_lcm_scheduler(host, prediction):
    import comfy.model_management
    import comfy.sample
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete
    model, _, pos, neg = loaded(TINY_SD15)
    model = ModelSamplingDiscrete().patch(model, prediction, False)[0]
    latent = {"samples": torch.zeros(2, 4, 8, 8), "batch_index": [0, 1]}
    steps, seed = 3, 11
    ours = pack(host, "nodes.student").student_sample(model, pos, neg, latent, seed, steps, 1.0, "lcm")["samples"]

    comfy.model_management.load_models_gpu([model])
    unet = model.model.diffusion_model
    noise = comfy.sample.prepare_noise(latent["samples"], seed, [0, 1])
    noise_mod = pack(host, "schedulers.noise")
    stream = noise_mod.PerSampleNoise(seed, [0, 1], (4, 8, 8), noise_mod.Stream.STUDENT_RENOISE)
    with torch.no_grad():
        ref = diffusers_lcm(unet, pos[0][0].repeat(2, 1, 1), noise, [stream.draw(i) for i in range(steps)],
                            "epsilon" if prediction == "eps" else prediction, steps)
    ref = model.get_model_object("process_latent_out")(ref)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_a_zsnr_schedule_is_kept(host):
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete
    model, _, pos, neg = loaded(TINY_SD15)
    glue = pack(host, "nodes.consistency_sampling")
    zsnr = ModelSamplingDiscrete().patch(model, "v_prediction", True)[0]
    kept = glue.with_consistency_sampling(zsnr).get_model_object("model_sampling")
    assert torch.equal(kept.sigmas, zsnr.get_model_object("model_sampling").sigmas) and float(kept.sigma_max) > 1000
    student = pack(host, "nodes.student").student_sample
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    plain_v = ModelSamplingDiscrete().patch(model, "v_prediction", False)[0]
    assert not torch.allclose(student(zsnr, pos, neg, latent, 0, 2, 1.0)["samples"],
                              student(plain_v, pos, neg, latent, 0, 2, 1.0)["samples"])


def test_an_x0_student_is_refused_for_the_lcm_schedule(host):
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete
    model, _, pos, neg = loaded(TINY_SD15)
    x0 = ModelSamplingDiscrete().patch(model, "x0", False)[0]
    with pytest.raises(ValueError, match="model: schedule lcm needs an eps- or v-prediction student, this one predicts X0"):
        pack(host, "nodes.student").student_sample(x0, pos, neg, {"samples": torch.zeros(1, 4, 8, 8)}, 0, 2, 1.0)


# --- calibration files ------------------------------------------------------------------------------

def calibrate_graph(host, filename, seed=0):
    return default_graph(host, P + "CalibrateThreshold", prompts="a red cube\na blue ball\na cat", prompts_file="none",
                         width=64, height=64, steps=1, seed=seed, filename=filename)


def test_calibration_never_overwrites_a_file(host):
    taken = os.path.join(host.cal_dir, "taken.json")
    with open(taken, "w") as f:
        f.write('{"50": 0.25}\n')
    run = run_prompt(host, calibrate_graph(host, "taken"))
    assert open(taken).read() == '{"50": 0.25}\n'
    summary = run.output("node", 1)
    assert "taken_2.json" in summary and "taken.json exists already and was left as it is" in summary
    run_prompt(host, calibrate_graph(host, "taken", seed=1))
    assert sorted(f for f in os.listdir(host.cal_dir) if f.startswith("taken")) == ["taken.json", "taken_2.json",
                                                                                   "taken_3.json"]


def test_a_changed_calibration_file_reruns_the_gate(host):
    path = os.path.join(host.cal_dir, "changing.json")
    g = default_graph(host, P + "OracleGate", threshold_mode="percentile", k=50, calibration="changing.json")
    for tau in (-5.0, 5.0):
        with open(path, "w") as f:
            json.dump({"50": tau}, f)
        host.folder_paths.filename_list_cache.pop("image_reward_calibration", None)
        run = run_prompt(host, g)
        assert run.ran("node") and run.output("node", 1).threshold.tau == tau
    assert not run_prompt(host, g).ran("node")  # unchanged: cached


# --- the oracle -------------------------------------------------------------------------------------

def test_the_oracle_is_always_loaded_whole(host, monkeypatch):
    """Plain torch modules cannot run partly offloaded: ComfyUI must load the oracle fully, as it
    loads its text encoders, even when it would load a UNet in part (low VRAM)."""
    import comfy.model_management as mm
    oracle = pack(host, "nodes.oracle_nodes").load_oracle(TINY_IMAGE_REWARD, "auto", "auto")
    assert oracle.patcher.load_device == mm.text_encoder_device()
    calls = []
    real = mm.load_models_gpu
    monkeypatch.setattr(mm, "load_models_gpu", lambda models, **kw: calls.append(kw) or real(models, **kw))
    oracle.score(torch.rand(1, 32, 32, 3), ["a cat"])
    assert calls and all(kw.get("force_full_load") for kw in calls)

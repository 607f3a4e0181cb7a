"""Tier 2: guidance-embedded students (w through a Fourier embedding into the time MLP) in real ComfyUI.

Parity with diffusers, the real peer: a full-size SD1.5 UNet2DConditionModel with time_cond_proj_dim=256
and random weights, saved as a diffusers UNet file and loaded through the pack, gives diffusers' UNet
output for several t and w, and a 4-step consistency sample equal to diffusers'
LatentConsistencyModelPipeline; ComfyUI's stock loader (which drops the layer) does not. Tiny models
show per-sample w, LoRA/ControlNet on top, SDXL, and the bad-file messages."""
import os
import sys

import pytest
import torch

from comfyui_harness import run_prompt
from tiny_models import (TINY_CONTROLNET_SD15, TINY_GUIDED_SD15_UNET, TINY_GUIDED_SDXL, TINY_IMAGE_REWARD,
                         TINY_LCM_LORA_SD15, TINY_SD15)

P = "StudentTeacher"
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                   "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                 time_cond_proj_dim=256)
FULL = "guided_sd15_full_random.safetensors"


@pytest.fixture(scope="module")
def host(comfy):
    for name in (TINY_SD15, TINY_GUIDED_SD15_UNET, TINY_GUIDED_SDXL, TINY_LCM_LORA_SD15, TINY_CONTROLNET_SD15,
                 TINY_IMAGE_REWARD):
        comfy.tiny(name)
    return comfy


def pack(host, module):
    return sys.modules[f"{host.pack_module.__name__}.{module}"]


def encode(text, ckpt=TINY_SD15):
    import nodes
    clip = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt)[1]
    return nodes.CLIPTextEncode().encode(clip, text)[0]


# --- parity with diffusers (full-size SD1.5 architecture, random weights) ---------------------------

@pytest.fixture(scope="module")
def full_size(host):
    """(diffusers UNet, the same weights loaded through the pack, and through ComfyUI's stock loader)."""
    import safetensors.torch
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    reference = UNet2DConditionModel(**SD15_UNET).eval()
    sd = {k: v.half().contiguous() for k, v in reference.state_dict().items()}
    reference.load_state_dict({k: v.float() for k, v in sd.items()})  # both sides get the fp16-rounded weights
    assert sd["time_embedding.cond_proj.weight"].shape == (320, 256) and sd["time_embedding.cond_proj.weight"].any()
    path = os.path.join(host.models_root, "diffusion_models", FULL)
    safetensors.torch.save_file(sd, path)
    host.folder_paths.filename_list_cache.pop("diffusion_models", None)
    del sd
    try:
        import nodes
        guided = host.pack_nodes[P + "LoadGuidedStudent"]().load(FULL, 8.0, "diffusers")[0]
        stock = nodes.UNETLoader().load_unet(FULL, "default")[0]
        yield reference, guided, stock
    finally:
        os.unlink(path)
        host.free_memory()


def comfy_unet(host, model, x, t, context, w):
    """The UNet of a ComfyUI MODEL called as its samplers call it, with per-sample w."""
    import comfy.model_management
    comfy.model_management.load_models_gpu([model])
    options = {"wrappers": model.wrappers, pack(host, "nodes.guidance").W_OPTION: torch.tensor(w)}
    with torch.no_grad():
        return model.model.diffusion_model(x, timesteps=t, context=context, transformer_options=options)


def diffusers_unet(unet, x, t, context, w):
    from diffusers import LatentConsistencyModelPipeline
    emb = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, torch.tensor(w) - 1, 256)
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=context, timestep_cond=emb).sample


@pytest.mark.parametrize("t,w", [(999, [8.0, 8.0]), (499, [3.0, 9.0]), (259, [1.0, 15.0])])
def test_unet_output_equals_diffusers(host, full_size, t, w):
    reference, guided, stock = full_size
    g = torch.Generator().manual_seed(t)
    x, context = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 77, 768, generator=g)
    ts = torch.full((2,), float(t))
    want = diffusers_unet(reference, x, ts, context, w)
    got = comfy_unet(host, guided, x, ts, context, w)
    rel = float((got - want).norm() / want.norm())
    dropped = comfy_unet(host, stock, x, ts, context, w)  # ComfyUI's loader alone: the w embedding is gone
    rel_dropped = float((dropped - want).norm() / want.norm())
    print(f"\nt={t} w={w}: relative error {rel:.2e} through the pack, {rel_dropped:.2e} with the layer dropped")
    assert rel <= 1e-4 and rel_dropped > 1e-2, (rel, rel_dropped)


def test_consistency_sample_equals_diffusers_lcm_pipeline(host, full_size):
    import comfy.sample
    import diffusers.schedulers.scheduling_lcm as lcm
    from diffusers import LatentConsistencyModelPipeline
    reference, guided, _ = full_size
    context = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(5))
    latent = {"samples": torch.zeros(1, 4, 16, 16), "batch_index": [0]}
    seed, steps, w = 3, 4, 6.5
    ours = pack(host, "nodes.student").student_sample(guided, [[context, {}]], [[context, {}]], latent, seed, steps,
                                                      1.0, "lcm", w=str(w))["samples"]

    noise_mod = pack(host, "schedulers.noise")
    stream = noise_mod.PerSampleNoise(seed, [0], (4, 16, 16), noise_mod.Stream.STUDENT_RENOISE)
    draws = iter([stream.draw(i) for i in range(steps)])
    pipe = LatentConsistencyModelPipeline(vae=None, text_encoder=None, tokenizer=None, unet=reference,
                                          scheduler=lcm.LCMScheduler(beta_start=0.00085, beta_end=0.012,
                                                                     beta_schedule="scaled_linear"),
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    real_randn, lcm.randn_tensor = lcm.randn_tensor, lambda *a, **k: next(draws)
    try:
        ref = pipe(prompt_embeds=context, num_inference_steps=steps, guidance_scale=w, height=128, width=128,
                   latents=comfy.sample.prepare_noise(latent["samples"], seed, [0]), output_type="latent").images
    finally:
        lcm.randn_tensor = real_randn
    ref = guided.get_model_object("process_latent_out")(ref)
    rel = float((ours - ref).norm() / ref.norm())
    print(f"\n4-step consistency sample vs diffusers' LatentConsistencyModelPipeline: relative error {rel:.2e}")
    assert rel <= 1e-3, rel


# --- tiny guided students ----------------------------------------------------------------------------

def guided_tiny(host, w=8.0):
    return host.pack_nodes[P + "LoadGuidedStudent"]().load(TINY_GUIDED_SD15_UNET, w, "diffusers")[0]


def sample(host, model, w, batch=4, index=None, positive=None, steps=2):
    pos = positive or encode("a red cube")
    latent = {"samples": torch.zeros(batch, 4, 8, 8), "batch_index": index or list(range(batch))}
    return pack(host, "nodes.student").student_sample(model, pos, encode(""), latent, 5, steps, 1.0, "lcm", w=w)


def test_per_sample_w_is_each_samples_own(host):
    model = guided_tiny(host)
    batch = sample(host, model, "3, 5, 7, 9")
    assert [r.w for r in pack(host, "schedulers.record").records_of(batch)] == [3.0, 5.0, 7.0, 9.0]
    for i in range(4):
        alone = sample(host, model, "3, 5, 7, 9", batch=1, index=[i])
        torch.testing.assert_close(alone["samples"][0], batch["samples"][i], rtol=1e-4, atol=1e-3)
    same_w = sample(host, model, "5")
    assert not torch.allclose(same_w["samples"][0], batch["samples"][0], atol=1e-3)  # w matters
    assert torch.allclose(sample(host, model, "")["samples"], sample(host, model, "8")["samples"])  # the default


def test_w_needs_a_guided_student(host):
    import nodes
    plain = nodes.CheckpointLoaderSimple().load_checkpoint(TINY_SD15)[0]
    with pytest.raises(ValueError, match="w: the model has no guidance embedding"):
        sample(host, plain, "5")
    assert sample(host, plain, "")  # no w: samples as before


def test_lora_and_controlnet_apply_to_a_guided_student(host):
    import nodes
    model = guided_tiny(host)
    lora = nodes.LoraLoaderModelOnly().load_lora_model_only(model, TINY_LCM_LORA_SD15, 1.0)[0]
    base, with_lora = sample(host, model, "5")["samples"], sample(host, lora, "5")["samples"]
    assert not torch.allclose(base, with_lora, atol=1e-4)
    assert not torch.allclose(with_lora, sample(host, lora, "9")["samples"], atol=1e-3)  # still embeds w
    cnet = nodes.ControlNetLoader().load_controlnet(TINY_CONTROLNET_SD15)[0]
    hint = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    pos = nodes.ControlNetApplyAdvanced().apply_controlnet(encode("a red cube"), encode(""), cnet, hint, 1.0, 0.0,
                                                           1.0)[0]
    controlled = sample(host, model, "5", positive=pos)["samples"]
    assert not torch.allclose(base, controlled, atol=1e-4)
    assert not torch.allclose(controlled, sample(host, model, "9", positive=pos)["samples"], atol=1e-3)


def test_the_same_code_serves_an_sdxl_student(host):
    import nodes
    model, clip = nodes.CheckpointLoaderSimple().load_checkpoint(TINY_GUIDED_SDXL)[:2]
    guided = host.pack_nodes[P + "AttachGuidanceEmbedding"]().attach(model, TINY_GUIDED_SDXL, 8.0, "diffusers")[0]
    pos, neg = nodes.CLIPTextEncode().encode(clip, "a red cube")[0], nodes.CLIPTextEncode().encode(clip, "")[0]
    student = pack(host, "nodes.student").student_sample
    latent = {"samples": torch.zeros(2, 4, 8, 8)}
    a, b = (student(guided, pos, neg, latent, 1, 2, 1.0, "lcm", w=w)["samples"] for w in ("3", "9"))
    assert not torch.allclose(a, b, atol=1e-3)
    plain = student(model, pos, neg, latent, 1, 2, 1.0, "lcm")["samples"]
    assert not torch.allclose(plain, student(guided, pos, neg, latent, 1, 2, 1.0, "lcm")["samples"], atol=1e-3)


def test_a_file_without_the_layer_or_of_another_shape_is_refused(host, tmp_path):
    import nodes
    import safetensors.torch
    model = nodes.CheckpointLoaderSimple().load_checkpoint(TINY_SD15)[0]
    attach = host.pack_nodes[P + "AttachGuidanceEmbedding"]().attach
    with pytest.raises(ValueError, match="file: tiny_sd15.safetensors has no guidance embedding"):
        attach(model, TINY_SD15, 8.0, "diffusers")
    wrong = os.path.join(host.models_root, "diffusion_models", "wrong_cond_proj.safetensors")
    safetensors.torch.save_file({"time_embedding.cond_proj.weight": torch.zeros(64, 256)}, wrong)
    host.folder_paths.filename_list_cache.pop("diffusion_models", None)
    try:
        with pytest.raises(ValueError, match=r"file: wrong_cond_proj.safetensors's guidance embedding is \[64, 256\], "
                                             r"the model's time embedding takes 320 channels"):
            attach(model, "wrong_cond_proj.safetensors", 8.0, "diffusers")
    finally:
        os.unlink(wrong)


def test_the_gate_reports_w_and_warns_on_a_calibration_at_another_w(host):
    import json
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD15}},
        "unet": {"class_type": P + "LoadGuidedStudent",
                 "inputs": {"unet_name": TINY_GUIDED_SD15_UNET, "w": 8.0, "w_convention": "diffusers"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a red cube"}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "student": {"class_type": P + "ConsistencySampler",
                    "inputs": {"model": ["unet", 0], "positive": ["pos", 0], "negative": ["pos", 0],
                               "latent_image": ["empty", 0], "seed": 0, "steps": 2, "cfg": 1.0, "schedule": "lcm",
                               "denoise": 1.0, "w": "3, 7"}},
        "oracle": {"class_type": P + "LoadImageRewardOracle",
                   "inputs": {"oracle_file": TINY_IMAGE_REWARD, "device": "cpu", "dtype": "fp32",
                              "preprocess": "exact", "batch_size": 8}},
        "gate": {"class_type": P + "OracleGate",
                 "inputs": {"latent": ["student", 0], "vae": ["ckpt", 2], "oracle": ["oracle", 0], "prompt": "a red cube",
                            "threshold_mode": "percentile", "tau": 0.0, "k": 50, "calibration": "at_w8.json",
                            "budget": 10.0, "student_steps": 0, "teacher_steps": 2}},
        "out": {"class_type": "PreviewAny", "inputs": {"source": ["gate", 2]}},
    }
    cal_dir = host.folder_paths.get_folder_paths("image_reward_calibration")[0]
    with open(os.path.join(cal_dir, "at_w8.json"), "w") as f:
        json.dump({"50": 0.0, "metadata": {"steps": 2, "cfg": 1.0, "schedule": "lcm", "w": [8.0]}}, f)
    host.folder_paths.filename_list_cache.pop("image_reward_calibration", None)
    report = run_prompt(host, g).output("gate", 2)
    assert "#0 (w 3): score" in report and "#1 (w 7): score" in report
    assert "warning: the calibration was made at w = [8.0] but the samples used w = [3.0, 7.0]" in report


def test_calibration_records_the_w_it_was_made_at(host):
    import json
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD15}},
        "unet": {"class_type": P + "LoadGuidedStudent",
                 "inputs": {"unet_name": TINY_GUIDED_SD15_UNET, "w": 8.0, "w_convention": "diffusers"}},
        "oracle": {"class_type": P + "LoadImageRewardOracle",
                   "inputs": {"oracle_file": TINY_IMAGE_REWARD, "device": "cpu", "dtype": "fp32",
                              "preprocess": "exact", "batch_size": 8}},
        "cal": {"class_type": P + "CalibrateThreshold",
                "inputs": {"model": ["unet", 0], "clip": ["ckpt", 1], "vae": ["ckpt", 2], "oracle": ["oracle", 0],
                           "prompts": "a cube\na ball\na cat", "prompts_file": "none", "max_prompts": 0,
                           "negative_prompt": "", "width": 64, "height": 64, "steps": 2, "cfg": 1.0,
                           "schedule": "lcm", "seed": 0, "batch_size": 2, "filename": "guided_w6", "w": "6"}},
    }
    summary = run_prompt(host, g).output("cal", 1)
    path = summary.splitlines()[0].split("saved ", 1)[1].split(" (")[0]
    with open(path) as f:
        assert json.load(f)["metadata"]["w"] == [6.0]

"""Tier 2: flow-model students sampled through the pack equal diffusers' pipelines.

Random-weight transformers built with diffusers, saved in diffusers' key layout and loaded by ComfyUI's
own loader (comfy.sd.load_diffusion_model converts the keys and detects the family), sampled by the
pack's student_sample(schedule="sampler") from ComfyUI's initial noise for (seed, batch index), and by
diffusers' pipeline from that same noise:

  FLUX.1-schnell: FluxPipeline (FlowMatchEulerDiscreteScheduler, schnell's config: shift 1, no dynamic
      shifting; sigmas linspace(1, 1/4, 4), no guidance) vs euler + "simple" on ComfyUI's FluxSchnell
      (ModelSamplingDiscreteFlow, shift 1). ComfyUI's Flux detection fixes the width (hidden 3072,
      24 heads of 128, context 4096, rope axes 16/56/56) whatever the file holds, so the model has
      FLUX.1's real width and only its depth is cut (1 double + 1 single block).
  SD3: StableDiffusion3Pipeline (FlowMatchEulerDiscreteScheduler shift 3) with real cfg 3 vs euler +
      "normal" on ComfyUI's SD3 (ModelSamplingDiscreteFlow, shift 3). diffusers' SD3 timesteps are
      linspace(t(sigma_max), t(sigma_min), n) then shifted, where sigma_min is already the shifted
      1/1000: ComfyUI's "normal" scheduler computes exactly that; "simple" (the trailing grid
      1, 3/4, 1/2, 1/4 shifted) is another schedule and is shown to differ.

Each parity test also shows it can fail: one step fewer, or another scheduler / cfg, misses diffusers
by far more than the tolerance."""
import sys

import numpy as np
import pytest
import torch

TOL = 1e-3
SEED = 7
LATENT = (1, 16, 8, 8)  # 64 x 64 px

FLUX = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=False,
            axes_dims_rope=(16, 56, 56))
FLUX_SCHNELL_SCHEDULER = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False, base_shift=0.5,
                              max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
# ComfyUI's MMDiT detection: hidden = 64 * depth, heads = depth (64 each), blocks = depth
SD3 = dict(sample_size=32, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=64, num_attention_heads=2,
           joint_attention_dim=64, caption_projection_dim=128, pooled_projection_dim=32, out_channels=16,
           pos_embed_max_size=16)
SD3_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0)


@pytest.fixture(scope="module")
def host(comfy):
    return comfy  # tests import comfy.* (the package), so the fixture goes by another name


def pack(host, module):
    return sys.modules[f"{host.pack_module.__name__}.{module}"]


def rel_error(got, want):
    return float((got.float() - want.float()).norm() / want.float().norm())


def load_through_comfyui(reference, path):
    """reference's state dict saved in diffusers' layout, loaded by ComfyUI's loader."""
    import comfy.sd
    import safetensors.torch
    safetensors.torch.save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = comfy.sd.load_diffusion_model(str(path))
    path.unlink()
    return model


def student(host, model, positive, negative, cfg, steps=4, scheduler="simple"):
    """The pack's student from a zero LATENT (so ComfyUI's noise for (SEED, 0) is the start), in the
    model's own latent space."""
    latent = {"samples": torch.zeros(LATENT), "batch_index": [0]}
    out = pack(host, "nodes.student").student_sample(model, positive, negative, latent, SEED, steps=steps, cfg=cfg,
                                                     schedule="sampler", denoise=1.0, sampler_name="euler",
                                                     scheduler=scheduler)["samples"]
    return model.get_model_object("process_latent_in")(out)


def initial_noise():
    import comfy.sample
    return comfy.sample.prepare_noise(torch.zeros(LATENT), SEED, [0])


def comfy_sigmas(model, scheduler, steps=4):
    import comfy.samplers
    return comfy.samplers.KSampler(model, steps=steps, device="cpu", sampler="euler",
                                   scheduler=scheduler).sigmas.float().cpu()


def diffusers_sigmas(scheduler, steps, **kw):
    scheduler.set_timesteps(steps, **kw)
    return scheduler.sigmas.float().cpu()


# --- FLUX.1-schnell ---------------------------------------------------------------------------------

def reference_and_comfyui(host, tmp_path_factory, model_class: str, config: dict, name: str):
    """(a random diffusers transformer, the same weights loaded by ComfyUI), freed after the module."""
    import diffusers
    torch.manual_seed(0)
    reference = getattr(diffusers, model_class)(**config).eval()
    model = load_through_comfyui(reference, tmp_path_factory.mktemp(name) / f"{name}_random.safetensors")
    yield reference, model
    del model
    host.free_memory()


@pytest.fixture(scope="module")
def flux(host, tmp_path_factory):
    yield from reference_and_comfyui(host, tmp_path_factory, "FluxTransformer2DModel", FLUX, "flux_schnell")


def test_flux_schnell_student_equals_diffusers_flux_pipeline(host, flux):
    import comfy.model_sampling
    import comfy.supported_models
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
    reference, model = flux
    assert type(model.model.model_config) is comfy.supported_models.FluxSchnell  # guidance_embeds False
    assert model.model.get_dtype() == torch.float32
    ms = model.get_model_object("model_sampling")
    assert isinstance(ms, comfy.model_sampling.ModelSamplingDiscreteFlow) and ms.shift == 1.0 and ms.multiplier == 1.0

    g = torch.Generator().manual_seed(11)
    embeds, pooled = torch.randn(1, 8, 4096, generator=g), torch.randn(1, 768, generator=g)
    positive = [[embeds, {"pooled_output": pooled}]]
    noise = initial_noise()
    h, w = LATENT[2] * 8, LATENT[3] * 8

    scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_SCHNELL_SCHEDULER)
    pipe = FluxPipeline(scheduler=scheduler, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
                        tokenizer_2=None, transformer=reference)
    pipe.set_progress_bar_config(disable=True)
    packed = FluxPipeline._pack_latents(noise, 1, LATENT[1], LATENT[2], LATENT[3])
    with torch.no_grad():
        out = pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled, num_inference_steps=4, guidance_scale=0.0,
                   height=h, width=w, latents=packed, output_type="latent").images
    want = FluxPipeline._unpack_latents(out, h, w, pipe.vae_scale_factor)

    # the schedules: diffusers' schnell sigmas are linspace(1, 1/4, 4) + 0, ComfyUI's "simple" the same
    theirs = diffusers_sigmas(FlowMatchEulerDiscreteScheduler(**FLUX_SCHNELL_SCHEDULER), 4,
                              sigmas=np.linspace(1.0, 1 / 4, 4))
    ours = comfy_sigmas(model, "simple")
    print(f"\nschnell sigmas: diffusers {theirs.tolist()}, ComfyUI simple {ours.tolist()}")
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)

    got = student(host, model, positive, positive, cfg=1.0)
    rel = rel_error(got, want)
    moved = rel_error(want, noise)  # the model does something: the sample is far from its noise
    fewer = rel_error(student(host, model, positive, positive, cfg=1.0, steps=3), want)
    normal = rel_error(student(host, model, positive, positive, cfg=1.0, scheduler="normal"), want)
    print(f"FLUX.1-schnell 4 steps vs diffusers' FluxPipeline: relative error {rel:.2e} "
          f"(sample vs its noise {moved:.2e}; 3 steps {fewer:.2e}; 'normal' scheduler {normal:.2e})")
    assert rel <= TOL, rel
    assert moved > 0.1 and fewer > 10 * TOL and normal > 10 * TOL, (moved, fewer, normal)


# --- SD3 ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sd3(host, tmp_path_factory):
    yield from reference_and_comfyui(host, tmp_path_factory, "SD3Transformer2DModel", SD3, "sd3")


@pytest.fixture(scope="module")
def sd3_conditioning():
    g = torch.Generator().manual_seed(12)
    pos, pos_pooled = torch.randn(1, 8, SD3["joint_attention_dim"], generator=g), torch.randn(1, 32, generator=g)
    neg, neg_pooled = torch.randn(1, 8, SD3["joint_attention_dim"], generator=g), torch.randn(1, 32, generator=g)
    return pos, pos_pooled, neg, neg_pooled


def sd3_pipeline_sample(reference, cond, steps, guidance_scale):
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
    pos, pos_pooled, neg, neg_pooled = cond
    pipe = StableDiffusion3Pipeline(transformer=reference, scheduler=FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER),
                                    vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
                                    tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        return pipe(prompt_embeds=pos, pooled_prompt_embeds=pos_pooled, negative_prompt_embeds=neg,
                    negative_pooled_prompt_embeds=neg_pooled, num_inference_steps=steps,
                    guidance_scale=guidance_scale, height=LATENT[2] * 8, width=LATENT[3] * 8,
                    latents=initial_noise(), output_type="latent").images


def test_sd3_schedules(host, sd3):
    """diffusers' SD3 sigmas are ComfyUI's "normal" scheduler's, not "simple"'s."""
    import comfy.model_sampling
    import comfy.supported_models
    from diffusers import FlowMatchEulerDiscreteScheduler
    _, model = sd3
    assert type(model.model.model_config) is comfy.supported_models.SD3
    ms = model.get_model_object("model_sampling")
    assert isinstance(ms, comfy.model_sampling.ModelSamplingDiscreteFlow) and ms.shift == 3.0
    theirs = diffusers_sigmas(FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER), 4)
    normal, simple = comfy_sigmas(model, "normal"), comfy_sigmas(model, "simple")
    print(f"\nSD3 sigmas (shift 3, 4 steps): diffusers {theirs.tolist()}\n  ComfyUI normal {normal.tolist()}"
          f"\n  ComfyUI simple {simple.tolist()}")
    torch.testing.assert_close(normal, theirs, rtol=0, atol=1e-5)
    assert (simple - theirs).abs().max() > 0.1


def test_sd3_student_with_cfg_equals_diffusers_sd3_pipeline(host, sd3, sd3_conditioning):
    reference, model = sd3
    steps = 4
    pos, pos_pooled, neg, neg_pooled = sd3_conditioning
    positive, negative = [[pos, {"pooled_output": pos_pooled}]], [[neg, {"pooled_output": neg_pooled}]]
    want = sd3_pipeline_sample(reference, sd3_conditioning, steps, guidance_scale=3.0)
    got = student(host, model, positive, negative, cfg=3.0, steps=steps, scheduler="normal")
    rel = rel_error(got, want)
    moved = rel_error(want, initial_noise())
    simple = rel_error(student(host, model, positive, negative, cfg=3.0, steps=steps, scheduler="simple"), want)
    fewer = rel_error(student(host, model, positive, negative, cfg=3.0, steps=steps - 1, scheduler="normal"), want)
    no_cfg = rel_error(student(host, model, positive, negative, cfg=1.0, steps=steps, scheduler="normal"), want)
    print(f"\nSD3 {steps} steps, cfg 3 vs diffusers' StableDiffusion3Pipeline: relative error {rel:.2e} "
          f"(sample vs its noise {moved:.2e}; 'simple' scheduler {simple:.2e}; {steps - 1} steps {fewer:.2e}; "
          f"cfg 1 {no_cfg:.2e})")
    assert rel <= TOL, rel
    assert moved > 0.1 and min(simple, fewer, no_cfg) > 10 * TOL, (moved, simple, fewer, no_cfg)

"""Tiny random-weight models for the tier-2 tests, built with ComfyUI's own classes (fp16 files).

Needs ComfyUI importable (a booted host). `build_tiny_models(root)` writes every model under
root/<folder>/ and keeps files a manifest says are current; tests/support/make_tiny_models.py does it from
the command line (e.g. for the front-end check's --models folder).
"""
from __future__ import annotations

import gc
import json
import os
import time
from typing import Callable, Dict, Iterable, Optional

import pack_alias  # noqa: F401  (student_teacher.*)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY_SD15 = "tiny_sd15.safetensors"
TINY_SDXL = "tiny_sdxl.safetensors"
TINY_SDXL_REFINER = "tiny_sdxl_refiner.safetensors"
TINY_CONTROLNET_SD15 = "tiny_controlnet_sd15.safetensors"
TINY_LCM_LORA_SD15 = "tiny_lcm_lora_sd15.safetensors"
TINY_LCM_LORA_SDXL = "tiny_lcm_lora_sdxl.safetensors"
TINY_IMAGE_REWARD = "tiny_image_reward.safetensors"
# CLIP-family oracles (models/oracles/): ViT-H's layouts cut down (tests/support/clip_standin.py); the kind
# comes from the name, as for the real files
TINY_PICKSCORE = "tiny_pickscore.safetensors"     # transformers layout, like PickScore_v1
TINY_HPS = "tiny_hps_v2.safetensors"              # open_clip layout, like HPS_v2.1_compressed.pt
TINY_CLIP = "tiny_clip_vit.safetensors"           # transformers layout, read as CLIP score
# LAION's aesthetic predictor's MLP (a plain torch.save state dict, as the real .pth) for TINY_CLIP's embedding
# width: Load Oracle reads it with TINY_CLIP as image_encoder
TINY_AESTHETIC = "tiny_aesthetic.pth"
# guidance-embedded students: a UNet-only file (ldm keys + time_embed.cond_proj) and an SDXL checkpoint
# keeping the layer under the name stable-diffusion.cpp meets in converted files
TINY_GUIDED_SD15_UNET = "tiny_guided_sd15_unet.safetensors"
TINY_GUIDED_SDXL = "tiny_guided_sdxl.safetensors"
# flow-matching families (diffusion_models/, vae/, text_encoders/). ComfyUI 0.3.64's detection fixes Flux's
# widths (hidden 3072, 24 heads, context 4096: comfy/model_detection.py:190-193) and Qwen-Image's (24x128
# heads, joint 3584: the QwenImageTransformer2DModel defaults), and Wan 2.1's VAE is always dim 96
# (comfy/sd.py:496): those files are full width with the fewest blocks detection allows, in torch.save
# format with every big weight a view of a short vector (_compact_state_dict), hence ".pt" (a few MB on
# disk, full size in memory). SD3's MMDiT takes its widths from the weights: genuinely tiny.
TINY_FLUX_SCHNELL = "tiny_flux_schnell.pt"
TINY_FLUX_DEV = "tiny_flux_dev.pt"
TINY_SD3 = "tiny_sd3.safetensors"
TINY_QWEN_IMAGE = "tiny_qwen_image.pt"
TINY_VAE_FLUX = "tiny_vae_flux.safetensors"              # 16-channel TAESD, Flux scale/shift
TINY_VAE_SD3 = "tiny_vae_sd3.safetensors"                # 16-channel TAESD, SD3 scale/shift
TINY_VAE_QWEN_IMAGE = "tiny_vae_qwen_image.pt"           # Wan 2.1 VAE (5-D latents)
# a full-size random CLIP-L (SD1ClipModel's), for CLIPLoader type "sd3": [1, 77, 4096] (zero-padded) and
# pooled [1, 2048] (CLIP-L's 768 + zeros), which feeds tiny_sd3 and tiny_flux_* (Flux reads pooled[:, :768])
TINY_CLIP_L = "tiny_clip_l.safetensors"
# full-width CLIP-G and T5-XXL (compact .pt): with tiny_clip_l they make the real encoder sets, so the shipped
# graphs run unchanged (DualCLIPLoader flux: clip_l + t5xxl; TripleCLIPLoader: clip_l + clip_g + t5xxl;
# DualCLIPLoader sd3: clip_l + clip_g). CLIP-G is 695M parameters (1.4 GB in memory, fp16); T5-XXL is 4.76B
# (9.5 GB in memory, ~10 s to load and ~30 s per CLIPTextEncodeFlux on 2 CPU cores): use T5 sparingly
TINY_CLIP_G = "tiny_clip_g.pt"
TINY_T5XXL = "tiny_t5xxl.pt"

# bump when a builder changes: files in a persistent TINY_MODELS_DIR are then rebuilt
BUILDER_VERSION = 3
SEED = 20240607

# --------------------------------------------------------------------------------------------

def _init_module_(module, seed: int):
    """Deterministic sane weights for a module built from ComfyUI's ops (whose
    reset_parameters does nothing, leaving torch.empty memory): every parameter first gets
    N(0, 0.02), then each torch.nn layer runs torch's own reset_parameters (Linear/Conv: kaiming
    uniform, norms: 1/0, Embedding: N(0,1))."""
    import torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in module.parameters():
                p.normal_(0.0, 0.02)
            for m in module.modules():
                for cls in type(m).__mro__:
                    if cls.__module__.startswith("torch.nn.modules") and "reset_parameters" in cls.__dict__:
                        cls.reset_parameters(m)
                        break
    return module


def _save(sd: dict, path: str, metadata: Optional[dict] = None, dtype=None):
    import safetensors.torch
    out = {}
    for k, t in sd.items():
        t = t.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[k] = t.contiguous()
    tmp = path + ".part"
    safetensors.torch.save_file(out, tmp, metadata=metadata or {})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _unet_config(base: dict, **kw) -> dict:
    cfg = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
           "legacy": False, "in_channels": 4, "use_temporal_attention": False, "use_temporal_resblock": False}
    cfg.update(base)
    cfg.update(kw)
    return cfg


# SD1.5: detected by model_channels 320, context_dim 768, conv proj; depth is free
SD15_UNET = _unet_config({"adm_in_channels": None, "model_channels": 320, "num_res_blocks": [1],
                          "transformer_depth": [1], "transformer_depth_output": [1, 1], "channel_mult": [1],
                          "transformer_depth_middle": -2, "use_linear_in_transformer": False,
                          "context_dim": 768, "num_heads": 8})
# SDXL base: detection needs transformer_depth [0,0,2,2,10,10] (3 levels x 2 res blocks), 320
# channels, context 2048, adm 2816; channel_mult, output and middle depths are free
SDXL_UNET = _unet_config({"num_classes": "sequential", "adm_in_channels": 2816, "model_channels": 320,
                          "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
                          "channel_mult": [1, 1, 1], "transformer_depth_middle": -2,
                          "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
                          "transformer_depth_output": [0] * 9})
# SDXL refiner: transformer_depth [0,0,4,4,4,4,0,0], 384 channels, context 1280, adm 2560
SDXL_REFINER_UNET = _unet_config({"num_classes": "sequential", "adm_in_channels": 2560, "model_channels": 384,
                                  "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [0, 0, 4, 4, 4, 4, 0, 0],
                                  "channel_mult": [1, 1, 1, 1], "transformer_depth_middle": -2,
                                  "use_linear_in_transformer": True, "context_dim": 1280,
                                  "num_head_channels": 64, "transformer_depth_output": [0] * 12})


def _diffusion_model_sd(model_config_cls, unet_cfg: dict, seed: int):
    """(model_config, base model) with initialised weights."""
    model_config = model_config_cls(dict(unet_cfg))
    model = model_config.get_model({})
    _init_module_(model.diffusion_model, seed)
    return model_config, model


def _taesd_sd(seed: int, latent_format, latent_channels: int = 4) -> dict:
    """TAESD weights as a checkpoint's VAE; vae_scale/vae_shift as ComfyUI's VAELoader sets them
    for taesd/taesdxl/taesd3/taef1 (the latent format's scale and shift)."""
    import torch
    import comfy.taesd.taesd
    taesd = _init_module_(comfy.taesd.taesd.TAESD(latent_channels=latent_channels), seed)
    # a random decoder's output is ~0 (all-black images every sample): widen its last layer
    # so images are mid-grey and differ from latent to latent, as an oracle needs
    last = [m for m in taesd.taesd_decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(200.0)
        last.bias.fill_(0.5)
    sd = dict(taesd.state_dict())
    sd["vae_scale"] = torch.tensor(float(latent_format.scale_factor))
    sd["vae_shift"] = torch.tensor(float(getattr(latent_format, "shift_factor", 0.0) or 0.0))
    return sd


def _cond_proj(seed: int, channels: int = 320, dim: int = 256):
    """A guidance projection big enough that w visibly changes the output."""
    import torch
    return torch.randn(channels, dim, generator=torch.Generator().manual_seed(seed)) * 0.1


def _build_checkpoint(path: str, model_config_cls, unet_cfg: dict, clip_cls, seed: int, extra=None):
    import torch
    model_config, model = _diffusion_model_sd(model_config_cls, unet_cfg, seed)
    clip = _init_module_(clip_cls(device="cpu", dtype=torch.float16), seed + 1)
    clip_sd = clip.state_dict()
    # ComfyUI's own saving conversion (what CheckpointSave writes)
    sd = model.state_dict_for_saving(clip_sd, _taesd_sd(seed + 2, model_config.latent_format))
    sd = {k: v for k, v in sd.items() if k.startswith(("model.", "cond_stage_model.", "conditioner.",
                                                       "first_stage_model."))}
    _save({**sd, **(extra or {})}, path, {"st_tiny": f"v{BUILDER_VERSION}"}, dtype=torch.float16)
    del model, clip, clip_sd, sd
    gc.collect()


def _build_sd15(path):
    import comfy.supported_models
    import comfy.sd1_clip
    _build_checkpoint(path, comfy.supported_models.SD15, SD15_UNET, comfy.sd1_clip.SD1ClipModel, SEED)


def _build_sdxl(path):
    import comfy.supported_models
    import comfy.sdxl_clip
    _build_checkpoint(path, comfy.supported_models.SDXL, SDXL_UNET, comfy.sdxl_clip.SDXLClipModel, SEED + 10)


def _build_guided_sdxl(path):
    import comfy.supported_models
    import comfy.sdxl_clip
    _build_checkpoint(path, comfy.supported_models.SDXL, SDXL_UNET, comfy.sdxl_clip.SDXLClipModel, SEED + 10,
                      {"model.diffusion_model.time_embedding.cond_proj.weight": _cond_proj(SEED + 11)})


def _build_guided_sd15_unet(path):
    """The UNet alone (what models/diffusion_models holds), with its w embedding."""
    import torch
    import comfy.supported_models
    _, model = _diffusion_model_sd(comfy.supported_models.SD15, SD15_UNET, SEED + 50)
    sd = dict(model.diffusion_model.state_dict())
    sd["time_embed.cond_proj.weight"] = _cond_proj(SEED + 51)
    _save(sd, path, {"st_tiny": f"v{BUILDER_VERSION}"}, dtype=torch.float16)
    del model


def _build_sdxl_refiner(path):
    import comfy.supported_models
    import comfy.sdxl_clip
    _build_checkpoint(path, comfy.supported_models.SDXLRefiner, SDXL_REFINER_UNET,
                      comfy.sdxl_clip.SDXLRefinerClipModel, SEED + 20)


def _build_controlnet_sd15(path):
    """comfy.cldm.cldm.ControlNet with tiny_sd15's UNet config, `control_model.*` keys."""
    import torch
    import comfy.cldm.cldm
    import comfy.ops
    import comfy.supported_models
    cfg = dict(comfy.supported_models.SD15(dict(SD15_UNET)).unet_config)
    cfg.pop("out_channels", None)
    cfg.update(hint_channels=3, operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="cpu")
    cn = _init_module_(comfy.cldm.cldm.ControlNet(**cfg), SEED + 30)
    sd = {"control_model." + k: v for k, v in cn.state_dict().items()}
    _save(sd, path, {"st_tiny": f"v{BUILDER_VERSION}"}, dtype=torch.float16)


# the LoRAs patch these diffusers-named UNet layers (kohya keys, like the real LCM-LoRA files)
LORA_TARGETS = (
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q",
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2",
    "up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k",
    "up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v",
)
LORA_TARGETS_SDXL = (
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_v",
    "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k",
    "down_blocks.2.attentions.0.transformer_blocks.0.attn2.to_v",
    "down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2",
    "down_blocks.2.attentions.1.transformer_blocks.9.attn1.to_out.0",
)
LORA_RANK = 4


def _build_lora(path, model_config_cls, unet_cfg, targets, seed):
    """A rank-4 LoRA on a few linear layers, in the kohya `lora_unet_<diffusers name>` format
    (lora_down/lora_up/alpha) of the real LCM-LoRA files; every key is checked against ComfyUI's
    own LoRA key map for that model, so LoraLoader loads all of them."""
    import torch
    import comfy.lora
    model_config = model_config_cls(dict(unet_cfg))
    with torch.device("meta"):
        model = model_config.get_model({}, device="meta")
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    sd = {}
    g = torch.Generator().manual_seed(seed)
    for target in targets:
        key = "lora_unet_" + target.replace(".", "_")
        if key not in key_map:
            raise RuntimeError(f"LoRA key {key} is not in ComfyUI's key map for {os.path.basename(path)}")
        out_f, in_f = shapes[key_map[key]][:2]
        sd[f"{key}.lora_down.weight"] = torch.randn(LORA_RANK, in_f, generator=g) * 0.05
        sd[f"{key}.lora_up.weight"] = torch.randn(out_f, LORA_RANK, generator=g) * 0.05
        sd[f"{key}.alpha"] = torch.tensor(float(LORA_RANK))
    _save(sd, path, {"st_tiny": f"v{BUILDER_VERSION}"}, dtype=torch.float16)
    del model


def _build_lcm_lora_sd15(path):
    import comfy.supported_models
    _build_lora(path, comfy.supported_models.SD15, SD15_UNET, LORA_TARGETS, SEED + 40)


def _build_lcm_lora_sdxl(path):
    import comfy.supported_models
    _build_lora(path, comfy.supported_models.SDXL, SDXL_UNET, LORA_TARGETS_SDXL, SEED + 45)


def _build_image_reward(path):
    """ImageReward(ImageRewardConfig.tiny()) with the stand-in initialisation of
    tests/support/imagereward_standin.py (a default init gives every image the same score)."""
    from student_teacher.oracle import ImageReward, ImageRewardConfig
    from imagereward_standin import key_spec_of, standin_state_dict
    spec = key_spec_of(ImageReward(ImageRewardConfig.tiny()).state_dict())
    _save(standin_state_dict(spec, seed=SEED % 1000), path, {"st_tiny": f"v{BUILDER_VERSION}"})


def _clip_builder(layout: str, seed: int):
    def build(path):
        from clip_standin import tiny_clip_state_dict
        sd = tiny_clip_state_dict(layout, os.path.join(REPO_ROOT, "tests", "data", "clip"), seed)
        _save(sd, path, {"st_tiny": f"v{BUILDER_VERSION}"})
    return build


def _build_aesthetic(path):
    """The stand-in predictor (tests/support/aesthetic_standin.py) over TINY_CLIP's projection width."""
    from aesthetic_standin import aesthetic_state_dict
    from clip_standin import TINY_DIMS
    width = TINY_DIMS[1024]  # TINY_CLIP's projection: PickScore's 1024, cut down
    # seed 5, gain 10: scores ~7..8 that differ from sample to sample (the full-size gain overshoots here)
    _save_compact(aesthetic_state_dict(width, seed=5, gain=10.0), path)


# --- flow-matching families ---------------------------------------------------------------

# what comfy.model_detection.detect_unet_config returns for the files below (the builders check it)
FLUX_DIT = {"image_model": "flux", "in_channels": 16, "patch_size": 2, "out_channels": 16, "vec_in_dim": 768,
            "context_in_dim": 4096, "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 1,
            "depth_single_blocks": 1, "axes_dim": [16, 56, 56], "theta": 10000, "qkv_bias": True,
            "guidance_embed": False}
# SD3 MMDiT: hidden 64 * depth (1 head of 64), context/pooled widths from the weights: those of
# CLIPLoader type "sd3" (what SD3's own text encoders give, T5 absent: 4096 / 768 + 1280)
SD3_DIT = {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 1, "input_size": None,
           "adm_in_channels": 2048,
           "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 64}},
           "num_patches": 32 * 32, "pos_embed_max_size": 32,  # latents up to 64x64 (512 px)
           "pos_embed_scaling_factor": None, "x_block_self_attn_layers": []}
QWEN_IMAGE_DIT = {"image_model": "qwen_image", "in_channels": 64, "num_layers": 1}
WAN21_VAE = {"dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
             "temperal_downsample": [False, True, True], "dropout": 0.0}  # comfy/sd.py's Wan 2.1 config

_COMPACT_MIN = 1 << 16  # tensors with more elements are views of a short vector


def _compact_state_dict(shapes: Dict[str, tuple], seed: int, dtype) -> dict:
    """Random weights for a full-width model that torch.save stores in a few MB: norm gains (1-D
    weights, *.scale, *.gamma) 1, other 1-D tensors (biases) 0, small weights uniform(+-1/sqrt(fan_in)),
    and every weight over _COMPACT_MIN elements a Hankel view W[o, i...] = v[o + flat(i...)] of one
    uniform(+-1/sqrt(fan_in)) vector of out + fan_in - 1 numbers (full rank; torch.save keeps a view's
    storage, offset and strides, and ComfyUI's load_torch_file reads it back with weights_only=True)."""
    import math
    import torch
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in shapes.items():
        shape = tuple(shape)
        leaf = k.rsplit(".", 1)[-1]
        if leaf in ("scale", "gamma") or (len(shape) == 1 and leaf == "weight"):
            sd[k] = torch.ones(shape, dtype=dtype)
            continue
        if len(shape) < 2:
            sd[k] = torch.zeros(shape, dtype=dtype)
            continue
        fan_in = math.prod(shape[1:])
        bound = 1.0 / math.sqrt(fan_in)
        if math.prod(shape) <= _COMPACT_MIN:
            sd[k] = ((torch.rand(shape, generator=g) * 2 - 1) * bound).to(dtype)
            continue
        v = ((torch.rand(shape[0] + fan_in - 1, generator=g) * 2 - 1) * bound).to(dtype)
        strides = [1] * len(shape)
        for d in range(len(shape) - 2, 0, -1):
            strides[d] = strides[d + 1] * shape[d + 1]
        strides[0] = 1
        sd[k] = v.as_strided(shape, strides)
    return sd


def _save_compact(sd: dict, path: str):
    import torch
    tmp = path + ".part"
    torch.save(sd, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _meta_shapes(module_factory) -> Dict[str, tuple]:
    import torch
    with torch.device("meta"):
        module = module_factory()
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _check_detected(sd: dict, expected_cls: str, expected_cfg: Optional[dict] = None):
    """ComfyUI's own detection must read `sd` as `expected_cls` (with exactly `expected_cfg`)."""
    import comfy.model_detection
    cfg = comfy.model_detection.detect_unet_config(sd, "")
    mc = comfy.model_detection.model_config_from_unet(sd, "")
    got = type(mc).__name__ if mc is not None else None
    if got != expected_cls or (expected_cfg is not None and cfg != expected_cfg):
        raise RuntimeError(f"ComfyUI detects {got} {cfg}, not {expected_cls} {expected_cfg}")


def _build_compact_dit(path, model_config_cls, dit_cfg: dict, seed: int):
    import torch
    model_config = model_config_cls(dict(dit_cfg))
    shapes = _meta_shapes(lambda: model_config.get_model({}, device="meta").diffusion_model)
    sd = _compact_state_dict(shapes, seed, torch.float16)
    _check_detected(sd, model_config_cls.__name__, dit_cfg)
    _save_compact(sd, path)


def _build_flux_schnell(path):
    import comfy.supported_models
    _build_compact_dit(path, comfy.supported_models.FluxSchnell, FLUX_DIT, SEED + 60)


def _build_flux_dev(path):
    import comfy.supported_models
    _build_compact_dit(path, comfy.supported_models.Flux, {**FLUX_DIT, "guidance_embed": True}, SEED + 61)


def _build_qwen_image(path):
    import comfy.supported_models
    _build_compact_dit(path, comfy.supported_models.QwenImage, QWEN_IMAGE_DIT, SEED + 62)


def _build_sd3(path):
    import torch
    import comfy.supported_models
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    _, model = _diffusion_model_sd(comfy.supported_models.SD3, SD3_DIT, SEED + 63)
    sd = {k: v.to(torch.float16) for k, v in model.diffusion_model.state_dict().items()}
    # pos_embed is a buffer (torch.empty, left alone by _init_module_): the fixed sin-cos table real SD3 files hold
    sd["pos_embed"] = torch.from_numpy(mmdit.get_2d_sincos_pos_embed(
        sd["pos_embed"].shape[-1], SD3_DIT["pos_embed_max_size"])).to(torch.float16).unsqueeze(0)
    _check_detected(sd, "SD3", SD3_DIT)
    _save(sd, path, {"st_tiny": f"v{BUILDER_VERSION}"}, dtype=torch.float16)
    del model


def _taesd16_builder(latent_format_name: str, seed: int):
    def build(path):
        import torch
        import comfy.latent_formats
        sd = _taesd_sd(seed, getattr(comfy.latent_formats, latent_format_name)(), latent_channels=16)
        _save(sd, path, {"st_tiny": f"v{BUILDER_VERSION}"}, dtype=torch.float16)
    return build


def _build_vae_qwen_image(path):
    """Wan 2.1's VAE (Qwen-Image's), full width: VAELoader knows it by decoder.middle.0.residual.0.gamma."""
    import torch
    import comfy.ldm.wan.vae
    shapes = _meta_shapes(lambda: comfy.ldm.wan.vae.WanVAE(**WAN21_VAE))
    _save_compact(_compact_state_dict(shapes, SEED + 70, torch.float16), path)


def _build_clip_l(path):
    """A standalone CLIP-L text encoder (text_model.* keys, as clip_l.safetensors): SD1ClipModel's,
    randomly initialised."""
    import torch
    import comfy.sd1_clip
    clip = _init_module_(comfy.sd1_clip.SD1ClipModel(device="cpu", dtype=torch.float16), SEED + 71)
    prefix = "clip_l.transformer."
    sd = {k[len(prefix):]: v for k, v in clip.state_dict().items() if k.startswith(prefix)}
    _save(sd, path, {"st_tiny": f"v{BUILDER_VERSION}"}, dtype=torch.float16)
    del clip, sd


def _compact_text_encoder_builder(module_factory, prefix: str, seed: int):
    """A standalone text-encoder file (the keys of the released clip_g / t5xxl files: ComfyUI's class's
    state dict under `prefix`), compact full-width weights."""
    def build(path):
        import torch
        shapes = _meta_shapes(lambda: module_factory()(device="meta", dtype=torch.float16))
        shapes = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
        _save_compact(_compact_state_dict(shapes, seed, torch.float16), path)
    return build


def _clip_g_cls():
    import comfy.sdxl_clip
    return comfy.sdxl_clip.SDXLClipG


def _t5xxl_cls():
    import comfy.text_encoders.sd3_clip
    return comfy.text_encoders.sd3_clip.T5XXLModel


# name -> (model folder, builder)
TINY_MODELS: Dict[str, tuple] = {
    TINY_SD15: ("checkpoints", _build_sd15),
    TINY_SDXL: ("checkpoints", _build_sdxl),
    TINY_SDXL_REFINER: ("checkpoints", _build_sdxl_refiner),
    TINY_CONTROLNET_SD15: ("controlnet", _build_controlnet_sd15),
    TINY_LCM_LORA_SD15: ("loras", _build_lcm_lora_sd15),
    TINY_LCM_LORA_SDXL: ("loras", _build_lcm_lora_sdxl),
    TINY_IMAGE_REWARD: ("image_reward", _build_image_reward),
    TINY_PICKSCORE: ("oracles", _clip_builder("transformers", 1)),
    TINY_HPS: ("oracles", _clip_builder("open_clip", 2)),
    TINY_CLIP: ("oracles", _clip_builder("transformers", 9)),  # seed 9: cosines > 0, CLIP scores not all clipped
    TINY_AESTHETIC: ("oracles", _build_aesthetic),
    TINY_GUIDED_SD15_UNET: ("diffusion_models", _build_guided_sd15_unet),
    TINY_GUIDED_SDXL: ("checkpoints", _build_guided_sdxl),
    TINY_FLUX_SCHNELL: ("diffusion_models", _build_flux_schnell),
    TINY_FLUX_DEV: ("diffusion_models", _build_flux_dev),
    TINY_SD3: ("diffusion_models", _build_sd3),
    TINY_QWEN_IMAGE: ("diffusion_models", _build_qwen_image),
    TINY_VAE_FLUX: ("vae", _taesd16_builder("Flux", SEED + 64)),
    TINY_VAE_SD3: ("vae", _taesd16_builder("SD3", SEED + 65)),
    TINY_VAE_QWEN_IMAGE: ("vae", _build_vae_qwen_image),
    TINY_CLIP_L: ("text_encoders", _build_clip_l),
    TINY_CLIP_G: ("text_encoders", _compact_text_encoder_builder(_clip_g_cls, "transformer.", SEED + 72)),
    TINY_T5XXL: ("text_encoders", _compact_text_encoder_builder(_t5xxl_cls, "transformer.", SEED + 73)),
}


def _manifest_path(models_root):
    return os.path.join(models_root, "tiny_models.json")


def _read_manifest(models_root) -> dict:
    try:
        with open(_manifest_path(models_root)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def build_tiny_models(models_root: str, names: Optional[Iterable[str]] = None,
                      log: Callable[[str], None] = lambda s: None) -> Dict[str, dict]:
    """Build tiny models under models_root/<folder>/ (skipping files the manifest says are
    current). Needs ComfyUI importable (a started host, or ComfyUI on sys.path with args.cpu
    set). Returns {name: {"path", "bytes", "seconds", "built"}}."""
    manifest = _read_manifest(models_root)
    result = {}
    for name in (list(names) if names is not None else list(TINY_MODELS)):
        folder, builder = TINY_MODELS[name]
        d = os.path.join(models_root, folder)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, name)
        entry = manifest.get(name, {})
        if os.path.isfile(path) and entry.get("version") == BUILDER_VERSION and \
                entry.get("bytes") == os.path.getsize(path):
            result[name] = {"path": path, "bytes": entry["bytes"], "seconds": entry.get("seconds"), "built": False}
            continue
        t0 = time.perf_counter()
        builder(path)
        gc.collect()
        dt = time.perf_counter() - t0
        size = os.path.getsize(path)
        manifest[name] = {"version": BUILDER_VERSION, "bytes": size, "seconds": round(dt, 2)}
        with open(_manifest_path(models_root) + ".part", "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        os.replace(_manifest_path(models_root) + ".part", _manifest_path(models_root))
        log(f"built {folder}/{name}: {size / 2**20:.1f} MiB in {dt:.1f} s")
        result[name] = {"path": path, "bytes": size, "seconds": dt, "built": True}
    return result

"""Full-size random SD1.5 weights for bench/bench_pipeline.py, in the layout each pipeline reads.

One set of weights, written twice:
- ComfyUI's layout: a single-file checkpoint (UNet + VAE + CLIP text encoder, original LDM key
  names), an LCM-LoRA-shaped LoRA for it (rank 64 on the 278 UNet layers the real LCM-LoRA
  patches), the student with that LoRA merged as a separate UNet file, and ImageReward.pt;
- diffusers' layout: the teacher's and the merged student's pipeline folders (unet/ vae/
  text_encoder/ tokenizer/ scheduler/), for the official pipeline in its side environment.

The diffusers modules are made (random, seeded) with diffusers and transformers, then converted to
the checkpoint with ComfyUI's own key maps (comfy.utils.unet_to_diffusers,
comfy.diffusers_convert.convert_vae_state_dict), so both pipelines load the same tensors. The
tokenizer is ComfyUI's copy of CLIP's (comfy/sd1_tokenizer). Runs in ComfyUI's environment after
ComfyUI has been booted (tools/comfyui_boot.py).
"""
import json
import os
import re
import shutil
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [p for p in (REPO, os.path.join(REPO, "tests", "support")) if p not in sys.path]
from clip_standin import HF_VIT_L14  # noqa: E402  (SD1.5's text encoder is CLIP ViT-L/14's text tower)
from imagereward_standin import standin_state_dict  # noqa: E402

LORA_RANK = 64
SEED = 0

SD15_UNET = dict(  # diffusers' config of runwayml/stable-diffusion-v1-5/unet
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=[320, 640, 1280, 1280],
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, act_fn="silu",
)
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
)
SD15_TEXT = dict(HF_VIT_L14["text_config"], bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
SD15_SCHEDULER = dict(
    _class_name="PNDMScheduler", num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
    beta_schedule="scaled_linear", set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
    clip_sample=False, prediction_type="epsilon",
)
TOKENIZER_CONFIG = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
                    "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                    "unk_token": "<|endoftext|>"}
# the layers LCM-LoRA (latent-consistency/lcm-lora-sdv1-5) patches: every Linear and Conv2d of the
# UNet's down, mid and up blocks (278 in SD1.5)
LORA_LAYERS = re.compile(r"^(down_blocks|mid_block|up_blocks)\.")

FILES = {
    "checkpoint": ("checkpoints", "bench_sd15.safetensors"),
    "lora": ("loras", "bench_lcm_lora_sd15.safetensors"),
    "student_unet": ("diffusion_models", "bench_sd15_lcm_merged.safetensors"),
    "oracle": ("oracles", "ImageReward.pt"),
}


def paths(work: str) -> dict:
    out = {k: os.path.join(work, "models", folder, name) for k, (folder, name) in FILES.items()}
    out["models"] = os.path.join(work, "models")
    out["teacher_diffusers"] = os.path.join(work, "diffusers", "sd15")
    out["student_diffusers"] = os.path.join(work, "diffusers", "sd15_lcm_merged")
    return out


def make(work: str, comfyui: str) -> dict:
    """Write every file under `work` (once: a finished set is reused) -> paths(work)."""
    p = paths(work)
    done = os.path.join(work, "models.done")
    if os.path.exists(done):
        return p
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    for path in p.values():
        os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    vae = AutoencoderKL(**SD15_VAE).eval()
    text = CLIPTextModel(CLIPTextConfig(**SD15_TEXT)).eval()
    text_sd = {k if k.startswith("text_model.") else f"text_model.{k}": v  # transformers 5 drops the prefix
               for k, v in text.state_dict().items()}
    lora = lcm_lora_like(unet)
    student_sd = merged(unet.state_dict(), lora)

    tokenizer = os.path.join(comfyui, "comfy", "sd1_tokenizer")
    for folder, unet_sd in ((p["teacher_diffusers"], unet.state_dict()), (p["student_diffusers"], student_sd)):
        write_diffusers(folder, unet_sd, vae, text_sd, tokenizer)
    save_file(contiguous(checkpoint_state_dict(unet.state_dict(), vae.state_dict(), text_sd)),
              p["checkpoint"])
    save_file(contiguous(lora), p["lora"])
    save_file(contiguous(student_sd), p["student_unet"])  # diffusers layout: ComfyUI's UNETLoader reads it
    torch.save(image_reward_weights(), p["oracle"])
    open(done, "w").close()
    return p


def contiguous(sd):
    return {k: v.detach().contiguous() for k, v in sd.items()}


def lcm_lora_like(unet) -> dict:
    """A rank-64 LoRA in the kohya naming LCM-LoRA's file uses (lora_unet_<diffusers name>), scaled
    so it moves each weight by about 1% of its size."""
    g = torch.Generator().manual_seed(SEED + 1)
    out = {}
    for name, module in unet.named_modules():
        if not LORA_LAYERS.match(name) or not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        w = module.weight
        fan_in = w[0].numel()
        key = "lora_unet_" + name.replace(".", "_")
        down_shape = (LORA_RANK,) + tuple(w.shape[1:])
        up_shape = (w.shape[0], LORA_RANK) + (1,) * (w.ndim - 2)
        out[key + ".lora_down.weight"] = torch.randn(down_shape, generator=g) / fan_in ** 0.5
        out[key + ".lora_up.weight"] = torch.randn(up_shape, generator=g) * 0.01 * float(w.std()) / LORA_RANK ** 0.5
        out[key + ".alpha"] = torch.tensor(float(LORA_RANK))
    return out


def merged(unet_sd: dict, lora: dict) -> dict:
    """The UNet with the LoRA merged in (W + alpha/rank * up @ down), as diffusers' fuse_lora does."""
    out = dict(unet_sd)
    names = {"lora_unet_" + n[:-len(".weight")].replace(".", "_"): n for n in unet_sd if n.endswith(".weight")}
    for key in [k for k in lora if k.endswith(".lora_down.weight")]:
        base = key[:-len(".lora_down.weight")]
        name = names[base]
        w = unet_sd[name]
        down, up = lora[key], lora[base + ".lora_up.weight"]
        scale = float(lora[base + ".alpha"]) / down.shape[0]
        out[name] = w + scale * (up.flatten(1) @ down.flatten(1)).reshape(w.shape)
    return out


def checkpoint_state_dict(unet_sd, vae_sd, text_sd) -> dict:
    """The original SD1.5 single-file layout, by ComfyUI's own diffusers -> LDM key maps."""
    import comfy.diffusers_convert
    import comfy.model_detection
    import comfy.utils
    unet_config = comfy.model_detection.unet_config_from_diffusers_unet(unet_sd)
    to_ldm = comfy.utils.unet_to_diffusers(unet_config)
    out = {f"model.diffusion_model.{ldm}": unet_sd[d] for d, ldm in to_ldm.items() if d in unet_sd}
    if len(out) != len(unet_sd):
        raise RuntimeError(f"converted {len(out)} of {len(unet_sd)} UNet tensors")
    out.update({f"first_stage_model.{k}": v for k, v in comfy.diffusers_convert.convert_vae_state_dict(vae_sd).items()})
    out.update({f"cond_stage_model.transformer.{k}": v for k, v in text_sd.items()})
    return out


def write_diffusers(folder, unet_sd, vae, text_sd, tokenizer_dir):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    save_file(contiguous(unet_sd), os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors"))
    save_file(contiguous(vae.state_dict()), os.path.join(folder, "vae", "diffusion_pytorch_model.safetensors"))
    save_file(contiguous(text_sd), os.path.join(folder, "text_encoder", "model.safetensors"))
    write_json(os.path.join(folder, "unet", "config.json"), {"_class_name": UNet2DConditionModel.__name__, **SD15_UNET})
    write_json(os.path.join(folder, "vae", "config.json"), {"_class_name": AutoencoderKL.__name__, **SD15_VAE})
    write_json(os.path.join(folder, "text_encoder", "config.json"),
               {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", **SD15_TEXT})
    write_json(os.path.join(folder, "scheduler", "scheduler_config.json"), SD15_SCHEDULER)
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json"):
        shutil.copy(os.path.join(tokenizer_dir, name), os.path.join(folder, "tokenizer", name))
    write_json(os.path.join(folder, "tokenizer", "tokenizer_config.json"), TOKENIZER_CONFIG)
    write_json(os.path.join(folder, "model_index.json"), {
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "PNDMScheduler"],
        "safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False})


def write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def image_reward_weights() -> dict:
    """ImageReward at full size with the parity tests' deterministic stand-in weights, in the original
    checkpoint's key layout (both the pack and the image-reward package load it)."""
    with open(os.path.join(REPO, "tests", "data", "imagereward", "keys.json")) as f:
        return standin_state_dict(json.load(f), seed=0)

"""Deterministic stand-in weights for the aesthetic-predictor parity test (LAION's improved aesthetic
predictor: an MLP over CLIP ViT-L/14 image embeddings).

The MLP's tensors are drawn like every stand-in of the pack: each from its own generator seeded by
(seed, key name). The CLIP is the full-size ViT-L/14 stand-in of clip_standin.py (transformers
layout, what openai/clip-vit-large-patch14's model.safetensors holds), rounded to float16 values: the
reference's `clip.model.build_model` stores its weights in float16 (OpenAI's checkpoint is float16, and
the Hugging Face file holds those same numbers in float32), so only fp16-exact stand-ins reach both
sides unchanged. Plain torch: runs in the side environment of make_aesthetic_golden.py too.
"""
import json
import math
import os

import torch

from clip_standin import MODELS, standin_state_dict
from imagereward_standin import named_generator

# (index in the reference's nn.Sequential, output width): Linear layers only, the Dropouts between them
# (indices 1, 3, 5) hold no weights
LAYERS = ((0, 1024), (2, 128), (4, 64), (6, 16), (7, 1))
# seed 4: golden scores ~6..7.4 (seed 0 puts two images below 0); GAIN: the stand-in CLIP embeds the
# golden images far closer together (cosines 0.87..0.99) than real photos, so the first layer is
# scaled up to spread their scores over ~1.5 points; BIAS: around the real predictor's typical ~5..6
SEED, GAIN, BIAS = 4, 100.0, 5.5
CLIP_MODEL = "clip_vit_l14"  # tests/data/clip/<name>/keys.json: the CLIP stand-in (its seed in MODELS)


def aesthetic_state_dict(width: int = 768, seed: int = SEED, gain: float = GAIN) -> dict:
    """The predictor's tensors for CLIP embeddings of `width` dimensions (768: ViT-L/14); `gain` scales
    the first layer (the tiny models' CLIP spreads images wider and needs less)."""
    out, fan_in = {}, width
    for at, n_out in LAYERS:
        w = torch.randn((n_out, fan_in), generator=named_generator(seed, f"layers.{at}.weight")) / math.sqrt(fan_in)
        b = torch.randn((n_out,), generator=named_generator(seed, f"layers.{at}.bias"))
        out[f"layers.{at}.weight"] = gain * w if at == 0 else w
        out[f"layers.{at}.bias"] = BIAS + 0.1 * b if n_out == 1 else 0.02 * b
        fan_in = n_out
    return out


def fp16_exact(sd: dict) -> dict:
    return {k: v.half().float() if v.is_floating_point() else v for k, v in sd.items()}


def clip_state_dict(clip_data_dir: str) -> dict:
    """The ViT-L/14 stand-in in transformers layout, fp16-exact (see the module doc)."""
    with open(os.path.join(clip_data_dir, CLIP_MODEL, "keys.json"), encoding="utf-8") as f:
        spec = json.load(f)
    return fp16_exact(standin_state_dict(spec, MODELS[CLIP_MODEL]["seed"]))

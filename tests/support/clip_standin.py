"""Deterministic stand-in weights and golden inputs for the CLIP-family parity tests.

The real checkpoints (0.4 to 2.5 billion parameters) cannot be shipped or downloaded in CI, so
parity with the reference implementations is checked on weights made here, at full size: every
tensor drawn from its own generator seeded by (seed, key name), so a tensor depends on nothing but
its name, shape and the seed -- not on which implementation builds the model.
`tests/support/make_clip_golden.py` feeds them to open_clip and transformers in a side environment and
writes tests/data/clip/<model>/; the pack's oracles must reproduce those scores.

Each stand-in is made in its reference's own key layout (transformers or open_clip) and read by
the pack from that layout, exactly as a user's file would be. Plain torch: runs in the side
environment too.
"""
import json
import math
import os
import re

import torch

from imagereward_standin import GOLDEN_PROMPTS, named_generator

# two more prompts for the text cleaning: curly quotes and an HTML entity (open_clip's ftfy and
# html.unescape act on them, Hugging Face's tokenizer does not), full-width letters and a ligature
GOLDEN_CLIP_PROMPTS = GOLDEN_PROMPTS + ["don’t “quote” me &amp; you", "ＦＵＬＬ width ﬁne art"]

HF_VIT_L14 = {  # openai/clip-vit-large-patch14's config.json
    "text_config": dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                        projection_dim=768),
    "vision_config": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                          image_size=224, patch_size=14, hidden_act="quick_gelu", projection_dim=768),
    "projection_dim": 768,
}
HF_VIT_H14 = {  # laion/CLIP-ViT-H-14-laion2B-s32B-b79K's config.json, the model PickScore_v1 fine-tunes
    "text_config": dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                        num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
                        projection_dim=1024),
    "vision_config": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                          image_size=224, patch_size=14, hidden_act="gelu", projection_dim=1024),
    "projection_dim": 1024,
}
# name -> what the reference is, how the pack reads it, and the stand-in seed (ViT-L/14's is 3: with
# seed 0 every golden cosine is negative, so every CLIP score would be clipped to 0 and prove little)
MODELS = {
    "clip_vit_l14": {"layout": "transformers", "kind": "CLIP score", "hf_config": HF_VIT_L14, "seed": 3,
                     "reference": "transformers CLIPModel + CLIPProcessor (torchmetrics' CLIPScore recipe)"},
    "pickscore": {"layout": "transformers", "kind": "PickScore", "hf_config": HF_VIT_H14, "seed": 0,
                  "reference": "transformers CLIPModel + CLIPProcessor, PickScore's scoring code"},
    "hpsv2": {"layout": "open_clip", "kind": "HPSv2", "open_clip_model": "ViT-H-14", "seed": 0,
              "reference": "open_clip ViT-H-14, HPSv2's img_score recipe"},
    "clip_vit_bigg14": {"layout": "open_clip", "kind": "CLIP score", "open_clip_model": "ViT-bigG-14", "seed": 0,
                        "reference": "open_clip ViT-bigG-14 (the paper's CLIP score)"},
}
LOGIT_SCALE = math.log(100.0)


def standin_tensor(name: str, shape, seed: int) -> torch.Tensor:
    """One tensor, in either key layout: LayerNorm gains near 1, small biases, embedding tables
    and the class token large enough that images and prompts stay apart through 24-48 blocks."""
    shape = tuple(int(s) for s in shape)
    if name == "logit_scale":
        return torch.tensor(LOGIT_SCALE)
    z = torch.randn(shape, generator=named_generator(seed, name), dtype=torch.float32)
    leaf = name.rsplit(".", 1)[-1]
    norm = any(tag in name for tag in ("ln_", "layer_norm", "layernorm", "layrnorm"))
    if len(shape) == 1:
        if "class_embedding" in name:
            return 0.5 * z
        return 1.0 + 0.1 * z if norm and leaf == "weight" else 0.02 * z
    if "embedding" in name and "patch" not in name and "conv" not in name:  # token and position tables
        return 0.5 * z
    return z / math.sqrt(math.prod(shape[1:]))


def standin_state_dict(key_spec, seed: int = 0) -> dict:
    """key_spec: {key: {"shape": [...], ...}} -> {key: tensor}."""
    return {k: standin_tensor(k, v["shape"], seed) for k, v in key_spec.items()}


# tiny models for fast tests, cut from the real ViT-H key lists (PickScore's transformers layout,
# HPSv2's open_clip layout, as the references wrote them into tests/data/clip/*/keys.json): the
# first two blocks of each tower, every size scaled down (width 1280 or 1024 -> 64, 3 x width ->
# 192, 4 x width -> 256, 16 x 16 patches of 14 px -> 4 x 4 of 8 px, so 32 px images)
TINY_DIMS = {1280: 64, 1024: 64, 3840: 192, 3072: 192, 5120: 256, 4096: 256, 257: 17, 14: 8}
TINY_SOURCES = {"transformers": "pickscore", "open_clip": "hpsv2"}


def tiny_key_spec(full_spec: dict, blocks: int = 2) -> dict:
    """A full ViT-H key spec {key: {"shape": ...}} cut down to `blocks` blocks per tower and TINY_DIMS."""
    index = re.compile(r"(?:resblocks|layers)\.(\d+)\.")
    out = {}
    for key, value in full_spec.items():
        m = index.search(key)
        if m and int(m.group(1)) >= blocks:
            continue
        out[key] = {"shape": [TINY_DIMS.get(int(s), int(s)) for s in value["shape"]]}
    return out


def tiny_clip_state_dict(layout: str, data_dir: str, seed: int = 0) -> dict:
    """A tiny CLIP of ViT-H's layout ("transformers" or "open_clip") with stand-in weights."""
    with open(os.path.join(data_dir, TINY_SOURCES[layout], "keys.json"), encoding="utf-8") as f:
        return standin_state_dict(tiny_key_spec(json.load(f)), seed)

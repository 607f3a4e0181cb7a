"""Deterministic stand-in weights and golden inputs for ImageReward parity tests.

The real ImageReward.pt (1.8 GB) cannot be shipped or downloaded in CI, so parity with the
original `image-reward` package is checked on weights this module makes: every tensor is
drawn from its own generator, seeded by (seed, key name), so the weights depend on nothing but
(key, shape, seed) — not on key order or on which implementation builds the model.

    from imagereward_standin import standin_state_dict, golden_images, GOLDEN_PROMPTS
    sd = standin_state_dict(key_spec, seed=0)

`tests/support/make_imagereward_golden.py` feeds these weights and inputs to the ORIGINAL package in a
side environment and writes tests/data/imagereward/; the pack's oracle must reproduce its scores.
Plain torch + numpy: runs in that side environment too.
"""
import hashlib
import math

import numpy as np
import torch

GOLDEN_PROMPTS = [
    "a photo of a cat",
    "Astronaut in a jungle, cold color palette, muted colors, detailed, 8k",
    "",
    "an extremely long prompt " + " ".join(f"token{i}" for i in range(60)),
    "Crème brûlée on a café table — naïve façade, 東京",
]


def named_generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{int(seed)}/{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def standin_tensor(name: str, shape, dtype: str, seed: int) -> torch.Tensor:
    """One tensor: sizes that keep activations O(1) through a deep ViT/BERT, so scores differ
    from image to image and prompt to prompt (a default init gives every image one score)."""
    shape = tuple(int(s) for s in shape)
    if dtype == "int64":  # BERT's position_ids buffer: 0..n-1
        return torch.arange(shape[-1], dtype=torch.int64).expand(*shape).clone()
    z = torch.randn(shape, generator=named_generator(seed, name), dtype=torch.float32)
    leaf = name.rsplit(".", 1)[-1]
    if len(shape) == 1:
        normish = "norm" in name.lower() or leaf == "gamma"
        return 1.0 + 0.1 * z if normish and leaf != "bias" else 0.02 * z
    if "embeddings" in name and "patch" not in name:  # token / position tables
        return 0.5 * z
    if name.endswith("pos_embed") or name.endswith("cls_token"):
        return 0.2 * z
    return z / math.sqrt(math.prod(shape[1:]))


def standin_state_dict(key_spec, seed: int = 0) -> dict:
    """key_spec: {key: {"shape": [...], "dtype": "float32" | "int64"}} -> {key: tensor}."""
    return {k: standin_tensor(k, v["shape"], v["dtype"], seed) for k, v in key_spec.items()}


def key_spec_of(state_dict) -> dict:
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
            for k, v in state_dict.items()}


def golden_images():
    """uint8 RGB arrays (H, W, 3): smooth + noise at several sizes and aspect ratios, plus two
    hard cases for resizing (a one-pixel checkerboard and saturated colour noise)."""
    rs = np.random.RandomState(20241122)
    out = []
    for h, w in [(512, 512), (256, 320), (427, 640), (96, 64)]:
        yy, xx = np.mgrid[0:h, 0:w]
        ramp = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], axis=-1)
        out.append(((0.6 * ramp + 0.4 * rs.rand(h, w, 3)) * 255).astype(np.uint8))
    yy, xx = np.mgrid[0:300, 0:200]
    checker = ((xx + yy) % 2 * 255).astype(np.uint8)
    out.append(np.stack([checker, 255 - checker, checker], axis=-1))
    out.append((rs.rand(333, 250, 3) > 0.5).astype(np.uint8) * 255)
    return out

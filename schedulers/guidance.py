"""Guidance-embedded students: the guidance scale w as an input of the UNet.

Guided distillation (Meng et al., "On Distillation of Guided Diffusion Models", CVPR 2023) trains one
student for a range of w: w goes through a Fourier embedding, is projected by a layer of its own
(diffusers `time_embedding.cond_proj`, [320, 256] for SD1.5) and is added to the sinusoidal timestep
embedding before the time MLP. The LCM students (Luo et al., "Latent Consistency Models", 2023),
e.g. LCM-Dreamshaper-v7, are distilled this way.

w conventions: diffusers' LCM pipelines embed `w - 1`; the original LCM code embeds `w` (its w = 8
is diffusers' 9). Both are offered; "diffusers" is the default.
"""
import math
from typing import List, Sequence

import torch

from .errors import InputError, require_finite

W_CONVENTIONS = ("diffusers", "original")
W_RANGE = (0.0, 50.0)  # guided students are trained on w of a few units; far outside, the embedding is noise


def guidance_embedding(w, dim: int = 256, convention: str = "diffusers") -> torch.Tensor:
    """[B] guidance scales (keep them float64 or Python floats) -> [B, dim] float32: w (minus 1 in diffusers' convention) times 1000, then
    sin of the first half of the frequencies exp(-ln(10000) i / (dim/2 - 1)), cos of the same
    (diffusers' get_guidance_scale_embedding), zero-padded when dim is odd."""
    if convention not in W_CONVENTIONS:
        raise InputError("w_convention", f"unknown convention {convention!r}", f"choose one of {W_CONVENTIONS}")
    # w - 1 in double precision, then float32, as diffusers' torch.tensor(guidance_scale - 1): rounding w to
    # float32 first moves the embedding of w = 2.1, 8.6, ... by up to 5e-4
    w = torch.as_tensor(w, dtype=torch.float64).reshape(-1)
    w = (w - 1.0 if convention == "diffusers" else w).to(torch.float32) * 1000.0
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    args = w[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 else emb


def parse_w(text: str, name: str = "w") -> List[float]:
    """'8' or '3, 5, 7, 9' -> [8.0] / [3.0, 5.0, 7.0, 9.0]; '' -> [] (the model's own default)."""
    values = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise InputError(name, f"{part!r} is not a number", "give guidance scales such as 8 or 3, 5, 7, 9") from None
        if not W_RANGE[0] <= require_finite(name, value) <= W_RANGE[1]:
            raise InputError(name, f"w = {part} is outside {W_RANGE[0]:g}..{W_RANGE[1]:g}",
                             "give guidance scales in that range, such as 8 or 3, 5, 7, 9")
        values.append(value)
    return values


def w_per_sample(ws: Sequence[float], batch_index: Sequence[int]) -> List[float]:
    """Each sample's w: the list cycled over the batch index, so a sample's w depends only on its
    own index (and it is the same whichever other samples share its batch)."""
    return [float(ws[int(b) % len(ws)]) for b in batch_index]


def w_rows(w: torch.Tensor, rows: int) -> torch.Tensor:
    """The per-sample w of a batch of B samples for a model call over `rows` rows: ComfyUI stacks
    the conditional and unconditional chunks of the same B samples (cfg > 1), in that order."""
    if rows % w.shape[0]:
        raise InputError("w", f"{w.shape[0]} per-sample w values for a model call over {rows} rows",
                         "give w per sample of the batch the student samples")
    return w.repeat(rows // w.shape[0])

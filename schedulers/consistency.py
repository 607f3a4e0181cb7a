"""Consistency-model (LCM / CD) sampling maths, independent of any host.

Timesteps follow diffusers' LCMScheduler exactly; the boundary condition is the LCM
one (c_skip, c_out) applied to the VP-scaled latent, as in the LCM reference code.
"""
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .errors import InputError, require_steps

SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0


def lcm_timesteps(steps: int, original_steps: int = 50, strength: float = 1.0,
                  num_train_timesteps: int = 1000) -> list:
    """The n LCM inference timesteps: evenly spaced indices into the distillation grid
    t = k-1, 2k-1, ... (k = num_train_timesteps // original_steps), truncated by strength."""
    steps = require_steps("steps", steps)
    if not 0.0 < strength <= 1.0:
        raise InputError("denoise", f"got {strength}, outside (0, 1]", "use a denoise above 0 and at most 1")
    k = num_train_timesteps // original_steps
    grid = (np.arange(1, int(original_steps * strength) + 1) * k - 1)[::-1]
    if not len(grid):
        raise InputError("denoise", f"denoise {strength:g} leaves none of the {original_steps}-step distillation "
                         "grid", f"raise denoise to at least {1 / original_steps:g}")
    if steps > len(grid):
        raise InputError("steps", f"{steps} consistency steps need at least {steps} of the "
                         f"{original_steps}-step distillation grid, but denoise {strength} leaves {len(grid)}",
                         f"use at most {len(grid)} steps or raise denoise")
    idx = np.floor(np.linspace(0, len(grid), num=steps, endpoint=False)).astype(np.int64)
    return [int(t) for t in grid[idx]]


def trailing_timesteps(steps: int, strength: float = 1.0, num_train_timesteps: int = 1000) -> list:
    """'trailing' spacing (diffusers), as SDXL-Turbo / ADD students are sampled: n steps over
    the first strength-fraction of the timestep axis, starting at its top (999 at strength 1)."""
    steps = require_steps("steps", steps)
    if not 0.0 < strength <= 1.0:
        raise InputError("denoise", f"got {strength}, outside (0, 1]", "use a denoise above 0 and at most 1")
    top = num_train_timesteps * strength
    ts = [max(int(t), 0) for t in np.round(np.arange(top, 0, -top / steps))[:steps] - 1]
    distinct = len(set(ts))
    if distinct < steps:  # more steps than timesteps left: some would run twice, for nothing
        raise InputError("steps", f"{steps} steps do not fit in the {distinct} timesteps denoise {strength:g} "
                         "leaves", f"use at most {distinct} steps or raise denoise")
    return ts


def boundary_scalings(timestep):
    """LCM boundary condition: c_skip -> 1 and c_out -> 0 as t -> 0 (works on floats or tensors)."""
    scaled = timestep * TIMESTEP_SCALING
    c_skip = SIGMA_DATA ** 2 / (scaled ** 2 + SIGMA_DATA ** 2)
    c_out = scaled / (scaled ** 2 + SIGMA_DATA ** 2) ** 0.5
    return c_skip, c_out


def consistency_denoised(x0_pred: torch.Tensor, x_ve: torch.Tensor, sigma: torch.Tensor,
                         timestep: torch.Tensor) -> torch.Tensor:
    """Apply the boundary condition to a model's x0 prediction.

    x_ve is the variance-exploding latent x0 + sigma*eps (what k-diffusion style samplers
    carry); the LCM formula uses the VP latent sqrt(abar)*x0 + sqrt(1-abar)*eps, which is
    x_ve / sqrt(1 + sigma^2)."""
    shape = (-1,) + (1,) * (x0_pred.ndim - 1)
    sigma = sigma.reshape(shape).to(x0_pred.dtype)
    c_skip, c_out = boundary_scalings(timestep.reshape(shape).to(x0_pred.dtype))
    return c_out * x0_pred + c_skip * x_ve / torch.sqrt(1.0 + sigma ** 2)


def consistency_sample(denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                       x: torch.Tensor, sigmas: Sequence,
                       renoise: Callable[[int], torch.Tensor],
                       callback: Optional[Callable[[int, torch.Tensor, torch.Tensor], None]] = None) -> torch.Tensor:
    """Multistep consistency sampling: jump to x0, re-noise to the next sigma, repeat.

    `renoise(i)` returns the unit noise for the jump after step i; drawing it per sample
    keeps each sample independent of its batch."""
    for i in range(len(sigmas) - 1):
        x0 = denoise(x, sigmas[i])
        if callback is not None:
            callback(i, x0, x)
        x = x0 + sigmas[i + 1] * renoise(i) if float(sigmas[i + 1]) > 0 else x0
    return x

"""Rollback: where on the teacher's noise schedule a student sample is sent back to.

Two parameterisations, both on the teacher's own scheduler:
- `strength`: a fraction of the timestep axis, exactly ComfyUI KSampler's `denoise` (and
  diffusers img2img `strength`, which the paper's code uses): a schedule of int(R/strength)
  steps of which the last R run.
- `vp`: Algorithm 1 of the paper, x = sqrt(1-s)*x0 + sqrt(s)*z: the noise level whose signal-to-noise
  ratio is (1-s)/s in the model's own frame (`vp_sigma`), then R steps of the scheduler's own spacing
  below it. The same s is the same noise level in every model family.

A `schedule(n)` callable gives the scheduler's full descending n-step sigmas ending in 0
(the host computes it; ComfyUI's KSampler sigmas for the chosen sampler and scheduler).
"""
import math
from typing import Callable

import torch

from .errors import InputError, require_fraction, require_steps

ROLLBACK_MODES = ("strength", "vp")
# How a model's noisy state is written (ComfyUI's model sampling): "ve" x0 + sigma*z (EPS, V, X0 models:
# SD1.5, SDXL), "flow" (1-sigma)*x0 + sigma*z with sigma in [0, 1] (CONST: FLUX, SD3, Qwen-Image)
FRAMES = ("ve", "flow")
Schedule = Callable[[int], torch.Tensor]


def vp_sigma(s: float, frame: str = "ve") -> float:
    """The sigma, in the model's frame, of x = sqrt(1-s)*x0 + sqrt(s)*z: the state whose signal-to-noise
    ratio is (1-s)/s. ve: x/sqrt(1-s) = x0 + sqrt(s/(1-s))*z. flow: x/(sqrt(s)+sqrt(1-s)) =
    (1-t)*x0 + t*z with t = sqrt(s)/(sqrt(s)+sqrt(1-s))."""
    s = require_fraction("rollback", s)
    if frame == "flow":
        return math.sqrt(s) / (math.sqrt(s) + math.sqrt(1.0 - s))
    if frame != "ve":
        raise ValueError(f"unknown frame {frame!r}")
    return math.inf if s >= 1.0 else math.sqrt(s / (1.0 - s))


def vp_level(sigma: float, frame: str = "ve") -> float:
    """The inverse of vp_sigma: the s of Algorithm 1 whose state a sigma of this frame is."""
    if frame == "flow":
        return sigma * sigma / (sigma * sigma + (1.0 - sigma) ** 2)
    return sigma * sigma / (1.0 + sigma * sigma)


def snr(sigma: float, frame: str) -> float:
    """Signal-to-noise ratio (signal scale / noise scale)^2 of a state at `sigma` in `frame`."""
    signal = 1.0 - sigma if frame == "flow" else 1.0
    return signal * signal / (sigma * sigma)


def strength_sigmas(schedule: Schedule, steps: int, strength: float) -> torch.Tensor:
    """The R+1 sigmas KSampler(steps=R, denoise=strength) runs."""
    steps = require_steps("teacher_steps", steps)
    strength = require_fraction("rollback", strength)
    if strength > 0.9999:
        return schedule(steps)
    return schedule(int(steps / strength))[-(steps + 1):]


def vp_sigmas(schedule: Schedule, steps: int, s: float, frame: str = "ve",
              max_schedule_steps: int = 10000) -> torch.Tensor:
    """Start exactly at vp_sigma(s, frame) (capped at the schedule's top), then follow the tail of the
    scheduler's schedule whose first kept sigma is nearest to that start."""
    steps = require_steps("teacher_steps", steps)
    start = vp_sigma(s, frame)
    full = schedule(steps)
    if start >= float(full[0]):
        return full
    best, best_gap = None, math.inf
    n = steps
    while n <= max_schedule_steps:
        tail = schedule(n)[-(steps + 1):]
        gap = abs(math.log(float(tail[0])) - math.log(start))
        if gap < best_gap:
            best, best_gap = tail, gap
        if float(tail[0]) < start:
            break  # tails only shrink from here on
        n += max(1, n // 50)
    if best is None or float(best[1]) >= start:
        raise InputError("rollback", f"the scheduler has no {steps}-step tail below sigma {start:.4f}",
                         "use a larger rollback or fewer teacher steps")
    out = best.clone()
    out[0] = start
    return out


def rollback_sigmas(mode: str, schedule: Schedule, steps: int, value: float, frame: str = "ve") -> torch.Tensor:
    """The teacher's sigmas for refine; `frame` is the teacher's (vp only: strength is a fraction of its
    own timestep axis, whatever the frame)."""
    if mode == "strength":
        return strength_sigmas(schedule, steps, value)
    if mode == "vp":
        return vp_sigmas(schedule, steps, value, frame)
    raise InputError("rollback_mode", f"unknown mode {mode!r}", f"choose one of {ROLLBACK_MODES}")

"""Rollback: where on the teacher's noise schedule a student sample is sent back to.

Two parameterisations, both on the teacher's own scheduler:
- `strength`: a fraction of the timestep axis, exactly ComfyUI KSampler's `denoise` (and
  diffusers img2img `strength`, which the paper's code uses): a schedule of int(R/strength)
  steps of which the last R run.
- `vp`: Algorithm 1 of the paper, x = sqrt(1-s)*x0 + sqrt(s)*z, i.e. a start at
  sigma = sqrt(s/(1-s)), then R steps of the scheduler's own spacing below it.

A `schedule(n)` callable gives the scheduler's full descending n-step sigmas ending in 0
(the host computes it; ComfyUI's KSampler sigmas for the chosen sampler and scheduler).
"""
import math
from typing import Callable

import torch

from .errors import InputError, require_fraction, require_steps

ROLLBACK_MODES = ("strength", "vp")
Schedule = Callable[[int], torch.Tensor]


def vp_sigma(s: float) -> float:
    """Noise level of x = sqrt(1-s)*x0 + sqrt(s)*z in the variance-exploding frame x0 + sigma*z."""
    s = require_fraction("rollback", s)
    return math.inf if s >= 1.0 else math.sqrt(s / (1.0 - s))


def strength_sigmas(schedule: Schedule, steps: int, strength: float) -> torch.Tensor:
    """The R+1 sigmas KSampler(steps=R, denoise=strength) runs."""
    steps = require_steps("teacher_steps", steps)
    strength = require_fraction("rollback", strength)
    if strength > 0.9999:
        return schedule(steps)
    return schedule(int(steps / strength))[-(steps + 1):]


def vp_sigmas(schedule: Schedule, steps: int, s: float, max_schedule_steps: int = 10000) -> torch.Tensor:
    """Start exactly at sigma = sqrt(s/(1-s)) (capped at the schedule's top), then follow the
    tail of the scheduler's schedule whose first kept sigma is nearest to that start."""
    steps = require_steps("teacher_steps", steps)
    start = vp_sigma(s)
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


def rollback_sigmas(mode: str, schedule: Schedule, steps: int, value: float) -> torch.Tensor:
    if mode == "strength":
        return strength_sigmas(schedule, steps, value)
    if mode == "vp":
        return vp_sigmas(schedule, steps, value)
    raise InputError("rollback_mode", f"unknown mode {mode!r}", f"choose one of {ROLLBACK_MODES}")

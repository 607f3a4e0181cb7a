"""Rollback noise as a node of its own, for graphs built on core SamplerCustom."""
import math

import comfy.samplers

from ..schedulers.batching import batch_indices
from ..schedulers.rollback import ROLLBACK_MODES, rollback_sigmas
from .comfy_glue import initial_noise, ksampler_schedule
from .common import CATEGORY, SEED


def add_rollback_noise(model, latent, mode, value, steps, sampler_name, scheduler, seed):
    """(noised LATENT, SIGMAS): the student sample sent back to the first sigma, the way
    ComfyUI's samplers add noise, and the teacher's sigmas from there."""
    sigmas = rollback_sigmas(mode, ksampler_schedule(model, sampler_name, scheduler), steps, value)
    ms = model.get_model_object("model_sampling")
    x0 = latent["samples"]
    noise = initial_noise(x0, seed, batch_indices(latent))
    at_top = math.isclose(float(ms.sigma_max), float(sigmas[0]), rel_tol=1e-5) or float(sigmas[0]) > float(ms.sigma_max)
    out = dict(latent)
    out["samples"] = ms.noise_scaling(sigmas[0], noise, x0.clone(), at_top)
    return out, sigmas


class RollbackNoise:
    DESCRIPTION = ("Adds rollback noise to the student's samples and outputs the teacher's SIGMAS from "
                   "that noise level, for core SamplerCustom (set its add_noise to disable). Same maths as "
                   "Teacher Improve's refine.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("LATENT", "SIGMAS")
    RETURN_NAMES = ("noised_latent", "sigmas")
    OUTPUT_TOOLTIPS = ("The student samples at the rollback noise level.",
                       "The teacher's schedule from that level down to 0.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": ("LATENT", {"tooltip": "The student's samples."}),
            "model": ("MODEL", {"tooltip": "The teacher, whose noise schedule the sigmas follow."}),
            "rollback_mode": (list(ROLLBACK_MODES), {"default": "strength",
                                                     "tooltip": "strength: like KSampler denoise. vp: "
                                                                "x = sqrt(1-s) x0 + sqrt(s) z."}),
            "rollback": ("FLOAT", {"default": 0.5, "min": 0.01, "max": 1.0, "step": 0.01,
                                   "tooltip": "Rollback amount in (0, 1]."}),
            "steps": ("INT", {"default": 12, "min": 1, "max": 1000, "tooltip": "Teacher steps to run."}),
            "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"default": "uni_pc",
                                                                 "tooltip": "The sampler SamplerCustom will "
                                                                            "use (some samplers change the "
                                                                            "schedule)."}),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "normal",
                                                               "tooltip": "The teacher's scheduler."}),
            "seed": SEED,
        }}

    def run(self, latent, model, rollback_mode, rollback, steps, sampler_name, scheduler, seed):
        return add_rollback_noise(model, latent, rollback_mode, rollback, steps, sampler_name, scheduler, seed)

"""Rollback noise as a node of its own, for graphs built on core SamplerCustom."""
from ..schedulers.batching import batch_indices
from ..schedulers.record import bare_records, records_of
from ..schedulers.rollback import rollback_sigmas
from .model_checks import check_model_fits, model_frame
from .noise import noised_latent, rollback_noise, sampler_custom_start
from .sampling import ksampler_schedule
from . import inputs
from .common import CATEGORY


def add_rollback_noise(model, latent, mode, value, steps, sampler_name, scheduler, seed):
    """(noised LATENT, SIGMAS): the student samples sent back to the first sigma with the same
    noise Teacher Improve's refine draws, and the teacher's sigmas from there."""
    records = records_of(latent)
    check_model_fits(model, "model", latent["samples"], "latent", records)
    sigmas = rollback_sigmas(mode, ksampler_schedule(model, sampler_name, scheduler), steps, value,
                             model_frame(model))
    x0 = latent["samples"]
    records = records or bare_records(batch_indices(latent))
    noise = rollback_noise(seed, [r.batch_index for r in records], x0.shape[1:], [r.noise_round for r in records])
    start = sampler_custom_start(model, noised_latent(model, x0, noise, sigmas[0]), sigmas[0])
    return {**latent, "samples": start}, sigmas


class RollbackNoise:
    DESCRIPTION = ("Adds rollback noise to the student's samples and outputs the teacher's SIGMAS from "
                   "that noise level, for core SamplerCustom (set its add_noise to disable and give it the "
                   "same sampler). Same noise and sigmas as Teacher Improve's refine with the same seed, in every "
                   "family: on flow models (FLUX, SD3, Qwen-Image) the latent is divided by (1 - sigma), because "
                   "SamplerCustom scales its start by that factor there.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("LATENT", "SIGMAS")
    RETURN_NAMES = ("noised_latent", "sigmas")
    OUTPUT_TOOLTIPS = ("The student samples at the rollback noise level, as SamplerCustom (add_noise off) takes them.",
                       "The teacher's schedule from that level down to 0.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": ("LATENT", {"tooltip": "The student's samples."}),
            "model": ("MODEL", {"tooltip": "The teacher, whose noise schedule the sigmas follow."}),
            "rollback_mode": inputs.rollback_mode("strength: fraction of the timestep axis, like KSampler denoise. "
                                                  "vp: x = sqrt(1-s) x0 + sqrt(s) z (Algorithm 1)."),
            "rollback": inputs.rollback("How far back towards noise the samples go (as Teacher Improve's refine)."),
            "steps": inputs.teacher_steps("The teacher steps SamplerCustom will run from the rollback level."),
            "sampler_name": inputs.sampler_name("The sampler SamplerCustom will use (its schedule sets the sigmas)."),
            "scheduler": inputs.scheduler("The scheduler whose sigmas the teacher follows from the rollback level."),
            "seed": inputs.seed("With each sample's batch index, the rollback noise Z (a stream of its own, as "
                                "Teacher Improve's)."),
        }}

    def run(self, latent, model, rollback_mode, rollback, steps, sampler_name, scheduler, seed):
        return add_rollback_noise(model, latent, rollback_mode, rollback, steps, sampler_name, scheduler, seed)

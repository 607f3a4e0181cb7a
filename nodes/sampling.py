"""Running ComfyUI's samplers for the pack: a scheduler's sigmas, sampling with given sigmas (progress
and previews as ComfyUI's own nodes show them), and the interrupt check between phases."""
import torch

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview

from ..schedulers.errors import InputError


def ksampler_schedule(model, sampler_name: str, scheduler: str):
    """schedule(n): the sigmas ComfyUI's KSampler runs for n steps of this sampler/scheduler."""
    def schedule(n: int) -> torch.Tensor:
        sigmas = comfy.samplers.KSampler(model, steps=n, device="cpu", sampler=sampler_name,
                                         scheduler=scheduler).sigmas.float().cpu()
        if not torch.isfinite(sigmas).all():  # e.g. kl_optimal for 1 step (0/0 in ComfyUI's formula)
            raise InputError("scheduler", f"{scheduler} gives invalid sigmas ({sigmas.tolist()}) for {n} steps",
                             "use another scheduler (normal, karras, ...) or more steps")
        return sigmas
    return schedule


def sample_with_sigmas(model, noise, cfg, sampler, sigmas, positive, negative, latent, noise_mask=None, seed=None):
    callback = latent_preview.prepare_callback(model, len(sigmas) - 1)
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas.to(model.load_device), positive,
                                      negative, latent, noise_mask=noise_mask, callback=callback,
                                      disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)


def check_interrupt():
    comfy.model_management.throw_exception_if_processing_interrupted()

"""Small bridges between the host-free core and ComfyUI's own objects."""
import inspect

import torch

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview

from ..schedulers.batching import take_rows
from ..schedulers.consistency import consistency_denoised, consistency_sample
from ..schedulers.noise import PerSampleNoise


class ConsistencyModelSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
    """The model's own discrete schedule with the LCM boundary condition on top, so a
    plain LCM checkpoint or SD + LCM-LoRA samples correctly with no extra nodes."""

    def calculate_denoised(self, sigma, model_output, model_input):
        x0 = super().calculate_denoised(sigma, model_output, model_input)
        return consistency_denoised(x0, model_input, sigma, self.timestep(sigma))


def with_consistency_sampling(model):
    m = model.clone()
    m.add_object_patch("model_sampling", ConsistencyModelSampling(model.model.model_config))
    return m


def sigmas_at_timesteps(model, timesteps) -> torch.Tensor:
    ms = model.get_model_object("model_sampling")
    sig = ms.sigma(torch.tensor(timesteps, dtype=torch.float32)).float().cpu()
    return torch.cat([sig, sig.new_zeros(1)])


def ksampler_schedule(model, sampler_name: str, scheduler: str):
    """schedule(n): the sigmas ComfyUI's KSampler runs for n steps of this sampler/scheduler."""
    def schedule(n: int) -> torch.Tensor:
        return comfy.samplers.KSampler(model, steps=n, device="cpu", sampler=sampler_name,
                                       scheduler=scheduler).sigmas.float().cpu()
    return schedule


def initial_noise(latent_samples, seed, batch_index):
    """ComfyUI's own per-sample noise: sample k gets the k-th draw of `seed`, whatever its batch."""
    return comfy.sample.prepare_noise(latent_samples, seed, list(batch_index))


def consistency_sampler(seed, batch_index, sample_shape):
    """A SAMPLER running multistep consistency sampling with per-sample re-noising."""
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = extra_args or {}
        s_in = x.new_ones([x.shape[0]])
        renoise = PerSampleNoise(seed, batch_index, sample_shape, x.dtype, x.device)

        def report(i, x0, xi):
            if callback is not None:
                callback({"x": xi, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": x0})

        return consistency_sample(lambda xi, s: model(xi, s * s_in, **extra_args), x, sigmas,
                                  lambda i: renoise.draw(i + 1), report)
    return comfy.samplers.KSAMPLER(sample)


def per_sample_sampler(sampler_name, seed, batch_index, sample_shape, device):
    """ComfyUI's sampler, with stochastic samplers drawing noise per sample (not per batch)."""
    sampler = comfy.samplers.sampler_object(sampler_name)
    if "noise_sampler" in inspect.signature(sampler.sampler_function).parameters:
        noise = PerSampleNoise(seed, batch_index, sample_shape, torch.float32, device)
        sampler = comfy.samplers.KSAMPLER(sampler.sampler_function,
                                          extra_options={**sampler.extra_options, "noise_sampler": noise},
                                          inpaint_options=sampler.inpaint_options)
    return sampler


def sample_with_sigmas(model, noise, cfg, sampler, sigmas, positive, negative, latent, noise_mask=None):
    callback = latent_preview.prepare_callback(model, len(sigmas) - 1)
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas.to(model.load_device), positive,
                                      negative, latent, noise_mask=noise_mask, callback=callback,
                                      disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED)


def _subset_control(control, indices, batch_size):
    if control is None:
        return None
    c = control.copy()
    c.cond_hint_original = take_rows(control.cond_hint_original, indices, batch_size)
    c.set_previous_controlnet(_subset_control(control.previous_controlnet, indices, batch_size))
    return c


def subset_conditioning(conditioning, indices, batch_size):
    """The conditioning of samples `indices` only: per-sample prompts, pooled outputs and
    ControlNet hints follow their samples (ComfyUI would otherwise take the first rows)."""
    out = []
    for cond, extra in conditioning:
        extra = dict(extra)
        if "pooled_output" in extra:
            extra["pooled_output"] = take_rows(extra["pooled_output"], indices, batch_size)
        if extra.get("control") is not None:
            extra["control"] = _subset_control(extra["control"], indices, batch_size)
        out.append([take_rows(cond, indices, batch_size), extra])
    return out


def check_interrupt():
    comfy.model_management.throw_exception_if_processing_interrupted()

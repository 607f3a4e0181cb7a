"""Each stage's noise in ComfyUI, per sample: the student's initial noise (ComfyUI's own), a retry's, the
rollback's fresh Z in the model's own space, and stochastic samplers drawing from their own stream."""
import inspect

import torch

import comfy.sample
import comfy.samplers

from ..schedulers.errors import InputError
from ..schedulers.noise import PerSampleNoise, Stream


def initial_noise(latent_samples, seed, batch_index):
    """ComfyUI's own per-sample noise: sample k gets the k-th draw of `seed`, whatever its batch."""
    return comfy.sample.prepare_noise(latent_samples, seed, list(batch_index))


def retry_noise(seed, batch_index, sample_shape, rounds):
    """A student retry's starting noise: fresh for each retry round (one, or one per sample)."""
    return PerSampleNoise(seed, batch_index, sample_shape, Stream.RETRY_INITIAL, round_=rounds).draw(0)


def rollback_noise(seed, batch_index, sample_shape, rounds=0):
    """Algorithm 1's fresh Z for refine: a stream of its own, independent of the initial noise, and of
    an earlier rollback of the same sample (rounds: each sample's SampleRecord.noise_round)."""
    return PerSampleNoise(seed, batch_index, sample_shape, Stream.ROLLBACK, round_=rounds).draw(0)


def noised_latent(model, x0, noise, sigma):
    """x0 + sigma * noise in the model's own latent space, returned in the LATENT's space (as core
    AddNoise: process_latent_in -> noise_scaling -> process_latent_out), with the sqrt(1 + sigma^2)
    scaling ComfyUI's samplers use when sigma is the schedule's top."""
    ms = model.get_model_object("model_sampling")
    at_top = float(sigma) >= float(ms.sigma_max) * (1 - 1e-5)
    x_in = model.get_model_object("process_latent_in")(x0)
    noised = ms.noise_scaling(sigma.to(x_in.dtype), noise.to(x_in), x_in, max_denoise=at_top)
    return model.get_model_object("process_latent_out")(noised)


def sampler_custom_start(model, noised, sigma):
    """The LATENT to give core SamplerCustom (add_noise off) so that it starts from `noised`: its sampler
    scales even a noise-free start by noise_scaling(sigma, 0, x), which is x in the ve frame but
    (1 - sigma) x in the flow frame (FLUX, SD3, Qwen-Image); the start is divided by that factor."""
    ms = model.get_model_object("model_sampling")
    kept = float(ms.noise_scaling(sigma.float().cpu(), torch.zeros(1), torch.ones(1)))
    if kept == 1.0:
        return noised
    if kept <= 0.0:
        raise InputError("rollback", f"goes back to pure noise (sigma {float(sigma):g}) on this flow model, which "
                         "core SamplerCustom cannot start from without adding noise itself",
                         "use a smaller rollback, or Teacher Improve's regenerate")
    x_in = model.get_model_object("process_latent_in")(noised)
    return model.get_model_object("process_latent_out")(x_in / kept)


def per_sample_sampler(sampler_name, seed, batch_index, sample_shape, device, rounds=0,
                       stream=Stream.TEACHER_SAMPLER):
    """ComfyUI's sampler, with stochastic samplers (ancestral, SDE, lcm) drawing noise per sample (not per
    batch) from the stage's own `stream`. ddim's
    inpainting draws one noise for the whole batch ("random"): here masked-out areas get the stage's
    own per-sample noise instead, as every other sampler's do."""
    sampler = comfy.samplers.sampler_object(sampler_name)
    extra_options = dict(sampler.extra_options)
    if "noise_sampler" in inspect.signature(sampler.sampler_function).parameters:
        extra_options["noise_sampler"] = PerSampleNoise(seed, batch_index, sample_shape, stream, torch.float32,
                                                        device, rounds)
    inpaint_options = {k: v for k, v in sampler.inpaint_options.items() if k != "random"}
    return comfy.samplers.KSAMPLER(sampler.sampler_function, extra_options=extra_options,
                                   inpaint_options=inpaint_options)

"""Small bridges between the host-free core and ComfyUI's own objects."""
import inspect
import logging

import torch

import comfy.model_management
import comfy.model_sampling as MS
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview

from ..schedulers.batching import take_rows, take_sample_entries
from ..schedulers.consistency import consistency_denoised, consistency_sample
from ..schedulers.errors import InputError
from ..schedulers.noise import PerSampleNoise, Stream
from .prompts import PROMPTS_KEY

log = logging.getLogger("StudentTeacher")


class _ConsistencyBoundary:
    """The LCM boundary condition on top of a model's own prediction (eps or v) and schedule."""

    def calculate_denoised(self, sigma, model_output, model_input):
        x0 = super().calculate_denoised(sigma, model_output, model_input)
        return consistency_denoised(x0, model_input, sigma, self.timestep(sigma))


class _EpsConsistency(_ConsistencyBoundary, MS.ModelSamplingDiscrete, MS.EPS):
    pass


class _VConsistency(_ConsistencyBoundary, MS.ModelSamplingDiscrete, MS.V_PREDICTION):
    pass


def discrete_model_sampling(model, schedule: str):
    """The model's ModelSamplingDiscrete, or an error: consistency timesteps index a 1000-step
    discrete schedule."""
    ms = model.get_model_object("model_sampling")
    if not isinstance(ms, MS.ModelSamplingDiscrete) or isinstance(ms, (MS.ModelSamplingDiscreteEDM,
                                                                       MS.StableCascadeSampling)):
        raise InputError("model", f"schedule {schedule} needs a discrete-time (SD1.5/SDXL-family) student, "
                         f"this model samples with {type(ms).__name__}", "use an SD1.5 or SDXL consistency student")
    return ms


def prediction_name(model_sampling) -> str:
    """What a ModelSampling predicts (EPS, V_PREDICTION, X0, ...), whatever class patched it in."""
    return next((c.__name__ for c in type(model_sampling).__mro__
                 if c.__module__ == MS.__name__ and not c.__name__.startswith("ModelSampling")), "unknown")


def with_consistency_sampling(model):
    """A clone of the student whose model sampling adds the LCM boundary condition to its own
    prediction type (eps or v) and noise schedule (a zsnr or otherwise rescaled table is kept), so
    a plain LCM checkpoint or SD + LCM-LoRA samples correctly with no extra nodes."""
    current = discrete_model_sampling(model, "lcm")
    if isinstance(current, MS.V_PREDICTION) and not isinstance(current, MS.EDM):
        cls = _VConsistency
    elif isinstance(current, MS.EPS) and not isinstance(current, (MS.V_PREDICTION, MS.X0)):
        cls = _EpsConsistency
    else:
        raise InputError("model", f"schedule lcm needs an eps- or v-prediction student, this one predicts "
                         f"{prediction_name(current)}", "use schedule turbo, or an eps/v-prediction student")
    ms = cls(model.model.model_config)
    if current.sigmas.shape == ms.sigmas.shape:
        ms.set_sigmas(current.sigmas.detach().clone())
    else:  # ComfyUI's own 'lcm' sampling (a 50-entry table): the boundary condition here replaces it
        log.info("StudentTeacher: the student's %s is replaced by the pack's LCM sampling",
                 type(current).__name__)
    m = model.clone()
    m.add_object_patch("model_sampling", ms)
    return m


def latent_format_name(model) -> str:
    return type(model.model.latent_format).__name__


def check_model_fits(model, model_input: str, samples=None, latent_input: str = "latent", records=None,
                     conditioning=None):
    """Refuse, before sampling, a model that cannot run on these inputs (ComfyUI would fail deep in
    the UNet with 'mat1 and mat2 shapes cannot be multiplied'): a latent with the wrong number of
    channels or made in another model family's latent space, or conditioning of another width."""
    family = latent_format_name(model)
    channels = model.model.latent_format.latent_channels
    if samples is not None and samples.ndim >= 2 and samples.shape[1] != channels and samples.any():
        raise InputError(latent_input, f"has {samples.shape[1]} channels, {model_input} ({family}) works in "
                         f"{channels}", f"use a latent of {model_input}'s family")
    made_in = {r.latent_format for r in records or () if r.latent_format}
    if made_in and made_in != {family}:
        raise InputError(model_input, f"is a {family} model but the samples were made in the "
                         f"{'/'.join(sorted(made_in))} latent space",
                         f"use a {'/'.join(sorted(made_in))} {model_input} (and its own conditioning)")
    width = model.model.model_config.unet_config.get("context_dim")
    batch = samples.shape[0] if samples is not None else None
    for name, cond in (conditioning or {}).items():
        for tensor, _extra in cond or ():
            if width and tensor.shape[-1] != width:
                raise InputError(name, f"is {tensor.shape[-1]} wide but {model_input} ({family}) expects {width}",
                                 f"encode it with the CLIP that comes with the {family} model")
            if batch and tensor.shape[0] not in (1, batch):  # ComfyUI would tile the rows over the batch
                raise InputError(name, f"has {tensor.shape[0]} rows (prompts) for {batch} samples",
                                 "give the latent one sample per prompt (the prompt list's count as batch_size)")


def check_vae_fits(vae, samples):
    channels = getattr(vae, "latent_channels", None)
    if channels is not None and samples.shape[1] != channels:
        raise InputError("vae", f"decodes {channels}-channel latents, the samples have {samples.shape[1]}",
                         "use the VAE of the student's checkpoint")


def sigmas_at_timesteps(model, timesteps) -> torch.Tensor:
    ms = model.get_model_object("model_sampling")
    sig = ms.sigma(torch.tensor(timesteps, dtype=torch.float32)).float().cpu()
    return torch.cat([sig, sig.new_zeros(1)])


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


def consistency_sampler(seed, batch_index, sample_shape, rounds=0):
    """A SAMPLER running multistep consistency sampling with per-sample re-noising (rounds: a retry's,
    one or one per sample)."""
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = extra_args or {}
        s_in = x.new_ones([x.shape[0]])
        renoise = PerSampleNoise(seed, batch_index, sample_shape, Stream.STUDENT_RENOISE, x.dtype, x.device, rounds)

        def report(i, x0, xi):
            if callback is not None:
                callback({"x": xi, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": x0})

        return consistency_sample(lambda xi, s: model(xi, s * s_in, **extra_args), x, sigmas,
                                  renoise.draw, report)
    return comfy.samplers.KSAMPLER(sample)


def per_sample_sampler(sampler_name, seed, batch_index, sample_shape, device, rounds=0):
    """ComfyUI's sampler, with stochastic samplers drawing noise per sample (not per batch). ddim's
    inpainting draws one noise for the whole batch ("random"): here masked-out areas get the stage's
    own per-sample noise instead, as every other sampler's do."""
    sampler = comfy.samplers.sampler_object(sampler_name)
    extra_options = dict(sampler.extra_options)
    if "noise_sampler" in inspect.signature(sampler.sampler_function).parameters:
        extra_options["noise_sampler"] = PerSampleNoise(seed, batch_index, sample_shape, Stream.TEACHER_SAMPLER,
                                                        torch.float32, device, rounds)
    inpaint_options = {k: v for k, v in sampler.inpaint_options.items() if k != "random"}
    return comfy.samplers.KSAMPLER(sampler.sampler_function, extra_options=extra_options,
                                   inpaint_options=inpaint_options)


def sample_with_sigmas(model, noise, cfg, sampler, sigmas, positive, negative, latent, noise_mask=None, seed=None):
    callback = latent_preview.prepare_callback(model, len(sigmas) - 1)
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas.to(model.load_device), positive,
                                      negative, latent, noise_mask=noise_mask, callback=callback,
                                      disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)


def _subset_control(control, indices, batch_size):
    if control is None:
        return None
    c = control.copy()
    c.cond_hint_original = take_rows(control.cond_hint_original, indices, batch_size)
    c.set_previous_controlnet(_subset_control(control.previous_controlnet, indices, batch_size))
    return c


def subset_conditioning(conditioning, indices, batch_size):
    """The conditioning of samples `indices` only: every per-sample entry follows its sample (prompt rows,
    their texts, masks, inpaint latents, pooled outputs, ControlNet hints); ComfyUI would otherwise
    give a sub-batch the first rows."""
    out = []
    for cond, extra in conditioning:
        extra = {k: take_sample_entries(v, indices, batch_size) for k, v in extra.items()}
        if PROMPTS_KEY in extra:  # the texts are a tuple (tuples are not per-sample by rule: an area is one)
            extra[PROMPTS_KEY] = take_rows(extra[PROMPTS_KEY], indices, batch_size)
        if extra.get("control") is not None:
            extra["control"] = _subset_control(extra["control"], indices, batch_size)
        out.append([take_rows(cond, indices, batch_size), extra])
    return out


def check_interrupt():
    comfy.model_management.throw_exception_if_processing_interrupted()

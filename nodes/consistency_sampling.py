"""Consistency sampling in ComfyUI: the LCM boundary condition on a student's own model sampling, the
sigmas of its timesteps, and a SAMPLER that re-noises each sample from its own stream."""
import logging

import torch

import comfy.model_sampling as MS
import comfy.samplers

from ..schedulers.consistency import consistency_denoised, consistency_sample
from ..schedulers.errors import InputError
from ..schedulers.noise import PerSampleNoise, Stream
from .model_checks import discrete_model_sampling, prediction_name

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


def sigmas_at_timesteps(model, timesteps) -> torch.Tensor:
    ms = model.get_model_object("model_sampling")
    sig = ms.sigma(torch.tensor(timesteps, dtype=torch.float32)).float().cpu()
    return torch.cat([sig, sig.new_zeros(1)])


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

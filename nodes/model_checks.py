"""What a ComfyUI MODEL is and whether it can run on these inputs: its latent family, its prediction,
and the checks that refuse a wrong pairing before sampling, in the pack's words."""
import comfy.model_sampling as MS

from ..schedulers.errors import InputError


def discrete_model_sampling(model, schedule: str):
    """The model's ModelSamplingDiscrete, or an error: consistency timesteps index a 1000-step
    discrete schedule."""
    ms = model.get_model_object("model_sampling")
    if not isinstance(ms, MS.ModelSamplingDiscrete) or isinstance(ms, (MS.ModelSamplingDiscreteEDM,
                                                                       MS.StableCascadeSampling)):
        raise InputError("model", f"schedule {schedule} needs a discrete-time (SD1.5/SDXL-family) consistency "
                         f"student, this model samples with {type(ms).__name__}",
                         "set schedule to sampler (e.g. euler + simple for FLUX.1-schnell or SD3.5 Turbo)")
    return ms


def model_frame(model) -> str:
    """How the model writes its noisy state (schedulers.rollback.FRAMES): flow for CONST models (FLUX,
    SD3, Qwen-Image: (1-sigma) x0 + sigma z), ve for the others (x0 + sigma z)."""
    return "flow" if isinstance(model.get_model_object("model_sampling"), MS.CONST) else "ve"


def prediction_name(model_sampling) -> str:
    """What a ModelSampling predicts (EPS, V_PREDICTION, X0, ...), whatever class patched it in."""
    return next((c.__name__ for c in type(model_sampling).__mro__
                 if c.__module__ == MS.__name__ and not c.__name__.startswith("ModelSampling")), "unknown")


def latent_format_name(model) -> str:
    return type(model.model.latent_format).__name__


def other_family(model, records):
    """The latent family (or families, 'A/B') the records' samples were made in when it is not the model's;
    None when they are the model's own (or not known)."""
    made_in = {r.latent_format for r in records or () if r.latent_format}
    return "/".join(sorted(made_in)) if made_in and made_in != {latent_format_name(model)} else None


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
    made_in = other_family(model, records)
    if made_in:
        raise InputError(model_input, f"is a {family} model but the samples were made in the {made_in} latent "
                         f"space", f"use a {made_in} {model_input} (and its own conditioning)")
    width = conditioning_width(model)
    batch = samples.shape[0] if samples is not None else None
    for name, cond in (conditioning or {}).items():
        for tensor, _extra in cond or ():
            if width and tensor.shape[-1] != width:
                raise InputError(name, f"is {tensor.shape[-1]} wide but {model_input} ({family}) expects {width}",
                                 f"encode it with the text encoder(s) of the {family} model (its CLIP loader "
                                 "and type)")
            if batch and tensor.shape[0] not in (1, batch):  # ComfyUI would tile the rows over the batch
                raise InputError(name, f"has {tensor.shape[0]} rows (prompts) for {batch} samples",
                                 "give the latent one sample per prompt (the prompt list's count as batch_size)")


def conditioning_width(model):
    """The width of the text conditioning the model takes: a UNet's context_dim, else the in_features of
    the transformer's text input layer (FLUX and Qwen-Image txt_in, SD3 context_embedder); None if unknown."""
    width = model.model.model_config.unet_config.get("context_dim")
    if width:
        return width
    diffusion_model = model.model.diffusion_model
    for name in ("txt_in", "context_embedder"):
        width = getattr(getattr(diffusion_model, name, None), "in_features", None)
        if width:
            return width
    return None


def check_vae_fits(vae, samples):
    channels = getattr(vae, "latent_channels", None)
    if channels is not None and samples.shape[1] != channels:
        raise InputError("vae", f"decodes {channels}-channel latents, the samples have {samples.shape[1]}",
                         "use the VAE of the student's checkpoint")

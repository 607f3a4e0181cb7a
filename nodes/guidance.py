"""Guidance-embedded students (LCM-Dreamshaper-v7 and other LCMs distilled with a w input) as a
ComfyUI MODEL: the layer ComfyUI drops when it loads them (diffusers `time_embedding.cond_proj`) is
put back as an object patch on the UNet's time MLP, so LoRAs, ControlNet and other patches keep
working. The w of each call comes from the sampler (the student node, per sample) or, for any other
sampler (core KSampler), from the default set here."""
import contextvars
import os

import torch

import comfy.patcher_extension
import folder_paths
import nodes

from ..oracle.checkpoint import OracleLoadError, read_state_dict, sniff_format
from ..schedulers.errors import InputError
from ..schedulers.guidance import W_CONVENTIONS, W_RANGE, guidance_embedding, w_rows
from .common import CATEGORY, full_path

W_OPTION = "student_teacher_w"        # transformer_options: the per-sample w of the batch being sampled
COND_PROJ_KEYS = ("time_embedding.cond_proj.weight", "time_embed.cond_proj.weight")  # diffusers / ldm names
GUIDED_FOLDERS = ("diffusion_models", "checkpoints")
_CALL_W = contextvars.ContextVar("student_teacher_call_w", default=None)


class GuidedTimeEmbed(torch.nn.Sequential):
    """The UNet's time MLP (the same Linear, SiLU, Linear modules under the same state-dict keys, so
    LoRAs still find them) with cond_proj(w embedding) added to its input, as diffusers'
    TimestepEmbedding does with `timestep_cond`."""

    def __init__(self, time_embed, cond_proj, default_w: float, convention: str):
        super().__init__(*time_embed)
        self.mlp_layers = len(time_embed)
        self.cond_proj = cond_proj  # registered after the MLP's layers, so it is not one of them
        self.default_w = float(default_w)
        self.convention = convention

    def forward(self, t_emb):
        w = _CALL_W.get()
        if w is None:
            w = torch.full((t_emb.shape[0],), self.default_w, dtype=torch.float64)
        emb = guidance_embedding(w, self.cond_proj.in_features, self.convention)
        x = t_emb + self.cond_proj(emb.to(t_emb))
        for i in range(self.mlp_layers):
            x = self[i](x)
        return x


def _w_of_this_call(executor, x, *args, **kwargs):
    """DIFFUSION_MODEL wrapper: the w rows of this UNet call, from the sampler's transformer_options."""
    options = kwargs.get("transformer_options", args[4] if len(args) > 4 else {})
    w = options.get(W_OPTION)
    token = _CALL_W.set(None if w is None else w_rows(w, x.shape[0]))  # float64 on the CPU until embedded
    try:
        return executor(x, *args, **kwargs)
    finally:
        _CALL_W.reset(token)


def guidance_of(model):
    """The student's GuidedTimeEmbed, or None for a model without a guidance embedding."""
    embed = model.get_model_object("diffusion_model.time_embed") \
        if hasattr(model.model, "diffusion_model") and hasattr(model.model.diffusion_model, "time_embed") else None
    return embed if isinstance(embed, GuidedTimeEmbed) else None


def with_w(model, w_per_sample):
    """A clone of a guided student that embeds these per-sample w values (batch order)."""
    m = model.clone()
    m.model_options.setdefault("transformer_options", {})[W_OPTION] = torch.tensor(w_per_sample, dtype=torch.float64)
    return m


def read_cond_proj(path: str, input_name: str) -> torch.Tensor:
    """The guidance projection of a student file (diffusers or ldm key names); reads only that
    tensor from a .safetensors file. A file that is unreadable, truncated or an unsafe pickle is
    refused with the pack's message (the oracle loader's checks: a pickle loads weights-only, or not at all)."""
    name = os.path.basename(path)
    get_it = "download the student's UNet again (e.g. LCM_Dreamshaper_v7_4k.safetensors)"
    try:
        if sniff_format(path, get_it) == "safetensors":
            tensors = _safetensors_cond_proj(path, get_it)
        else:
            tensors = {k: v for k, v in read_state_dict(path, get_it).items() if k.endswith(COND_PROJ_KEYS)}
    except OracleLoadError as e:
        raise InputError(input_name, e.problem, e.fix) from None
    if not tensors:
        raise InputError(input_name, f"{name} has no guidance embedding (no key ending in {COND_PROJ_KEYS[0]})",
                         "use a w-embedded student such as LCM_Dreamshaper_v7, or sample this one without this node")
    if len(tensors) > 1:
        raise InputError(input_name, f"{name} has {len(tensors)} guidance embeddings ({', '.join(tensors)})",
                         "use a file of one UNet")
    return next(iter(tensors.values()))


def _safetensors_cond_proj(path, get_it):
    from safetensors import safe_open
    try:
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if k.endswith(COND_PROJ_KEYS)}
    except Exception as e:  # SafetensorError, OSError: a truncated or corrupt file
        raise OracleLoadError(f"{os.path.basename(path)}: the safetensors file is truncated or corrupt "
                              f"({type(e).__name__})", get_it) from None


def attach_guidance_embedding(model, weight, default_w, convention, input_name, name):
    """A clone of `model` whose UNet adds weight @ embed(w) to its timestep embedding."""
    dm = getattr(model.model, "diffusion_model", None)
    embed = getattr(dm, "time_embed", None)
    if not isinstance(embed, torch.nn.Sequential) or not hasattr(embed[0], "in_features"):
        raise InputError("model", "has no UNet time embedding to attach w to", "connect an SD1.5 or SDXL-family UNet")
    channels = embed[0].in_features
    if weight.ndim != 2 or weight.shape[0] != channels:
        raise InputError(input_name, f"{name}'s guidance embedding is {list(weight.shape)}, the model's time "
                         f"embedding takes {channels} channels", "attach the file this model was loaded from")
    if convention not in W_CONVENTIONS:
        raise InputError("w_convention", f"unknown convention {convention!r}", f"choose one of {W_CONVENTIONS}")
    base = model.get_model_object("diffusion_model.time_embed")
    if isinstance(base, GuidedTimeEmbed):  # attached before: replace that embedding, keep the MLP
        base = [base[i] for i in range(base.mlp_layers)]
    linear = type(embed[0])  # ComfyUI's own ops, so low-VRAM casting treats it like the model's layers
    cond_proj = linear(weight.shape[1], channels, bias=False, dtype=embed[0].weight.dtype, device=embed[0].weight.device)
    with torch.no_grad():
        cond_proj.weight.copy_(weight)
    m = model.clone()
    m.add_object_patch("diffusion_model.time_embed", GuidedTimeEmbed(base, cond_proj, default_w, convention))
    m.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, W_OPTION)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, W_OPTION, _w_of_this_call)
    return m


def guided_files():
    return sorted({f for folder in GUIDED_FOLDERS for f in folder_paths.get_filename_list(folder)})


def guided_file_path(name, input_name):
    for folder in GUIDED_FOLDERS:
        if folder_paths.get_full_path(folder, name):
            return folder_paths.get_full_path(folder, name)
    return full_path(GUIDED_FOLDERS[0], name, input_name, "the student's UNet file (e.g. LCM_Dreamshaper_v7_4k.safetensors)")


W_INPUTS = {
    "w": ("FLOAT", {"default": 8.0, "min": W_RANGE[0], "max": W_RANGE[1], "step": 0.5,
                    "tooltip": "Guidance scale the student embeds when its sampler gives none (core KSampler). The "
                               "Consistency Student Sampler's w input overrides it, per sample."}),
    "w_convention": (list(W_CONVENTIONS), {"default": "diffusers",
                                           "tooltip": "diffusers: embed w - 1 (diffusers' LCM pipelines). original: "
                                                      "embed w (the original LCM code: its w 8 is diffusers' 9)."}),
}


class LoadGuidedStudent:
    DESCRIPTION = ("Loads a consistency student distilled with a guidance-scale input (LCM-Dreamshaper-v7 and other "
                   "LCMs with time_cond_proj): ComfyUI's own UNet loader, plus the w embedding ComfyUI drops. "
                   "Files: the diffusers UNet (unet/diffusion_pytorch_model.safetensors, or a single UNet file such "
                   "as LCM_Dreamshaper_v7_4k.safetensors) in models/diffusion_models or models/unet.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The student with its w embedding; LoRAs, ControlNet and other patches apply as usual.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "unet_name": (folder_paths.get_filename_list("diffusion_models"),
                          {"tooltip": "The student's UNet file in models/diffusion_models (or models/unet)."}),
            **W_INPUTS,
        }}

    def load(self, unet_name, w, w_convention):
        path = full_path("diffusion_models", unet_name, "unet_name", "the student's UNet file")
        weight = read_cond_proj(path, "unet_name")
        model = nodes.UNETLoader().load_unet(unet_name, "default")[0]
        return (attach_guidance_embedding(model, weight, w, w_convention, "unet_name", unet_name),)


class AttachGuidanceEmbedding:
    DESCRIPTION = ("Puts back the guidance-scale (w) embedding of a guidance-distilled student into a MODEL loaded "
                   "with core nodes (Load Checkpoint, Load Diffusion Model), which drop it. Reads only that layer "
                   "from the file the model came from.")
    CATEGORY = CATEGORY
    FUNCTION = "attach"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The student with its w embedding.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The student as a core loader gives it (without its w embedding)."}),
            "file": (guided_files(), {"tooltip": "The file the model was loaded from (models/checkpoints, "
                                                 "models/diffusion_models or models/unet)."}),
            **W_INPUTS,
        }}

    def attach(self, model, file, w, w_convention):
        weight = read_cond_proj(guided_file_path(file, "file"), "file")
        return (attach_guidance_embedding(model, weight, w, w_convention, "file", file),)

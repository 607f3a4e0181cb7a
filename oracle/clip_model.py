"""CLIP-family scorers' models (CLIP, PickScore, HPSv2) as transformers' CLIPModel, from local files.

Two key layouts are read:
- transformers (``text_model.*``, ``vision_model.*``, ``text_projection.weight``, ...): Hugging Face
  CLIPModel files such as openai/clip-vit-large-patch14 or yuvalkirstain/PickScore_v1;
- open_clip (``transformer.resblocks.*``, ``visual.*``, ...): OpenCLIP checkpoints such as ViT-bigG-14
  or HPS_v2.1_compressed.pt, converted on load (attention in_proj split into q/k/v, the two
  projections transposed; nothing is recomputed, so the weights are the same numbers).
Every size comes from the tensors' shapes. What no checkpoint stores -- attention heads and the
activation -- comes from the model family, recognised by the vision width (FAMILIES), or from a
transformers config.json beside the weights: ``<file name without extension>.json``, or the
``config.json`` a Hugging Face download keeps in the model's folder (read only for weights under a
Hugging Face file name, HF_WEIGHT_NAMES: beside any other file it belongs to some other model). A
config that disagrees with the shapes is refused. The width cannot tell OpenAI's B and L
(QuickGELU) from LAION's retrained B and L (GELU): those need their config.json.
"""
import hashlib
import json
import logging
import math
import os
import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from .base import weights_fingerprint
from .checkpoint import _fail, layout_problems

log = logging.getLogger(__name__)

TEXT, VISION = "text_model.", "vision_model."
OPTIONAL_KEYS = frozenset({"text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"})
# vision width -> (vision heads, activation). OpenAI's CLIPs (B, L) use QuickGELU; LAION's
# OpenCLIP H, g and bigG (and PickScore and HPSv2, fine-tuned from ViT-H) use GELU.
FAMILIES = {768: (12, "quick_gelu"), 1024: (16, "quick_gelu"), 1280: (16, "gelu"), 1408: (16, "gelu"),
            1664: (16, "gelu")}
LAYER_RENAMES = (("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("mlp.c_fc.", "mlp.fc1."),
                 ("mlp.c_proj.", "mlp.fc2."), ("attn.out_proj.", "self_attn.out_proj."))
TOP_RENAMES = {
    "token_embedding.weight": TEXT + "embeddings.token_embedding.weight",
    "positional_embedding": TEXT + "embeddings.position_embedding.weight",
    "ln_final.weight": TEXT + "final_layer_norm.weight", "ln_final.bias": TEXT + "final_layer_norm.bias",
    "visual.class_embedding": VISION + "embeddings.class_embedding",
    "visual.positional_embedding": VISION + "embeddings.position_embedding.weight",
    "visual.conv1.weight": VISION + "embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": VISION + "pre_layrnorm.weight", "visual.ln_pre.bias": VISION + "pre_layrnorm.bias",
    "visual.ln_post.weight": VISION + "post_layernorm.weight",
    "visual.ln_post.bias": VISION + "post_layernorm.bias",
    "logit_scale": "logit_scale",
}
TRANSPOSED = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}
# the names a Hugging Face model repository gives its single-file weights, beside its config.json
HF_WEIGHT_NAMES = frozenset({"model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors",
                             "open_clip_pytorch_model.bin"})
# what a sidecar config may set that no tensor shows; every other size must agree with the shapes
SIDE_KEYS = ("num_attention_heads", "hidden_act", "layer_norm_eps")
SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size", "max_position_embeddings",
              "image_size", "patch_size", "projection_dim")


def clip_layout(sd: Mapping[str, torch.Tensor]) -> Optional[str]:
    """'transformers', 'open_clip', or None when the keys are neither CLIP layout."""
    if any(k.startswith(TEXT) for k in sd) and any(k.startswith(VISION) for k in sd):
        return "transformers"
    if any(k.startswith("transformer.resblocks.") for k in sd) and \
            any(k.startswith("visual.transformer.resblocks.") for k in sd):
        return "open_clip"
    return None


def from_open_clip(sd: Mapping[str, torch.Tensor], path: str, get_it: str) -> Dict[str, torch.Tensor]:
    """open_clip keys -> transformers CLIPModel keys (views of the same tensors)."""
    out, unknown = {}, []
    block = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
    for key, t in sd.items():
        m = block.match(key)
        if key in TOP_RENAMES:
            out[TOP_RENAMES[key]] = t
        elif key in TRANSPOSED:
            out[TRANSPOSED[key]] = t.t()
        elif m:
            prefix = f"{VISION if m.group(1) else TEXT}encoder.layers.{m.group(2)}."
            rest = m.group(3)
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = rest.rsplit("_", 1)[-1]
                if t.shape[0] % 3:
                    raise _fail(path, f"{key} has {t.shape[0]} rows, not 3 x width", get_it)
                for name, part in zip(("q", "k", "v"), t.chunk(3, dim=0)):
                    out[f"{prefix}self_attn.{name}_proj.{kind}"] = part
                continue
            for old, new in LAYER_RENAMES:
                if rest.startswith(old):
                    out[prefix + new + rest[len(old):]] = t
                    break
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise _fail(path, f"{len(unknown)} key(s) this open_clip model does not use: "
                          f"{', '.join(sorted(unknown)[:5])}{' ...' if len(unknown) > 5 else ''} (only "
                          "the plain OpenCLIP ViT text/image towers are supported)", get_it)
    return out


def _count(sd, prefix) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in sd for m in [pattern.match(k)] if m}
    if not found:
        raise KeyError(prefix + "0.*")
    return max(found) + 1


def sidecar_config(path: Optional[str]) -> Tuple[dict, Optional[str]]:
    """The transformers CLIPConfig beside the weights and its file: <stem>.json (the explicit
    override), else the config.json of the Hugging Face download the weights keep their name in;
    ({}, None) when there is none. A folder's config.json beside weights of another name belongs to
    some other model: ignored, with a warning when it is a CLIP config."""
    if not path:
        return {}, None
    path = os.fspath(path)
    own = os.path.basename(path) in HF_WEIGHT_NAMES
    for side, explicit in ((os.path.splitext(path)[0] + ".json", True),
                           (os.path.join(os.path.dirname(path), "config.json"), False)):
        if not os.path.isfile(side):
            continue
        try:
            with open(side, encoding="utf-8") as f:
                cfg = json.load(f)
        except (OSError, ValueError) as e:
            if not explicit:
                continue
            raise _fail(side, f"cannot read it as a transformers config.json ({e})",
                        "delete it, or save the model's config.json there") from None
        if isinstance(cfg, dict) and isinstance(cfg.get("vision_config"), dict):
            if explicit or own:
                return cfg, side
            log.warning("%s: ignoring the config.json beside it (%s): a folder's config.json is read only for "
                        "weights named as a Hugging Face download names them (%s); to apply it to this file, "
                        "save it as %s", os.path.basename(path), side, ", ".join(sorted(HF_WEIGHT_NAMES)),
                        os.path.splitext(os.path.basename(path))[0] + ".json")
        elif explicit:
            raise _fail(side, "it is not a transformers CLIP config.json (no vision_config object)",
                        "delete it, or save the model's config.json there")
    return {}, None


def disagreements(config, side: dict) -> List[str]:
    """How a sidecar config contradicts the CLIPConfig worked out from the shapes ([] if it does not)."""
    out = []
    if side.get("projection_dim", config.projection_dim) != config.projection_dim:
        out.append(f"projection_dim {side['projection_dim']}, the weights' {config.projection_dim}")
    for part in ("vision_config", "text_config"):
        mine, theirs = getattr(config, part), side.get(part) or {}
        out += [f"{part}.{k} {theirs[k]}, the weights' {getattr(mine, k)}"
                for k in SHAPE_KEYS if k in theirs and hasattr(mine, k) and theirs[k] != getattr(mine, k)]
        heads = theirs.get("num_attention_heads")
        if heads is not None and (not isinstance(heads, int) or heads < 1 or mine.hidden_size % heads):
            out.append(f"{part}.num_attention_heads {heads} does not divide the width {mine.hidden_size}")
    return out


def clip_fingerprint(sd: Mapping[str, torch.Tensor], config) -> str:
    """weights_fingerprint of the tensors, extended by what a sidecar config set differently from
    the family's defaults (heads, activation, eps): the same weights run as another model score
    differently. A file read without a sidecar config keeps its plain weights fingerprint."""
    default = clip_config(sd)
    changed = {f"{part}.{k}": getattr(getattr(config, part), k) for part in ("vision_config", "text_config")
               for k in SIDE_KEYS if getattr(getattr(config, part), k) != getattr(getattr(default, part), k)}
    plain = weights_fingerprint(sd)
    if not changed:
        return plain
    return hashlib.sha256((plain + json.dumps(changed, sort_keys=True)).encode()).hexdigest()[:16]


def clip_config(sd: Mapping[str, torch.Tensor], side: Optional[dict] = None):
    """transformers CLIPConfig for a transformers-layout state dict (sizes from the shapes)."""
    from transformers import CLIPConfig

    def shape(key):
        if key not in sd:
            raise KeyError(key)
        return tuple(sd[key].shape)

    side = side or {}
    width = shape(VISION + "embeddings.class_embedding")[0]
    heads, act = FAMILIES.get(width, (max(1, width // 64), "gelu"))
    patch = shape(VISION + "embeddings.patch_embedding.weight")[-1]
    positions = shape(VISION + "embeddings.position_embedding.weight")[0] - 1
    grid = math.isqrt(max(positions, 0))
    if positions <= 0 or grid * grid != positions:
        raise ValueError(f"{VISION}embeddings.position_embedding.weight holds {positions} patch positions, "
                         "not a square grid")
    vocab, text_width = shape(TEXT + "embeddings.token_embedding.weight")
    projection = shape("text_projection.weight")[0]
    if shape("visual_projection.weight")[0] != projection:
        raise ValueError("the text and image projections have different output sizes")
    vision = dict(hidden_size=width, intermediate_size=shape(VISION + "encoder.layers.0.mlp.fc1.weight")[0],
                  num_hidden_layers=_count(sd, VISION + "encoder.layers."), num_attention_heads=heads,
                  image_size=grid * patch, patch_size=patch, hidden_act=act, layer_norm_eps=1e-5,
                  projection_dim=projection)
    text = dict(vocab_size=vocab, hidden_size=text_width,
                intermediate_size=shape(TEXT + "encoder.layers.0.mlp.fc1.weight")[0],
                num_hidden_layers=_count(sd, TEXT + "encoder.layers."),
                num_attention_heads=max(1, text_width // 64),
                max_position_embeddings=shape(TEXT + "embeddings.position_embedding.weight")[0],
                hidden_act=act, layer_norm_eps=1e-5, projection_dim=projection,
                bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=0)
    for mine, theirs in ((vision, side.get("vision_config") or {}), (text, side.get("text_config") or {})):
        mine.update({k: theirs[k] for k in ("num_attention_heads", "hidden_act", "layer_norm_eps") if k in theirs})
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection)


def expected_shapes(config) -> Dict[str, Tuple[int, ...]]:
    from transformers import CLIPModel
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in CLIPModel(config).state_dict().items()}


def validate_clip(sd: Mapping[str, torch.Tensor], path: str, get_it: str, side: Optional[dict] = None,
                  side_path: Optional[str] = None):
    """Strict check of a transformers-layout state dict -> (tensors, CLIPConfig), with the sidecar
    config `side` (read from `side_path`) applied when it agrees with the shapes. Raises OracleLoadError."""
    sd = {k: v for k, v in sd.items() if k not in OPTIONAL_KEYS}
    try:
        config = clip_config(sd)
    except KeyError as e:
        raise _fail(path, f"missing key {e.args[0]} (needed to work out the model's sizes)", get_it) from None
    except ValueError as e:
        raise _fail(path, f"inconsistent shapes: {e}", get_it) from None
    expected = expected_shapes(config)
    problems = layout_problems(sd, expected)
    if problems:
        raise _fail(path, "it does not match the CLIP layout: " + "; ".join(problems), get_it)
    if side:
        wrong = disagreements(config, side)
        if wrong:
            name = os.path.basename(os.fspath(path))
            raise _fail(side_path or path, f"it describes another model than {name} beside it: " + "; ".join(wrong),
                        f"delete {os.path.basename(side_path or '')} or keep {name} in a folder of its own "
                        "(with its own config.json, if it has one)")
        config = clip_config(sd, side)
    return sd, config


def build_clip(sd: Mapping[str, torch.Tensor], config):
    """transformers CLIPModel holding these tensors (no copy), eval mode, no gradients."""
    from transformers import CLIPModel
    with torch.device("meta"):
        model = CLIPModel(config)
    return _holding(model, sd)


def build_clip_vision(sd: Mapping[str, torch.Tensor], config):
    """The image tower alone (transformers CLIPVisionModelWithProjection) of a checked CLIP state dict:
    for image-only judges, which would otherwise keep the unused text tower in memory."""
    from transformers import CLIPVisionModelWithProjection
    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(config.vision_config)
    return _holding(model, {k: v for k, v in sd.items() if k.startswith(VISION) or k == "visual_projection.weight"})


def _holding(model, sd: Mapping[str, torch.Tensor]):
    model.load_state_dict(dict(sd), strict=True, assign=True)
    for module in model.modules():  # buffers no checkpoint stores are still on the meta device
        ids = getattr(module, "position_ids", None)
        if isinstance(ids, torch.Tensor) and ids.is_meta:
            module.register_buffer("position_ids", torch.arange(ids.shape[-1]).expand(1, -1), persistent=False)
    return model.eval().requires_grad_(False)

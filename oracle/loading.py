"""One entry point for every oracle file: recognise what it is from its keys, load it strictly.

    ImageReward  blip.visual_encoder.*, blip.text_encoder.*, mlp.*   (ImageReward.pt)
    CLIP family  transformers layout (text_model.*, vision_model.*)  or open_clip layout
                 (transformer.resblocks.*, visual.*), read as CLIP score, PickScore or HPSv2.

Keys alone cannot tell PickScore from the CLIP-H it was fine-tuned from, nor HPSv2 from OpenCLIP
ViT-H: within the CLIP family `kind="auto"` reads the file name ("pick" -> PickScore, "hps" ->
HPSv2, anything else -> CLIP score); pass `kind` to say it outright.
"""
import os
from typing import Optional

import torch

from .checkpoint import OracleLoadError, _fail, image_reward_from_state_dict, read_state_dict
from .clip_model import build_clip, clip_fingerprint, clip_layout, from_open_clip, sidecar_config, validate_clip
from .clip_scorer import KINDS as CLIP_KINDS
from .clip_scorer import ClipOracle
from .scorer import ImageRewardOracle

KINDS = ("ImageReward",) + CLIP_KINDS
FOLDER = "ComfyUI/models/oracles/"
EXPECTED_FILES = ("ImageReward.pt (THUDM/ImageReward), PickScore_v1's model.safetensors (yuvalkirstain/PickScore_v1), "
                  "HPS_v2.1_compressed.pt (xswu/HPSv2), or a CLIP model (openai/clip-vit-large-patch14's "
                  "model.safetensors, OpenCLIP ViT-bigG-14's open_clip_pytorch_model.bin)")
GET_ANY = f"put an oracle file in {FOLDER}: {EXPECTED_FILES}"


class KindMismatch(OracleLoadError):
    """The file is a real oracle, but not of the kind asked for."""


def kind_from_name(filename: str) -> str:
    """The CLIP-family kind a file's name says, read from its name, its folder's (a Hugging Face
    download keeps model.safetensors in a folder named after the model, e.g. PickScore_v1/) and,
    in the Hugging Face cache (models--<owner>--<name>/snapshots/<hash>/), the repository's."""
    parts = os.path.normpath(os.fspath(filename)).split(os.sep)
    name = "/".join(parts[-2:] + [p for p in parts[:-2] if p.startswith("models--")][-1:]).lower()
    if "pick" in name:
        return "PickScore"
    if "hps" in name:
        return "HPSv2"
    return "CLIP score"


def without_module_prefix(sd):
    """Checkpoints saved from a DistributedDataParallel wrapper prefix every key with "module."."""
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def recognise(sd, filename: str, kind: str = "auto") -> str:
    """The oracle kind of a state dict (see the module doc), or OracleLoadError."""
    if kind != "auto" and kind not in KINDS:
        raise ValueError(f"kind must be 'auto' or one of {KINDS}, got {kind!r}")
    is_image_reward = any(k.startswith(("blip.visual_encoder.", "blip.text_encoder.")) for k in sd)
    layout = clip_layout(sd)
    if not is_image_reward and layout is None:
        sample = ", ".join(sorted(sd)[:3])
        raise _fail(filename, f"it is not an oracle this pack knows (neither ImageReward's keys nor a CLIP "
                              f"model's, in transformers or open_clip layout; found e.g. {sample})", GET_ANY)
    found = "ImageReward" if is_image_reward else None
    if kind == "auto":
        return found or kind_from_name(filename)
    if (kind == "ImageReward") != is_image_reward:
        what = "an ImageReward checkpoint" if is_image_reward else f"a CLIP-family model ({layout} layout)"
        raise KindMismatch(f"{os.path.basename(filename)} is {what}, not {kind}",
                           f"set kind to auto (or {found or 'CLIP score, PickScore or HPSv2'})")
    return kind


def load_oracle(path, kind: str = "auto", device="cpu", dtype=torch.float32, preprocess: str = "auto",
                batch_size: int = 8, name: Optional[str] = None):
    """Load any supported oracle file strictly -> an Oracle (ImageRewardOracle or ClipOracle) whose
    `.model` is the torch module, on `device` in `dtype`, eval mode, no gradients."""
    path = os.fspath(path)
    return oracle_from_state_dict(read_state_dict(path, GET_ANY), path, kind, device, dtype, preprocess,
                                  batch_size, name)


def oracle_from_state_dict(raw, path, kind: str = "auto", device="cpu", dtype=torch.float32,
                           preprocess: str = "auto", batch_size: int = 8, name: Optional[str] = None):
    """The oracle held by the raw tensors of the file `path` (see load_oracle)."""
    name = name or os.path.basename(path)
    raw = without_module_prefix(raw)
    kind = recognise(raw, path, kind)
    if kind == "ImageReward":
        model = image_reward_from_state_dict(raw, path, device, dtype)
        return ImageRewardOracle(model, preprocess=preprocess, batch_size=batch_size, name=name)
    layout = clip_layout(raw)
    sd = from_open_clip(raw, path, GET_ANY) if layout == "open_clip" else raw
    sd, config = validate_clip(sd, path, GET_ANY, *sidecar_config(path))
    fingerprint = clip_fingerprint(sd, config)
    model = build_clip(sd, config).to(device=device, dtype=dtype)
    return ClipOracle(model, kind, layout, preprocess=preprocess, batch_size=batch_size, name=name,
                      fingerprint=fingerprint)

"""One entry point for every oracle file: recognise what it is from its keys, load it strictly.

    ImageReward  blip.visual_encoder.*, blip.text_encoder.*, mlp.*   (ImageReward.pt)
    CLIP family  transformers layout (text_model.*, vision_model.*)  or open_clip layout
                 (transformer.resblocks.*, visual.*), read as CLIP score, PickScore or HPSv2.
    Aesthetic    layers.N.* only (LAION's aesthetic predictor, an MLP), with a second file: the CLIP
                 whose image embeddings it reads (`image_encoder`, any CLIP layout above).

Keys alone cannot tell PickScore from the CLIP-H it was fine-tuned from, nor HPSv2 from OpenCLIP
ViT-H: within the CLIP family `kind="auto"` reads the file name ("pick" -> PickScore, "hps" ->
HPSv2, anything else -> CLIP score); pass `kind` to say it outright.
"""
import os
from typing import Optional

import torch

from .aesthetic import (KIND as AESTHETIC, PREDICTOR_FILE, AestheticModel, AestheticOracle, aesthetic_fingerprint,
                        build_aesthetic, is_aesthetic, validate_aesthetic)
from .checkpoint import OracleLoadError, _fail, image_reward_from_state_dict, read_state_dict
from .clip_model import (build_clip, build_clip_vision, clip_fingerprint, clip_layout, from_open_clip, sidecar_config,
                         validate_clip)
from .clip_scorer import KINDS as CLIP_KINDS
from .clip_scorer import ClipOracle
from .scorer import ImageRewardOracle

KINDS = ("ImageReward",) + CLIP_KINDS + (AESTHETIC,)
FOLDER = "ComfyUI/models/oracles/"
EXPECTED_FILES = ("ImageReward.pt (THUDM/ImageReward), PickScore_v1's model.safetensors (yuvalkirstain/PickScore_v1), "
                  "HPS_v2.1_compressed.pt (xswu/HPSv2), a CLIP model (openai/clip-vit-large-patch14's "
                  "model.safetensors, OpenCLIP ViT-bigG-14's open_clip_pytorch_model.bin), or LAION's aesthetic "
                  f"predictor {PREDICTOR_FILE}")
GET_ANY = f"put an oracle file in {FOLDER}: {EXPECTED_FILES}"
GET_PREDICTOR = f"download {PREDICTOR_FILE} into {FOLDER}"
ENCODER_FILE = "openai/clip-vit-large-patch14's model.safetensors"
GET_ENCODER = (f"put {ENCODER_FILE} (huggingface.co/openai/clip-vit-large-patch14; its config.json beside it does no "
               f"harm) in {FOLDER}, e.g. in a folder clip-vit-large-patch14/, and choose it as image_encoder")
FAMILY_NAMES = {"ImageReward": "an ImageReward checkpoint", AESTHETIC: "an aesthetic predictor (an MLP over CLIP "
                "image embeddings)"}


class KindMismatch(OracleLoadError):
    """The file is a real oracle, but not of the kind asked for."""


class ImageEncoderError(OracleLoadError):
    """The CLIP an aesthetic predictor reads is missing, not a CLIP, or of another embedding width."""


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
    layout = clip_layout(sd)
    if any(k.startswith(("blip.visual_encoder.", "blip.text_encoder.")) for k in sd):
        found = "ImageReward"
    elif is_aesthetic(sd):
        found = AESTHETIC
    elif layout is not None:
        found = None  # the CLIP family: which reading, only the name or `kind` can say
    else:
        sample = ", ".join(sorted(sd)[:3])
        raise _fail(filename, f"it is not an oracle this pack knows (neither ImageReward's keys, a CLIP model's in "
                              f"transformers or open_clip layout, nor an aesthetic predictor's; found e.g. {sample})",
                    GET_ANY)
    if kind == "auto":
        return found or kind_from_name(filename)
    if (found or "CLIP") != (kind if kind not in CLIP_KINDS else "CLIP"):
        what = FAMILY_NAMES.get(found) or f"a CLIP-family model ({layout} layout)"
        fix = f"set kind to auto (or {found or 'CLIP score, PickScore or HPSv2'})"
        if kind == AESTHETIC and found is None:
            fix += (f"; an aesthetic predictor is a file of its own, e.g. {PREDICTOR_FILE}: choose it as "
                    "oracle_file and this CLIP as image_encoder")
        raise KindMismatch(f"{os.path.basename(filename)} is {what}, not {kind}", fix)
    return kind


def load_oracle(path, kind: str = "auto", device="cpu", dtype=torch.float32, preprocess: str = "auto",
                batch_size: int = 8, name: Optional[str] = None, image_encoder=None):
    """Load any supported oracle file strictly -> an Oracle (ImageRewardOracle, ClipOracle or
    AestheticOracle) whose `.model` is the torch module, on `device` in `dtype`, eval mode, no
    gradients. `image_encoder`: the CLIP file an aesthetic predictor reads (ignored by other kinds)."""
    path = os.fspath(path)
    return oracle_from_state_dict(read_state_dict(path, GET_ANY), path, kind, device, dtype, preprocess,
                                  batch_size, name, image_encoder)


def oracle_from_state_dict(raw, path, kind: str = "auto", device="cpu", dtype=torch.float32,
                           preprocess: str = "auto", batch_size: int = 8, name: Optional[str] = None,
                           image_encoder=None):
    """The oracle held by the raw tensors of the file `path` (see load_oracle)."""
    name = name or os.path.basename(path)
    raw = without_module_prefix(raw)
    kind = recognise(raw, path, kind)
    if kind == "ImageReward":
        model = image_reward_from_state_dict(raw, path, device, dtype)
        return ImageRewardOracle(model, preprocess=preprocess, batch_size=batch_size, name=name)
    if kind == AESTHETIC:
        return aesthetic_oracle(raw, path, image_encoder, device, dtype, preprocess, batch_size, name)
    sd, config, layout, fingerprint = checked_clip(raw, path, GET_ANY)
    model = build_clip(sd, config).to(device=device, dtype=dtype)
    return ClipOracle(model, kind, layout, preprocess=preprocess, batch_size=batch_size, name=name,
                      fingerprint=fingerprint)


def checked_clip(raw, path, get_it: str):
    """A CLIP file's raw tensors checked strictly -> (transformers-layout tensors, CLIPConfig, layout, fingerprint)."""
    layout = clip_layout(raw)
    sd = from_open_clip(raw, path, get_it) if layout == "open_clip" else raw
    sd, config = validate_clip(sd, path, get_it, *sidecar_config(path))
    return sd, config, layout, clip_fingerprint(sd, config)


def read_image_encoder(path, width: int, predictor: str):
    """The CLIP file an aesthetic predictor reads -> (tensors, CLIPConfig, fingerprint); every problem is an
    ImageEncoderError (the node names its image_encoder input)."""
    if not path:
        raise ImageEncoderError(f"{predictor} is an aesthetic predictor: it scores the image embeddings of a CLIP "
                                "model (OpenAI's ViT-L/14), and no CLIP file was given", GET_ENCODER)
    path = os.fspath(path)
    try:
        raw = without_module_prefix(read_state_dict(path, GET_ENCODER))
        if clip_layout(raw) is None:
            found = AESTHETIC if is_aesthetic(raw) else "ImageReward" if any(k.startswith("blip.") for k in raw) \
                else None
            what = f"{FAMILY_NAMES[found]}, " if found else ""
            raise _fail(path, f"it is {what}not a CLIP model in transformers or open_clip layout (found e.g. "
                              f"{', '.join(sorted(raw)[:3])}); {predictor} reads a CLIP's image embeddings",
                        GET_ENCODER)
        sd, config, _, fingerprint = checked_clip(raw, path, GET_ENCODER)
    except ImageEncoderError:
        raise
    except OracleLoadError as e:
        raise ImageEncoderError(e.problem, e.fix) from None
    if config.projection_dim != width:
        raise ImageEncoderError(f"{os.path.basename(path)}'s image embeddings have {config.projection_dim} "
                                f"dimensions, but {predictor} reads {width} (OpenAI CLIP ViT-L/14's are 768)",
                                GET_ENCODER)
    return sd, config, fingerprint


def aesthetic_oracle(raw, path, image_encoder, device, dtype, preprocess, batch_size, name):
    """LAION's aesthetic predictor (the file `path`) over the CLIP file `image_encoder`: its image tower
    in `dtype`, the MLP in float32."""
    mlp_sd, width = validate_aesthetic(raw, path, GET_PREDICTOR)
    sd, config, clip_print = read_image_encoder(image_encoder, width, os.path.basename(path))
    clip = build_clip_vision(sd, config).to(device=device, dtype=dtype)
    model = AestheticModel(clip, build_aesthetic(mlp_sd, width).to(device))
    return AestheticOracle(model, preprocess=preprocess, batch_size=batch_size, name=name,
                           fingerprint=aesthetic_fingerprint(mlp_sd, clip_print))

"""Safe, strict loading of ImageReward checkpoints.

Formats: the original ``ImageReward.pt`` (a plain state dict written by torch.save) and
``.safetensors`` (see ``python -m oracle.convert``). The format is recognised from the file's
first bytes, not its name. Pickles are read with ``torch.load(weights_only=True)`` only, which
never runs code from the file: a pickle that references any callable is refused.

Strictness: every scoring key must be present with the shape implied by the sizes inferred from
the file (ImageRewardConfig.from_state_dict); nothing else may be present except the keys that
public ImageReward.pt files carry but scoring never uses (OPTIONAL_KEYS), which are dropped.
Every failure raises OracleLoadError naming the file, what is wrong and how to fix it.
"""
import os
import pickle
import re
import struct
from typing import Dict, List, Optional, Tuple

import torch

from .base import weights_fingerprint
from .image_reward import ImageReward, ImageRewardConfig

OPTIONAL_KEYS = frozenset({
    "blip.vision_proj.weight", "blip.vision_proj.bias",
    "blip.text_proj.weight", "blip.text_proj.bias",
    "blip.text_encoder.embeddings.position_ids",
})
WRAPPER_KEYS = ("state_dict", "model")  # also accepted: {"state_dict": sd} / {"model": sd}
WEIGHT_EXTENSIONS = (".pt", ".pth", ".bin", ".safetensors")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

GET_IT = "download ImageReward.pt (huggingface.co/THUDM/ImageReward) into ComfyUI/models/image_reward/"


class OracleLoadError(RuntimeError):
    """A reward-model file could not be loaded: `problem` says what is wrong with the file (named,
    not its whole path), `fix` what to do."""

    def __init__(self, problem: str, fix: str):
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem}. Fix: {fix}")


def _fail(path, what, fix=GET_IT):
    return OracleLoadError(f"{os.path.basename(os.fspath(path))}: {what}", fix)


def _list(keys, n=5):
    keys = sorted(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _first_sentence(e: BaseException, limit: int = 200) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text.split(". ")[0].rstrip(".")[:limit]


def layout_problems(sd: Dict[str, torch.Tensor], expected: Dict[str, tuple]) -> List[str]:
    """What keeps a state dict from matching the expected {key: shape}: missing, unexpected, misshapen
    and non-float tensors, each a short phrase (empty when it matches)."""
    missing, unexpected = set(expected) - set(sd), set(sd) - set(expected)
    wrong = [f"{k} expected {list(expected[k])}, found {list(sd[k].shape)}"
             for k in sorted(set(expected) & set(sd)) if tuple(sd[k].shape) != tuple(expected[k])]
    not_float = sorted(k for k in set(expected) & set(sd) if not sd[k].is_floating_point())
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_list(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_list(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape: " + "; ".join(wrong[:5])
                        + (f" ... (+{len(wrong) - 5} more)" if len(wrong) > 5 else ""))
    if not_float:
        problems.append(f"{len(not_float)} non-float tensor(s): {_list(not_float)}")
    return problems


def sniff_format(path: str, get_it: str = GET_IT) -> str:
    """'zip' (torch.save), 'pickle' (legacy torch.save / raw pickle), 'safetensors', or raise."""
    if not os.path.exists(path):
        raise _fail(path, "the file does not exist", get_it)
    if not os.path.isfile(path):
        raise _fail(path, "it is not a regular file", "pass the checkpoint file itself")
    size = os.path.getsize(path)
    if size == 0:
        raise _fail(path, "the file is empty (0 bytes; an interrupted download?)",
                    "download it again: " + get_it)
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and n <= size - 8:
            return "safetensors"
        if head[8:9] == b"{":
            raise _fail(path, f"it looks like a safetensors file but is truncated or corrupt (its "
                              f"header claims {n} bytes, the file has {size})",
                        "convert or download it again: " + get_it)
    kind = "a text or JSON file" if head.lstrip()[:1] in (b"{", b"[") or head.isascii() else \
        "an unknown binary format"
    raise _fail(path, f"it is not a model checkpoint (it looks like {kind}, neither a PyTorch "
                      ".pt/.pth file nor a .safetensors file)", get_it)


def _read_torch(path: str, get_it: str) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "Unsupported" in msg or "global" in msg.lower():
            m = re.search(r"Unsupported (?:global|operand)[^.;]*?(GLOBAL \S+|\S+)(?= was|\.|;|$)",
                          msg)
            detail = m.group(0).rstrip(". ") if m else "not plain tensors"
            raise _fail(path, "refused: the file's pickle asks to build objects or call code that a "
                              "safe weights-only load does not allow, so it was NOT run "
                              f"({detail}); the file may be malicious or is not a plain state dict",
                        get_it) from None
        raise _fail(path, f"the pickle data is corrupt or not a checkpoint ({msg.strip()[:200]})",
                    "download it again: " + get_it) from None
    except (RuntimeError, EOFError, ValueError, OSError, struct.error, KeyError) as e:
        raise _fail(path, f"the file is truncated or corrupt ({type(e).__name__}: "
                          f"{_first_sentence(e)})",
                    "download or convert it again (compare its size with the original's); " + get_it) from None


def _read_safetensors(path: str, get_it: str) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    try:
        return load_file(path, device="cpu")
    except Exception as e:  # SafetensorError, OSError, ...
        raise _fail(path, f"the safetensors file is truncated or corrupt ({type(e).__name__}: "
                          f"{_first_sentence(e)})",
                    "convert or download it again: " + get_it) from None


def read_state_dict(path: str, get_it: str = GET_IT) -> Dict[str, torch.Tensor]:
    """Raw tensors of a checkpoint file (wrappers removed), nothing validated yet. `get_it` is the
    fix an error suggests (where the file comes from)."""
    path = os.fspath(path)
    fmt = sniff_format(path, get_it)
    obj = _read_safetensors(path, get_it) if fmt == "safetensors" else _read_torch(path, get_it)
    if isinstance(obj, dict):
        for w in WRAPPER_KEYS:
            inner = obj.get(w)
            if isinstance(inner, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj:
        raise _fail(path, f"it holds a {type(obj).__name__}, not a state dict of tensors",
                    get_it)
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise _fail(path, f"{len(bad)} entries are not tensors ({_list(map(str, bad))}); it is not "
                          "a plain state dict", get_it)
    return obj


def validate_state_dict(sd: Dict[str, torch.Tensor], path: str = "<state dict>",
                        config: Optional[ImageRewardConfig] = None
                        ) -> Tuple[Dict[str, torch.Tensor], ImageRewardConfig]:
    """Strict check -> (scoring tensors only, config). Raises OracleLoadError."""
    sd = {k: v for k, v in sd.items() if k not in OPTIONAL_KEYS}
    if not any(k.startswith(("blip.visual_encoder.", "blip.text_encoder.", "mlp.")) for k in sd):
        raise _fail(path, "it is not an ImageReward checkpoint (no blip.visual_encoder.*, "
                          f"blip.text_encoder.* or mlp.* keys; found e.g. {_list(sd, 3)})", GET_IT)
    if config is None:
        try:
            config = ImageRewardConfig.from_state_dict(sd)
        except KeyError as e:
            raise _fail(path, f"missing key {e.args[0]} (needed to work out the model's sizes; "
                              f"the file has {len(sd)} scoring tensors, the real model 620)",
                        GET_IT) from None
        except ValueError as e:
            raise _fail(path, f"inconsistent shapes: {e}", GET_IT) from None
        full = ImageRewardConfig.full()
        if (config.vision_width, config.text_hidden) == (full.vision_width, full.text_hidden) and \
                (config.vision_depth, config.text_layers) != (full.vision_depth, full.text_layers):
            # a real-size file with whole layers missing: report them against the real layout
            config = ImageRewardConfig(**{**config.to_dict(), "vision_depth": full.vision_depth,
                                          "text_layers": full.text_layers})
    with torch.device("meta"):
        expected = ImageReward(config).expected_keys()
    problems = layout_problems(sd, expected)
    if problems:
        raise _fail(path, "it does not match the ImageReward layout: " + "; ".join(problems),
                    GET_IT)
    return sd, config


def load_image_reward(path, device="cpu", dtype=torch.float32,
                      config: Optional[ImageRewardConfig] = None) -> ImageReward:
    """Load an ImageReward checkpoint (.pt/.pth via weights-only torch.load, or .safetensors)
    strictly into ImageReward, in eval mode, without gradients, on ``device`` in ``dtype``."""
    path = os.fspath(path)
    return image_reward_from_state_dict(read_state_dict(path), path, device, dtype, config)


def image_reward_from_state_dict(raw: Dict[str, torch.Tensor], path, device="cpu", dtype=torch.float32,
                                 config: Optional[ImageRewardConfig] = None) -> ImageReward:
    """ImageReward from the raw tensors of the file `path` (checked strictly, as load_image_reward)."""
    sd, config = validate_state_dict(raw, path, config)
    with torch.device("meta"):
        model = ImageReward(config)
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:  # pragma: no cover - validate_state_dict checks the same things
        raise _fail(path, f"load_state_dict failed: {e}", GET_IT) from None
    model.fingerprint = weights_fingerprint(sd)
    del sd
    model = model.to(device=device, dtype=dtype)
    model.requires_grad_(False)
    model.eval()
    model.checkpoint_path = os.path.abspath(path)
    return model

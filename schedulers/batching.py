"""Sub-batches: send only some samples to the teacher and put them back in place."""
import math
from typing import Sequence

import torch

from .errors import InputError


def take_rows(x, indices: Sequence[int], batch_size: int):
    """Rows `indices` of a per-sample tensor or tuple; values that broadcast (batch 1) or are not
    per-sample pass through unchanged."""
    if batch_size > 1 and isinstance(x, torch.Tensor) and x.ndim > 0 and x.shape[0] == batch_size:
        return x[list(indices)]
    if batch_size > 1 and isinstance(x, tuple) and len(x) == batch_size:
        return tuple(x[i] for i in indices)
    return x


def take_sample_entries(value, indices: Sequence[int], batch_size: int):
    """The rows `indices` of every per-sample tensor in a conditioning's extras, found by rule: a tensor
    (also inside a list or dict) whose first dimension is the batch holds one entry per sample (masks,
    inpaint latents and masks, pooled outputs, reference latents, whatever the next ComfyUI node adds);
    anything else (batch-1 tensors, which broadcast; numbers; tuples such as an area; objects) passes
    through unchanged."""
    if isinstance(value, torch.Tensor):
        return take_rows(value, indices, batch_size)
    if isinstance(value, list):
        return [take_sample_entries(v, indices, batch_size) for v in value]
    if isinstance(value, dict):
        return {k: take_sample_entries(v, indices, batch_size) for k, v in value.items()}
    return value


def put_rows(base: torch.Tensor, indices: Sequence[int], rows: torch.Tensor) -> torch.Tensor:
    """A copy of `base` with rows `indices` replaced; the other rows stay bit-identical."""
    if rows.shape[0] != len(indices) or rows.shape[1:] != base.shape[1:]:
        raise InputError("latent", f"cannot put {tuple(rows.shape)} into rows {list(indices)} of {tuple(base.shape)}",
                         "give the teacher the same latent size as the student")
    out = base.clone()
    if len(indices):
        out[list(indices)] = rows.to(device=out.device, dtype=out.dtype)
    return out


def batch_indices(latent: dict) -> list:
    """A LATENT's per-sample batch indices (ComfyUI's 'batch_index', default 0..B-1)."""
    n = int(latent["samples"].shape[0])
    idx = latent.get("batch_index")
    if idx is None:
        return list(range(n))
    if len(idx) != n:
        raise InputError("latent", f"batch_index has {len(idx)} entries for {n} samples",
                         "rebuild the latent batch with ComfyUI's batch nodes")
    return [int(i) for i in idx]


MAX_REPEAT = 4  # the pack's cap; ComfyUI, batching conditionings in pairs, stops at 4x too (comfy/conds.py)


def shared_token_length(lengths: Sequence[int]) -> int:
    """The token length prompts of these lengths share in one batch: their least common multiple (each
    repeated to it), refused when that grows past MAX_REPEAT times the longest (1..7 chunks -> 420)."""
    lengths = sorted({int(n) for n in lengths})
    length = math.lcm(*lengths)
    if length > MAX_REPEAT * lengths[-1]:
        raise InputError("prompts", f"prompts of {', '.join(map(str, lengths))} tokens would each be repeated to "
                         f"{length} tokens to share one batch", "give one list prompts of like lengths (a chunk is "
                         "77 tokens), or shorten the longest prompts")
    return length

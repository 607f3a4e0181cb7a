"""The small protocol every reward oracle of the pack implements.

An oracle maps (images, prompts) to one float score per pair, higher = better. It knows nothing
about ComfyUI: images are plain float tensors [B, H, W, 3] in 0..1 (ComfyUI's IMAGE layout).
"""
from typing import Protocol, Sequence, Union, runtime_checkable

import torch


@runtime_checkable
class Oracle(Protocol):
    """A scorer of (image, prompt) pairs.

    ``name`` is shown to users (node outputs, logs, calibration metadata).
    ``score(images, prompts)`` takes images as a float tensor [B, H, W, 3] in 0..1 (on any
    device; a list of [H, W, 3] images of different sizes is also allowed) and ``prompts`` as a
    list of B strings or a single string used for every image; it returns a float32 CPU tensor
    [B] of scores (higher = better).
    """

    name: str

    def score(self, images, prompts: Union[str, Sequence[str]]) -> torch.Tensor:  # pragma: no cover
        ...

"""The small protocol every reward oracle of the pack implements, and what the scorers share.

An oracle maps (images, prompts) to one float score per pair, higher = better. It knows nothing
about ComfyUI: images are plain float tensors [B, H, W, 3] in 0..1 (ComfyUI's IMAGE layout).
"""
import hashlib
from typing import List, Mapping, Protocol, Sequence, Tuple, Union, runtime_checkable

import torch

from .preprocess import preprocess_exact, preprocess_fast, split_images

PREPROCESS_MODES = ("auto", "exact", "fast")


@runtime_checkable
class Oracle(Protocol):
    """A scorer of (image, prompt) pairs.

    ``name`` is shown to users (node outputs, logs, calibration metadata); ``kind`` says what the
    score means ("ImageReward", "PickScore", ...); ``fingerprint`` identifies the weights, so a
    calibration made with other weights is refused.
    ``score(images, prompts)`` takes images as a float tensor [B, H, W, 3] in 0..1 (on any
    device; a list of [H, W, 3] images of different sizes is also allowed) and ``prompts`` as a
    list of B strings or a single string used for every image; it returns a float32 CPU tensor
    [B] of scores (higher = better).
    """

    name: str
    kind: str
    fingerprint: str

    def score(self, images, prompts: Union[str, Sequence[str]]) -> torch.Tensor:  # pragma: no cover
        ...


def weights_fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A short hash of a model's weights: key names, shapes and 1024 evenly spaced values of each
    tensor, rounded to float16 (so fp32 and fp16 copies of one model agree). Cheap on big models."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach()
        flat = t.reshape(-1)
        if flat.numel() > 1024:
            flat = flat[torch.arange(1024, device=flat.device) * (flat.numel() - 1) // 1023]
        h.update(f"{key}{tuple(t.shape)}".encode())
        h.update(flat.to(device="cpu", dtype=torch.float16).numpy().tobytes())
    return h.hexdigest()[:16]


def pair_up(images, prompts) -> Tuple[Union[torch.Tensor, List], List[str]]:
    """(images as a [B,H,W,C] tensor or a list of [H,W,C], B prompts): one prompt is repeated for
    every image; any other count than B is an error."""
    if isinstance(images, torch.Tensor) and images.ndim == 3:
        images = images[None]
    if not isinstance(images, torch.Tensor):
        images = split_images(images)
    n = len(images)
    prompts = [prompts] * n if isinstance(prompts, str) else list(prompts)
    if len(prompts) == 1 and n > 1:
        prompts = prompts * n
    if len(prompts) != n:
        raise ValueError(f"got {n} images but {len(prompts)} prompts; give one prompt per "
                         "image, or a single prompt for all of them")
    return images, prompts


class BatchedScorer:
    """What the oracles share: inputs paired up, scored `batch_size` at a time on whichever device
    and dtype the model is on now (ComfyUI's model manager may move it between calls), pixels
    prepared like the oracle's reference. Subclasses define `_score_batch(pixels, prompts)`."""

    image_size = 224
    crop = "round"

    def __init__(self, model: torch.nn.Module, preprocess: str, batch_size: int, name: str, kind: str,
                 fingerprint: str):
        if preprocess not in PREPROCESS_MODES:
            raise ValueError(f"preprocess must be one of {PREPROCESS_MODES}, got {preprocess!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.preprocess = preprocess
        self.batch_size = int(batch_size)
        self.name, self.kind, self.fingerprint = name, kind, fingerprint

    def device_dtype(self):
        p = next(self.model.parameters())
        return p.device, p.dtype

    def pixels(self, images, device, dtype) -> torch.Tensor:
        """exact: PIL, image by image, on the CPU; fast: the same pixels, batched on the model's
        device; auto: exact on the CPU, fast elsewhere."""
        fast = self.preprocess == "fast" or (self.preprocess == "auto" and device.type != "cpu")
        if fast:
            px = preprocess_fast(images, self.image_size, device=device, crop=self.crop)
        else:
            px = preprocess_exact(images, self.image_size, crop=self.crop)
        return px.to(device=device, dtype=dtype)

    @torch.inference_mode()
    def score(self, images, prompts: Union[str, Sequence[str]]) -> torch.Tensor:
        """images [B,H,W,3] float 0..1 (any device) or a list of [H,W,3]; prompts: B strings or
        one string for all -> float32 CPU tensor [B]."""
        images, prompts = pair_up(images, prompts)
        if not len(prompts):
            return torch.zeros(0, dtype=torch.float32)
        self.model.eval()
        out = []
        for s in range(0, len(prompts), self.batch_size):
            device, dtype = self.device_dtype()  # re-read: the model may have moved
            px = self.pixels(images[s: s + self.batch_size], device, dtype)
            out.append(self._score_batch(px, prompts[s: s + self.batch_size]).float().cpu())
        return torch.cat(out)

    def _score_batch(self, pixels: torch.Tensor, prompts: List[str]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self):
        device, dtype = self.device_dtype()
        return (f"{type(self).__name__}(name={self.name!r}, kind={self.kind!r}, preprocess={self.preprocess!r}, "
                f"batch_size={self.batch_size}, device={device}, dtype={dtype})")

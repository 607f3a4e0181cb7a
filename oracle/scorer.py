"""ImageRewardOracle: the Oracle that scores ComfyUI IMAGE batches with an ImageReward model."""
from typing import Optional, Sequence, Union

import torch

from .image_reward import ImageReward
from .preprocess import preprocess_exact, preprocess_fast, split_images
from .tokenizer import BertTokenizer

PREPROCESS_MODES = ("exact", "fast")


class ImageRewardOracle:
    """Scores (image, prompt) pairs with ImageReward; implements ``Oracle``.

    The model may be moved between devices / dtypes by someone else (ComfyUI's model manager)
    at any time: every call reads the device and dtype from the model's parameters and casts
    the inputs to them. The reward head always runs in float32.
    """

    def __init__(self, model: ImageReward, tokenizer: Optional[BertTokenizer] = None,
                 preprocess: str = "exact", batch_size: int = 8, name: str = "ImageReward"):
        if not isinstance(model, ImageReward):
            raise TypeError(f"model must be an oracle.ImageReward (load it with "
                            f"load_image_reward(path)), got {type(model).__name__}")
        if preprocess not in PREPROCESS_MODES:
            raise ValueError(f"preprocess must be one of {PREPROCESS_MODES}, got {preprocess!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer or BertTokenizer.for_checkpoint(
            getattr(model, "checkpoint_path", None), max_length=model.config.max_length)
        if self.tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(
                f"the tokenizer's vocabulary ({self.tokenizer.vocab_size} tokens, from "
                f"{getattr(self.tokenizer, 'vocab_path', '?')}) is larger than the model's "
                f"embedding table ({model.config.vocab_size}); use bert-base-uncased's vocab.txt")
        self.preprocess = preprocess
        self.batch_size = int(batch_size)
        self.name = name

    def _device_dtype(self):
        p = next(self.model.parameters())
        return p.device, p.dtype

    def _pixels(self, images, device, dtype) -> torch.Tensor:
        size = self.model.config.image_size
        if self.preprocess == "exact":
            px = preprocess_exact(images, size)
        else:
            px = preprocess_fast(images, size, device=device)
        return px.to(device=device, dtype=dtype)

    @torch.inference_mode()
    def score(self, images, prompts: Union[str, Sequence[str]]) -> torch.Tensor:
        """images [B,H,W,3] float 0..1 (any device) or a list of [H,W,3]; prompts: B strings or
        one string for all -> float32 CPU tensor [B] of normalised rewards."""
        if isinstance(images, torch.Tensor) and images.ndim == 3:
            images = images[None]
        n = images.shape[0] if isinstance(images, torch.Tensor) else len(split_images(images))
        if isinstance(prompts, str):
            prompts = [prompts] * n
        prompts = list(prompts)
        if len(prompts) == 1 and n > 1:
            prompts = prompts * n
        if len(prompts) != n:
            raise ValueError(f"got {n} images but {len(prompts)} prompts; give one prompt per "
                             "image, or a single prompt for all of them")
        if n == 0:
            return torch.zeros(0, dtype=torch.float32)
        if not isinstance(images, torch.Tensor):
            images = split_images(images)
        self.model.eval()
        out = []
        for s in range(0, n, self.batch_size):
            device, dtype = self._device_dtype()  # re-read: the model may have moved
            chunk = images[s: s + self.batch_size]
            px = self._pixels(chunk, device, dtype)
            ids, mask = self.tokenizer(prompts[s: s + self.batch_size])
            r = self.model(px, ids.to(device), mask.to(device))
            out.append(r.float().cpu())
        return torch.cat(out)

    def __repr__(self):
        device, dtype = self._device_dtype()
        return (f"ImageRewardOracle(name={self.name!r}, preprocess={self.preprocess!r}, "
                f"batch_size={self.batch_size}, device={device}, dtype={dtype})")

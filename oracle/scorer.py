"""ImageRewardOracle: the Oracle that scores ComfyUI IMAGE batches with an ImageReward model."""
from typing import List, Optional

import torch

from .base import BatchedScorer, weights_fingerprint
from .image_reward import ImageReward
from .tokenizer import BertTokenizer


class ImageRewardOracle(BatchedScorer):
    """Scores (image, prompt) pairs with ImageReward (the normalised reward, ~N(0, 1) over its
    training set); implements ``Oracle``. The reward head always runs in float32."""

    def __init__(self, model: ImageReward, tokenizer: Optional[BertTokenizer] = None,
                 preprocess: str = "auto", batch_size: int = 8, name: str = "ImageReward",
                 fingerprint: Optional[str] = None):
        if not isinstance(model, ImageReward):
            raise TypeError(f"model must be an oracle.ImageReward (load it with "
                            f"load_image_reward(path)), got {type(model).__name__}")
        super().__init__(model, preprocess, batch_size, name, "ImageReward",
                         fingerprint or getattr(model, "fingerprint", None) or weights_fingerprint(model.state_dict()))
        self.image_size = model.config.image_size
        self.tokenizer = tokenizer or BertTokenizer.for_checkpoint(
            getattr(model, "checkpoint_path", None), max_length=model.config.max_length)
        if self.tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(
                f"the tokenizer's vocabulary ({self.tokenizer.vocab_size} tokens, from "
                f"{getattr(self.tokenizer, 'vocab_path', '?')}) is larger than the model's "
                f"embedding table ({model.config.vocab_size}); use bert-base-uncased's vocab.txt")

    def _score_batch(self, pixels: torch.Tensor, prompts: List[str]) -> torch.Tensor:
        ids, mask = self.tokenizer(prompts)
        return self.model(pixels, ids.to(pixels.device), mask.to(pixels.device))

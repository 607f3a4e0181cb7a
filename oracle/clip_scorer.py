"""ClipOracle: CLIP score, PickScore and HPSv2 -- one CLIP model, three readings of its cosine.

    CLIP score  100 * max(cos(image, text), 0)          Hessel et al. 2021 (CLIPScore without its
                                                         w = 2.5), per pair: torchmetrics' formula
    PickScore   exp(logit_scale) * cos(image, text)     Kirstain et al. 2023 (~ 18..23 for
                                                         good pairs with PickScore_v1)
    HPSv2       cos(image, text)                        Wu et al. 2023 (~ 0.2..0.3; HPS v2 and v2.1)

Each reads its model's own tokenizer and image preprocessing: transformers-layout checkpoints
(PickScore, Hugging Face CLIPs) as Hugging Face's CLIPProcessor does, open_clip-layout ones
(HPSv2, OpenCLIP) as open_clip does (see clip_tokenizer.py and preprocess.py for the differences);
HPSv2's images as the hpsv2 package's score() prepares them (padded to a square, not cropped).
The CLIP score follows the model's own library, not torchmetrics' CLIPScore: transformers' CLIPModel
with CLIPProcessor (Pillow image processor) for transformers-layout files, open_clip for
open_clip-layout ones. Both truncate a prompt over 77 tokens keeping the end token, which the
text tower pools; torchmetrics instead cuts the token ids at 77, dropping the end token, so its
scores of long prompts differ (the same for prompts that fit).
Features are compared in float32, whatever dtype the model runs in.
"""
from typing import List, Optional

import torch
import torch.nn.functional as F

from .base import BatchedScorer, weights_fingerprint
from .clip_tokenizer import ClipTokenizer

KINDS = ("CLIP score", "PickScore", "HPSv2")
REFERENCE_STYLE = {"transformers": ("hf", "floor"), "open_clip": ("open_clip", "round")}


class ClipOracle(BatchedScorer):
    """Scores (image, prompt) pairs with a transformers CLIPModel; implements ``Oracle``.
    `layout` ("transformers" or "open_clip") is where the weights came from: it picks the
    reference's tokenizer cleaning and centre crop (HPSv2 pads instead, as hpsv2's score() does)."""

    def __init__(self, model, kind: str, layout: str = "transformers", preprocess: str = "auto",
                 batch_size: int = 8, name: Optional[str] = None, fingerprint: Optional[str] = None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if layout not in REFERENCE_STYLE:
            raise ValueError(f"layout must be one of {tuple(REFERENCE_STYLE)}, got {layout!r}")
        super().__init__(model, preprocess, batch_size, name or kind, kind,
                         fingerprint or weights_fingerprint(model.state_dict()))
        cleaning, self.crop = REFERENCE_STYLE[layout]
        if kind == "HPSv2":
            self.crop = "pad"
        self.layout = layout
        self.image_size = model.config.vision_config.image_size
        self.tokenizer = ClipTokenizer(cleaning, model.config.text_config.max_position_embeddings)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    def text_features(self, prompts: List[str], device) -> torch.Tensor:
        """Each distinct prompt is encoded once (a gate often scores a batch against one prompt)."""
        row = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
        ids = self.tokenizer(list(row)).to(device)
        pooled = self.model.text_model(input_ids=ids).pooler_output
        feats = F.normalize(self.model.text_projection(pooled).float(), dim=-1)
        return feats[[row[p] for p in prompts]]

    def cosine(self, pixels: torch.Tensor, prompts: List[str]) -> torch.Tensor:
        return (self.image_features(pixels) * self.text_features(prompts, pixels.device)).sum(-1)

    def _score_batch(self, pixels: torch.Tensor, prompts: List[str]) -> torch.Tensor:
        return self.reading(self.cosine(pixels, prompts))

    def reading(self, cos: torch.Tensor) -> torch.Tensor:
        """The score this kind makes of cosine similarities."""
        if self.kind == "CLIP score":
            return 100.0 * cos.clamp(min=0)
        if self.kind == "PickScore":
            return self.model.logit_scale.float().exp() * cos
        return cos

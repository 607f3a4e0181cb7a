"""ImageReward (Xu et al. 2023) in plain torch, with the original checkpoint's key names.

    blip.visual_encoder.*   BLIP ViT (ViT-L/16 at 224 px in the real model)
    blip.text_encoder.*     BLIP's BERT-base with cross-attention to the image in every layer
    mlp.layers.{0,2,4,6,7}  the reward head 768 -> 1024 -> 128 -> 64 -> 16 -> 1 (no activations;
                            indices 1, 3, 5 were Dropout layers in the original, identity here)

reward = head(text_encoder(prompt tokens, cross-attending to visual_encoder(image))[:, 0]),
normalised as (reward - 0.16717362830052426) / 1.0333394966054072, the mean and std of the raw
reward over ImageReward's training set, so scores are roughly N(0, 1) there.
"""
import math
import re
from dataclasses import asdict, dataclass
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .bert import BertModel
from .vit import VisionTransformer

REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
MAX_LENGTH = 35  # the original tokenises with padding="max_length", truncation, max_length=35

VIS = "blip.visual_encoder."
TXT = "blip.text_encoder."
HEAD_LINEAR_INDICES = (0, 2, 4, 6, 7)


def heads_for_width(width: int) -> int:
    """Heads are not stored in a checkpoint: 64-wide heads, as in ViT-L (1024/16) and BERT-base
    (768/12). Widths below 64 get a single head."""
    return max(1, width // 64)


@dataclass
class ImageRewardConfig:
    # vision (BLIP ViT)
    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 1024
    vision_depth: int = 24
    vision_heads: int = 16
    vision_mlp_dim: int = 4096
    vision_eps: float = 1e-6
    # text (BLIP MED BERT)
    vocab_size: int = 30524
    text_hidden: int = 768
    text_layers: int = 12
    text_heads: int = 12
    text_intermediate: int = 3072
    max_positions: int = 512
    text_eps: float = 1e-12
    # reward head hidden sizes (Linear text_hidden->d0->d1->d2->d3->1)
    mlp_dims: Tuple[int, int, int, int] = (1024, 128, 64, 16)
    # scoring
    max_length: int = MAX_LENGTH
    reward_mean: float = REWARD_MEAN
    reward_std: float = REWARD_STD

    def __post_init__(self):
        self.mlp_dims = tuple(int(d) for d in self.mlp_dims)
        if len(self.mlp_dims) != 4:
            raise ValueError(f"mlp_dims must have 4 hidden sizes, got {self.mlp_dims}")
        if self.max_length > self.max_positions:
            raise ValueError(f"max_length {self.max_length} exceeds max_positions {self.max_positions}")

    @classmethod
    def full(cls) -> "ImageRewardConfig":
        """The real ImageReward-v1.0 sizes (ViT-L/16 224 px + BERT-base, ~446M parameters)."""
        return cls()

    @classmethod
    def tiny(cls) -> "ImageRewardConfig":
        """Same classes, tiny sizes, for fast tests (~2.1M parameters, mostly the 30524-token
        embedding table). Every size is recoverable by from_state_dict."""
        return cls(image_size=32, patch_size=16, vision_width=64, vision_depth=2,
                   vision_heads=heads_for_width(64), vision_mlp_dim=256,
                   vocab_size=30524, text_hidden=64, text_layers=2,
                   text_heads=heads_for_width(64), text_intermediate=128, max_positions=64,
                   mlp_dims=(64, 32, 16, 8))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> "ImageRewardConfig":
        """Infer every size from key shapes (no config file needed).

        Depths / layer counts come from the highest block index; head counts are not stored in
        checkpoints and follow ``heads_for_width`` (width // 64, at least 1). Raises KeyError
        naming the first key it needs and cannot find, ValueError for inconsistent shapes.
        """
        def get(key):
            if key not in sd:
                raise KeyError(key)
            return tuple(sd[key].shape)

        def count(prefix):
            pat = re.compile(re.escape(prefix) + r"(\d+)\.")
            idx = {int(m.group(1)) for k in sd for m in [pat.match(k)] if m}
            if not idx:
                raise KeyError(prefix + "0.*")
            return max(idx) + 1

        w, c, p, p2 = get(VIS + "patch_embed.proj.weight")
        if p != p2:
            raise ValueError(f"non-square patches {p}x{p2} in {VIS}patch_embed.proj.weight")
        n = get(VIS + "pos_embed")[1] - 1
        grid = math.isqrt(max(n, 0))
        if n <= 0 or grid * grid != n:
            raise ValueError(f"{VIS}pos_embed holds {n} patch positions, not a square grid")
        mlp_dim = get(VIS + "blocks.0.mlp.fc1.weight")[0]
        vocab, hidden = get(TXT + "embeddings.word_embeddings.weight")
        max_pos = get(TXT + "embeddings.position_embeddings.weight")[0]
        inter = get(TXT + "encoder.layer.0.intermediate.dense.weight")[0]
        enc_w = get(TXT + "encoder.layer.0.crossattention.self.key.weight")[1]
        if enc_w != w:
            raise ValueError(f"the text encoder cross-attends to width {enc_w} but the vision "
                             f"encoder has width {w}")
        dims = tuple(get(f"mlp.layers.{i}.weight")[0] for i in HEAD_LINEAR_INDICES[:4])
        return cls(image_size=grid * p, patch_size=p, vision_width=w,
                   vision_depth=count(VIS + "blocks."), vision_heads=heads_for_width(w),
                   vision_mlp_dim=mlp_dim, vocab_size=vocab, text_hidden=hidden,
                   text_layers=count(TXT + "encoder.layer."), text_heads=heads_for_width(hidden),
                   text_intermediate=inter, max_positions=max_pos,
                   max_length=min(MAX_LENGTH, max_pos), mlp_dims=dims)


class BLIP(nn.Module):
    """Container that gives the ``blip.`` key prefix (only the parts used for scoring)."""

    def __init__(self, cfg: ImageRewardConfig):
        super().__init__()
        self.visual_encoder = VisionTransformer(
            image_size=cfg.image_size, patch_size=cfg.patch_size, width=cfg.vision_width,
            depth=cfg.vision_depth, heads=cfg.vision_heads, mlp_dim=cfg.vision_mlp_dim,
            eps=cfg.vision_eps)
        self.text_encoder = BertModel(
            vocab_size=cfg.vocab_size, hidden=cfg.text_hidden, layers=cfg.text_layers,
            heads=cfg.text_heads, intermediate=cfg.text_intermediate,
            max_positions=cfg.max_positions, encoder_width=cfg.vision_width, eps=cfg.text_eps)


class RewardHead(nn.Module):
    """Linear stack with the original indices; it always computes in float32 (the original
    casts the text features with .float() before the head), whatever the model's dtype."""

    def __init__(self, in_dim: int, dims: Tuple[int, ...]):
        super().__init__()
        sizes = (in_dim,) + tuple(dims) + (1,)
        mods = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            mods.append(nn.Linear(a, b))
            if i < 3:
                mods.append(nn.Identity())  # Dropout in the original: identity at inference
        self.layers = nn.Sequential(*mods)
        for m in self.layers:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=1.0 / (in_dim + 1))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        for m in self.layers:
            if isinstance(m, nn.Linear):
                x = F.linear(x, m.weight.float(), m.bias.float())
        return x


class ImageReward(nn.Module):
    def __init__(self, config: Optional[ImageRewardConfig] = None):
        super().__init__()
        self.config = config or ImageRewardConfig.full()
        self.blip = BLIP(self.config)
        self.mlp = RewardHead(self.config.text_hidden, self.config.mlp_dims)
        self.checkpoint_path: Optional[str] = None  # set by load_image_reward
        self.eval()

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        w = self.blip.visual_encoder.patch_embed.proj.weight
        return self.blip.visual_encoder(pixels.to(device=w.device, dtype=w.dtype))

    def text_features(self, input_ids, attention_mask, image_embeds) -> torch.Tensor:
        dev = image_embeds.device
        return self.blip.text_encoder(input_ids.to(dev), attention_mask.to(dev), image_embeds)[:, 0]

    def raw_reward(self, pixels, input_ids, attention_mask) -> torch.Tensor:
        feats = self.text_features(input_ids, attention_mask, self.encode_image(pixels))
        return self.mlp(feats)[:, 0]

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
        """pixels [B,3,S,S] normalised, input_ids/attention_mask [B,L] -> normalised reward
        [B] float32 (on the model's device)."""
        r = self.raw_reward(pixels, input_ids, attention_mask)
        return (r - self.config.reward_mean) / self.config.reward_std

    def expected_keys(self) -> Dict[str, Tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.state_dict().items()}

"""BLIP's ViT image encoder in plain torch (key names as in BLIP / ImageReward checkpoints).

Pre-norm transformer blocks with a fused qkv projection, a [CLS] token, learned absolute
position embeddings and a final LayerNorm (eps 1e-6). Dropout / drop-path do not exist here:
this module only runs inference.

Keys (prefix ``blip.visual_encoder.`` in an ImageReward checkpoint)::

    cls_token [1,1,W]   pos_embed [1,1+N,W]   patch_embed.proj.{weight [W,3,P,P], bias}
    blocks.{i}.norm1 / attn.qkv [3W,W] / attn.proj [W,W] / norm2 / mlp.fc1 [M,W] / mlp.fc2 [W,M]
    norm.{weight, bias}
"""
import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, W]


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"vision width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # scale = head_dim ** -0.5
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU, as nn.GELU()


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_dim: int, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = Mlp(width, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, image_size: int = 224, patch_size: int = 16, width: int = 1024,
                 depth: int = 24, heads: int = 16, mlp_dim: int = 4096, eps: float = 1e-6,
                 in_chans: int = 3):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size = image_size
        self.patch_size = patch_size
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = PatchEmbed(patch_size, in_chans, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, width))
        self.blocks = nn.ModuleList(Block(width, heads, mlp_dim, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=eps)
        self._init_weights()

    def _init_weights(self):
        for p in (self.cls_token, self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, S, S] (normalised) -> image embeddings [B, 1 + N, W]."""
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            raise ValueError(f"expected {self.image_size}x{self.image_size} pixels, got "
                             f"{tuple(pixels.shape[-2:])}; preprocess the images first")
        x = self.patch_embed(pixels)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed[:, : x.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

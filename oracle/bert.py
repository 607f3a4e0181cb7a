"""BLIP's "MED" BERT text encoder in plain torch, in its multimodal mode: every layer runs
self-attention over the prompt tokens, then cross-attention from the tokens to the image
embeddings, then the feed-forward block (post-norm, as BERT). No pooler, no token-type
embeddings (BLIP's checkpoints have none).

Keys (prefix ``blip.text_encoder.`` in an ImageReward checkpoint)::

    embeddings.word_embeddings [V,H]  embeddings.position_embeddings [P,H]  embeddings.LayerNorm
    encoder.layer.{i}.attention.self.{query,key,value}  attention.output.{dense,LayerNorm}
    encoder.layer.{i}.crossattention.self.{query [H,H], key [H,E], value [H,E]}
    encoder.layer.{i}.crossattention.output.{dense,LayerNorm}
    encoder.layer.{i}.intermediate.dense [I,H]  output.dense [H,I]  output.LayerNorm

(``embeddings.position_ids`` is a constant arange buffer in the original; it is computed on the
fly here and tolerated but ignored by the loader.)
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class BertEmbeddings(nn.Module):
    def __init__(self, vocab_size: int, hidden: int, max_positions: int, eps: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[1]
        if n > self.position_embeddings.num_embeddings:
            raise ValueError(f"{n} tokens exceed the {self.position_embeddings.num_embeddings} "
                             "position embeddings of this text encoder")
        pos = torch.arange(n, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos)[None]
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_width: int):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"text hidden size {hidden} is not divisible by {heads} heads")
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(kv_width, hidden)
        self.value = nn.Linear(kv_width, hidden)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                mask: Optional[torch.Tensor]) -> torch.Tensor:
        q = self._split(self.query(x))
        k = self._split(self.key(context))
        v = self._split(self.value(context))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # / sqrt(head_dim)
        b, h, n, d = out.shape
        return out.transpose(1, 2).reshape(b, n, h * d)


class BertSelfOutput(nn.Module):
    def __init__(self, hidden: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_width: int, eps: float):
        super().__init__()
        self.self = BertSelfAttention(hidden, heads, kv_width)
        self.output = BertSelfOutput(hidden, eps)

    def forward(self, x, context, mask):
        return self.output(self.self(x, context, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)

    def forward(self, x):
        return F.gelu(self.dense(x))  # "gelu" in BERT's config = exact erf GELU


class BertOutput(nn.Module):
    def __init__(self, hidden: int, intermediate: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(intermediate, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, encoder_width: int, eps: float):
        super().__init__()
        self.attention = BertAttention(hidden, heads, hidden, eps)
        self.crossattention = BertAttention(hidden, heads, encoder_width, eps)
        self.intermediate = BertIntermediate(hidden, intermediate)
        self.output = BertOutput(hidden, intermediate, eps)

    def forward(self, x, self_mask, image_embeds):
        x = self.attention(x, x, self_mask)
        x = self.crossattention(x, image_embeds, None)  # every image token is attended
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, layers: int, **kw):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(**kw) for _ in range(layers))


class BertModel(nn.Module):
    def __init__(self, vocab_size: int = 30524, hidden: int = 768, layers: int = 12,
                 heads: int = 12, intermediate: int = 3072, max_positions: int = 512,
                 encoder_width: int = 1024, eps: float = 1e-12):
        super().__init__()
        self.embeddings = BertEmbeddings(vocab_size, hidden, max_positions, eps)
        self.encoder = BertEncoder(layers, hidden=hidden, heads=heads, intermediate=intermediate,
                                   encoder_width=encoder_width, eps=eps)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                image_embeds: torch.Tensor) -> torch.Tensor:
        """-> last hidden state [B, L, H]. attention_mask [B, L]: 1 = token, 0 = padding."""
        x = self.embeddings(input_ids)
        # bool mask: True = may attend. Padded keys are excluded (the original adds -10000,
        # which is exactly 0 after softmax in fp32 as well).
        mask = attention_mask.to(device=x.device, dtype=torch.bool)[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, mask, image_embeds)
        return x

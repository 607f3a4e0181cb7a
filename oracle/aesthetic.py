"""The LAION improved aesthetic predictor (christophschuhmann/improved-aesthetic-predictor) as an oracle.

    score = MLP(normalize(CLIP ViT-L/14 image embedding))     ~1..10, ~5-6 for a typical image

Two files: the predictor (``sac+logos+ava1-l14-linearMSE.pth``, a plain state dict of five Linear
layers, ``layers.{0,2,4,6,7}.*``: 768 -> 1024 -> 128 -> 64 -> 16 -> 1, Dropouts between the first
four, no activations) and the CLIP whose projected image embeddings it reads (OpenAI's ViT-L/14, a
file the CLIP oracles read too). It judges the image alone: prompts are accepted and ignored.
Images are prepared as OpenAI's `clip` package prepares them (bicubic resize of the short side,
torchvision's centre crop, CLIP mean/std), whatever layout the CLIP file has; the embedding is
L2-normalised as the reference's `normalized` does (a zero vector stays zero), and the MLP always
computes in float32, as the reference casts its input to a FloatTensor.
"""
import hashlib
import re
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import BatchedScorer, weights_fingerprint
from .checkpoint import _fail, layout_problems

KIND = "Aesthetic"
PREDICTOR_FILE = "sac+logos+ava1-l14-linearMSE.pth (github.com/christophschuhmann/improved-aesthetic-predictor)"
# where the reference's nn.Sequential keeps its Linear layers (Dropouts at 1, 3, 5 hold no weights),
# and their output widths; the input width is the CLIP's projection dim (768 for ViT-L/14)
LINEAR_AT = (0, 2, 4, 6, 7)
WIDTHS = (1024, 128, 64, 16, 1)
_KEY = re.compile(r"layers\.(\d+)\.(weight|bias)")


def is_aesthetic(sd: Mapping[str, torch.Tensor]) -> bool:
    """Every key is layers.N.weight / layers.N.bias: an MLP of this family (checked strictly later)."""
    return bool(sd) and all(_KEY.fullmatch(k) for k in sd)


def expected_shapes(width: int) -> Dict[str, Tuple[int, ...]]:
    sizes = (width,) + WIDTHS
    out = {}
    for at, n_in, n_out in zip(LINEAR_AT, sizes, sizes[1:]):
        out[f"layers.{at}.weight"], out[f"layers.{at}.bias"] = (n_out, n_in), (n_out,)
    return out


def validate_aesthetic(sd: Mapping[str, torch.Tensor], path: str, get_it: str) -> Tuple[Dict[str, torch.Tensor], int]:
    """Strict check of a predictor's tensors -> (tensors, input width). Raises OracleLoadError."""
    first = sd.get("layers.0.weight")
    if first is None or first.ndim != 2:
        raise _fail(path, "it has no layers.0.weight matrix, so it is not an aesthetic predictor's MLP", get_it)
    width = int(first.shape[1])
    at = sorted({int(_KEY.fullmatch(k).group(1)) for k in sd})
    if at != list(LINEAR_AT):  # e.g. ava+logos-l14-reluMSE.pth: ReLUs shift its layers to 0, 3, 6, 9, 11
        problems = [f"its Linear layers sit at {at}, not {list(LINEAR_AT)}: only the linear MLP without "
                    "activations is supported, not a ReLU variant"]
    else:
        problems = layout_problems(dict(sd), expected_shapes(width))
    if problems:
        raise _fail(path, "it does not match the aesthetic predictor's layout: " + "; ".join(problems), get_it)
    return dict(sd), width


class AestheticMLP(nn.Module):
    """The predictor's MLP under its original keys; Dropout is the identity when scoring."""

    def __init__(self, width: int):
        super().__init__()
        sizes, mods = (width,) + WIDTHS, []
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
            mods.append(nn.Linear(n_in, n_out))
            if i < 3:
                mods.append(nn.Dropout(0.0))
        self.layers = nn.Sequential(*mods)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        for m in self.layers:
            if isinstance(m, nn.Linear):  # float32 whatever dtype the oracle was loaded in
                x = F.linear(x, m.weight.float(), m.bias.float())
        return x[:, 0]


def normalized(x: torch.Tensor) -> torch.Tensor:
    """L2 normalisation as the reference's `normalized`: a zero norm divides by 1, not by an epsilon."""
    norm = x.norm(dim=-1, keepdim=True)
    return x / torch.where(norm == 0, torch.ones_like(norm), norm)


class AestheticModel(nn.Module):
    """CLIP image tower (first, so its parameters give the oracle's device and dtype) + the MLP."""

    def __init__(self, clip: nn.Module, mlp: AestheticMLP):
        super().__init__()
        self.clip, self.mlp = clip, mlp

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled = self.clip.vision_model(pixel_values=pixels).pooler_output
        return self.mlp(normalized(self.clip.visual_projection(pooled).float()))


def build_aesthetic(sd: Mapping[str, torch.Tensor], width: int) -> AestheticMLP:
    with torch.device("meta"):
        mlp = AestheticMLP(width)
    mlp.load_state_dict(dict(sd), strict=True, assign=True)
    return mlp.float().eval().requires_grad_(False)


def aesthetic_fingerprint(mlp_sd: Mapping[str, torch.Tensor], clip_fingerprint: str) -> str:
    """Both files' weights: the same predictor over another CLIP scores differently."""
    both = f"{KIND}:{weights_fingerprint(mlp_sd)}:{clip_fingerprint}"
    return hashlib.sha256(both.encode()).hexdigest()[:16]


class AestheticOracle(BatchedScorer):
    """Scores images with the aesthetic predictor; implements ``Oracle`` (prompts are ignored)."""

    crop = "round"  # OpenAI clip's preprocess: torchvision's CenterCrop, for either layout of the CLIP file

    def __init__(self, model: AestheticModel, preprocess: str = "auto", batch_size: int = 8,
                 name: Optional[str] = None, fingerprint: Optional[str] = None):
        super().__init__(model, preprocess, batch_size, name or KIND, KIND,
                         fingerprint or weights_fingerprint(model.state_dict()))
        self.image_size = model.clip.config.image_size

    def score(self, images, prompts: Union[str, Sequence[str], None] = "") -> torch.Tensor:
        # image-only: prompts are paired up (one, or one per image) and then not read
        return super().score(images, "" if prompts is None else prompts)

    def _score_batch(self, pixels: torch.Tensor, prompts) -> torch.Tensor:
        return self.model(pixels)

"""Pillow's bicubic resize of 8-bit images, batched in torch and bit-exact.

PIL (libImaging/Resample.c) resizes in two separable passes, each a convolution whose
double-precision weights are turned into 22-bit fixed-point integers; every pass rounds its sums
back to uint8, so the order of the passes changes the result. Pillow < 13 always goes horizontal
first; Pillow 13 (ImagingResampleInner's `horizontal_first`) goes vertical first when the height
shrinks by more than twice as many pixels as the width. The reference is the user's Pillow, so the
rule follows the installed version. Here the same weights act as a dense [in, out] matrix applied with a float64
matmul: every product and partial sum is an integer below 2^53, so the matmul is exact on any
device, and the result equals `Image.resize(..., Image.BICUBIC)` byte for byte (tests compare it
on adversarial images). A torch bicubic interpolation with antialias is close but not equal
(different kernel support at the edges, no rounding between the passes).
"""
from functools import lru_cache

import PIL
import torch

PILLOW_MAJOR = int(PIL.__version__.split(".")[0])

PRECISION_BITS = 32 - 8 - 2
BICUBIC_A = -0.5
BICUBIC_SUPPORT = 2.0


def bicubic(x: float) -> float:
    x = abs(x)
    if x < 1.0:
        return ((BICUBIC_A + 2.0) * x - (BICUBIC_A + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * BICUBIC_A
    return 0.0


def vertical_first(in_h: int, in_w: int, out_h: int, out_w: int, pillow_major: int = PILLOW_MAJOR) -> bool:
    """Whether Pillow runs the vertical pass first for this resize (see the module doc)."""
    return pillow_major >= 13 and in_h - out_h > 0 and in_h - out_h > 2 * (in_w - out_w)


@lru_cache(maxsize=64)
def fixed_point_weights(in_size: int, out_size: int) -> torch.Tensor:
    """[in_size, out_size] float64 matrix of PIL's integer weights for resizing in_size -> out_size
    (PIL's precompute_coeffs + normalize_coeffs_8bpc, same operations in the same order)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = BICUBIC_SUPPORT * filterscale
    ss = 1.0 / filterscale
    weights = torch.zeros(in_size, out_size, dtype=torch.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [bicubic((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        total = sum(k)
        for x, w in enumerate(k):
            w = w / total if total != 0.0 else w
            fixed = w * (1 << PRECISION_BITS)
            weights[xmin + x, xx] = float(int(fixed - 0.5) if fixed < 0 else int(fixed + 0.5))
    return weights


def _pass(x: torch.Tensor, out_size: int, keep: slice) -> torch.Tensor:
    """Resize the last dimension of x (float64 holding uint8 values) like one PIL pass; only the
    outputs in `keep` are computed (each output depends on the input alone)."""
    w = fixed_point_weights(x.shape[-1], out_size)[:, keep].to(x.device)
    acc = x @ w + float(1 << (PRECISION_BITS - 1))
    return torch.floor(acc / float(1 << PRECISION_BITS)).clamp_(0, 255)


def pil_bicubic_resize(x: torch.Tensor, height: int, width: int, rows: slice = slice(None),
                       cols: slice = slice(None)) -> torch.Tensor:
    """x [..., H, W] holding integer values 0..255 (any dtype) -> float64 [..., height, width][rows,
    cols], holding what PIL's bicubic resize of that uint8 image returns (then cropped). The passes
    run in Pillow's order; an unchanged dimension is not resampled (PIL skips that pass too)."""
    x = x.to(torch.float64)

    def horizontal(x):
        return _pass(x, width, cols) if x.shape[-1] != width else x[..., cols]

    def vertical(x):
        if x.shape[-2] != height:
            return _pass(x.transpose(-1, -2), height, rows).transpose(-1, -2)
        return x[..., rows, :]

    if vertical_first(x.shape[-2], x.shape[-1], height, width):
        return horizontal(vertical(x))
    return vertical(horizontal(x))

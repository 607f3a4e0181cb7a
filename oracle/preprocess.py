"""Image preprocessing for the oracles (ImageReward, and the CLIP-family scores).

ImageReward, PickScore and the CLIP score resize a PIL image:
    Resize(S, BICUBIC) of the short side (PIL resample; the long side becomes
    int(S * long / short), truncated; no resize at all when the short side already is S)
    -> CenterCrop(S) -> RGB -> /255 -> Normalize(CLIP mean, CLIP std), all in float32.
The centre crop's offsets differ by reference: torchvision (ImageReward, open_clip) rounds
(dim - S) / 2 with Python's round(); Hugging Face's CLIPImageProcessor (PickScore, transformers
CLIP) floors it. HPSv2 follows the hpsv2 package's score() instead (crop "pad", see padded()): the
whole image, its long side resized to S in float by torchvision, padded to a square with black.
ComfyUI IMAGE floats are first turned into uint8 as ComfyUI's SaveImage does:
    np.clip(255. * x, 0, 255).astype(np.uint8)   (truncation, not rounding)
Alpha channels are ignored; grey images are repeated to RGB.

``exact`` runs that pipeline image by image on the CPU (PIL + numpy; torch for "pad"). ``fast``
runs it batched in torch on the model's device, with Pillow's own resampling arithmetic
(oracle/pil_resize.py), and gives the same pixels bit for bit ("pad": the same torch ops, equal on
the CPU).
"""
from typing import List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .pil_resize import pil_bicubic_resize

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ImagesLike = Union[torch.Tensor, np.ndarray, Sequence[Union[torch.Tensor, np.ndarray]]]


def resized_size(h: int, w: int, size: int) -> Tuple[int, int]:
    """torchvision's Resize(int) output (h, w): short side -> size, long side truncated."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if w <= h else (new_short, new_long)


def crop_offsets(h: int, w: int, size: int, rounding: str = "round") -> Tuple[int, int]:
    """Centre-crop offsets (top, left): torchvision's CenterCrop ("round", Python rounding) or
    Hugging Face's center_crop ("floor")."""
    if rounding == "floor":
        return (h - size) // 2, (w - size) // 2
    if rounding != "round":
        raise ValueError(f"crop rounding {rounding!r}: use 'round' (torchvision) or 'floor' (transformers)")
    return int(round((h - size) / 2.0)), int(round((w - size) / 2.0))


def split_images(images: ImagesLike) -> List:
    """A [B,H,W,C] batch or a list of [H,W,C] images -> list of [H,W,C] images."""
    if isinstance(images, (torch.Tensor, np.ndarray)):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise ValueError(f"images must be [B, H, W, C] (ComfyUI IMAGE), got shape "
                             f"{tuple(images.shape)}")
        return [images[i] for i in range(images.shape[0])]
    out = list(images)
    for i, im in enumerate(out):
        if not isinstance(im, (torch.Tensor, np.ndarray)) or im.ndim not in (2, 3):
            raise ValueError(f"image {i} must be an [H, W, C] tensor or array, got "
                             f"{type(im).__name__} {tuple(getattr(im, 'shape', ()))}")
    return out


def to_uint8(image) -> np.ndarray:
    """[H,W,C] float 0..1 (tensor or array, any device) or uint8 -> uint8 array, ComfyUI-style."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dtype == torch.uint8:
            return image.numpy()
        if image.dtype not in (torch.float32, torch.float64):
            image = image.float()
        image = image.numpy()
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"images must be float 0..1 or uint8, got {image.dtype}")
    return np.clip(255.0 * image, 0, 255).astype(np.uint8)


def _to_pil(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return Image.fromarray(arr, "L")
    if arr.shape[-1] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(arr[..., :3]), "RGB")
    raise ValueError(f"images must have 1, 3 or 4 channels, got {arr.shape[-1]}")


def standardised(x: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] float32 in 0..1 -> CLIP's mean and std: one copy of the arithmetic, so exact
    and fast round alike."""
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=x.device)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=x.device)[:, None, None]
    return (x - mean) / std


def normalised(x: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] float32 holding 0..255 -> /255 (ToTensor), then standardised."""
    return standardised(x / 255.0)


def padded(x: torch.Tensor, size: int) -> torch.Tensor:
    """x [B, 3, H, W] float32 holding 0..255 -> [B, 3, size, size] as the hpsv2 package's score()
    prepares an image: ToTensor (/255), then its open_clip fork's ResizeMaxSize(size): each side
    round(side * size / long side) by torchvision's tensor resize (bicubic with antialias, in float,
    not clamped), padded with 0 (black) on both sides, the odd pixel right or bottom; then
    Normalize. An image whose long side already is `size` is padded too (the reference passes it
    on unpadded, and its ViT refuses anything but a square)."""
    x = x / 255.0
    h, w = x.shape[-2:]
    scale = size / float(max(h, w))
    nh, nw = round(h * scale), round(w * scale)
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=[nh, nw], mode="bicubic", align_corners=False, antialias=True)
    ph, pw = size - nh, size - nw
    return standardised(F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)))


def exact_one(image, size: int, crop: str = "round") -> torch.Tensor:
    """One image -> [3, size, size] float32 CPU, identical to the reference transform."""
    im = _to_pil(to_uint8(image))
    if crop == "pad":
        rgb = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
        return padded(rgb[None].to(torch.float32), size)[0]
    w, h = im.size
    nh, nw = resized_size(h, w, size)
    if (nh, nw) != (h, w):
        im = im.resize((nw, nh), Image.BICUBIC)
    top, left = crop_offsets(nh, nw, size, crop)
    if (top, left, nh, nw) != (0, 0, size, size):
        im = im.crop((left, top, left + size, top + size))
    arr = np.asarray(im.convert("RGB"))
    return normalised(torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32))


def preprocess_exact(images: ImagesLike, size: int = 224, crop: str = "round") -> torch.Tensor:
    """-> [B, 3, size, size] float32 CPU (images of different sizes allowed)."""
    return torch.stack([exact_one(im, size, crop) for im in split_images(images)])


def _fast_group(x: torch.Tensor, size: int, crop: str) -> torch.Tensor:
    """x [B,H,W,C] float 0..1 or uint8 on the target device -> [B,3,size,size] float32."""
    if x.dtype == torch.uint8:
        x = x.to(torch.float32)
    else:
        x = (x.to(torch.float32) * 255.0).clamp_(0, 255).floor_()  # ComfyUI's uint8 cast
    c = x.shape[-1]
    if c == 1:
        x = x.expand(*x.shape[:-1], 3)
    elif c == 4:
        x = x[..., :3]
    elif c != 3:
        raise ValueError(f"images must have 1, 3 or 4 channels, got {c}")
    x = x.permute(0, 3, 1, 2)
    if crop == "pad":
        return padded(x.contiguous(), size)
    h, w = x.shape[-2:]
    nh, nw = resized_size(h, w, size)
    top, left = crop_offsets(nh, nw, size, crop)
    x = pil_bicubic_resize(x, nh, nw, slice(top, top + size), slice(left, left + size))
    return normalised(x.to(torch.float32))


def preprocess_fast(images: ImagesLike, size: int = 224, device=None, crop: str = "round") -> torch.Tensor:
    """Batched torch preprocessing on ``device`` -> [B, 3, size, size] float32 there."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise ValueError(f"images must be [B, H, W, C] (ComfyUI IMAGE), got shape "
                             f"{tuple(images.shape)}")
        return _fast_group(images.to(device) if device is not None else images, size, crop)
    outs = []
    for im in split_images(images):
        im = torch.as_tensor(im)
        if im.ndim == 2:
            im = im[..., None]
        if device is not None:
            im = im.to(device)
        outs.append(_fast_group(im[None], size, crop))
    return torch.cat(outs)

"""The calibration histogram: the scores, with a line and a label at each percentile threshold."""
import math
from typing import Mapping, Optional

import numpy as np

from .calibration import CalibrationError, _clean_scores, _k_key


def _font(size):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def render_histogram(scores, taus: Mapping, width: int = 768, height: int = 384,
                     title: str = "", bins: Optional[int] = None) -> np.ndarray:
    """A histogram of the scores with one vertical line + label per percentile threshold,
    drawn with PIL -> uint8 array [height, width, 3]."""
    from PIL import Image, ImageDraw

    if width < 64 or height < 64:
        raise CalibrationError(f"histogram size {width}x{height} is too small; use at least 64x64")
    a = _clean_scores(scores)
    tau_items = sorted(((float(k), float(v)) for k, v in taus.items()), key=lambda kv: kv[0])
    lo = min([a.min()] + [v for _, v in tau_items])
    hi = max([a.max()] + [v for _, v in tau_items])
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.03 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    nb = bins or int(np.clip(np.sqrt(a.size) * 2, 10, 60))
    counts, edges = np.histogram(a, bins=nb, range=(lo, hi))

    img = Image.new("RGB", (width, height), (255, 255, 255))
    dr = ImageDraw.Draw(img)
    fs = max(9, min(14, height // 28))
    font = _font(fs)
    left, right = 40, width - 12
    top = 12 + (fs + 6 if title else 0)
    label_rows = 3
    bottom = height - (fs + 8) - 4
    plot_top = top + label_rows * (fs + 3) + 4
    if title:
        dr.text((left, 6), title, fill=(0, 0, 0), font=font)

    def x_of(v):
        return left + (v - lo) / (hi - lo) * (right - left)

    cmax = max(int(counts.max()), 1)
    for c, e0, e1 in zip(counts, edges[:-1], edges[1:]):
        if c == 0:
            continue
        y = bottom - (bottom - plot_top) * (c / cmax)
        dr.rectangle([x_of(e0) + 0.5, y, max(x_of(e1) - 0.5, x_of(e0) + 0.5), bottom],
                     fill=(90, 130, 200), outline=(60, 90, 150))
    dr.line([(left, bottom), (right, bottom)], fill=(0, 0, 0), width=1)
    dr.line([(left, plot_top), (left, bottom)], fill=(0, 0, 0), width=1)
    dr.text((4, plot_top), str(cmax), fill=(0, 0, 0), font=font)
    dr.text((4, bottom - fs), "0", fill=(0, 0, 0), font=font)
    # x ticks: nice round values
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / 5))
    for mult in (1, 2, 5, 10):
        if span / (step * mult) <= 8:
            step *= mult
            break
    t = math.ceil(lo / step) * step
    while t <= hi:
        x = x_of(t)
        dr.line([(x, bottom), (x, bottom + 3)], fill=(0, 0, 0))
        lab = f"{t:g}"
        dr.text((x - dr.textlength(lab, font=font) / 2, bottom + 4), lab, fill=(0, 0, 0), font=font)
        t += step
    for i, (k, v) in enumerate(tau_items):
        x = x_of(v)
        dr.line([(x, plot_top - 2), (x, bottom)], fill=(210, 40, 40), width=2)
        lab = f"{_k_key(k)}%: {v:.3g}"
        ty = top + (i % label_rows) * (fs + 3)
        tw = dr.textlength(lab, font=font)
        tx = min(max(left, x - tw / 2), right - tw)
        dr.text((tx, ty), lab, fill=(170, 20, 20), font=font)
    return np.asarray(img, dtype=np.uint8).copy()

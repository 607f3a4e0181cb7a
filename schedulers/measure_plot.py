"""The picture of a measurement: judged quality against average cost for every k, with student-only,
improve-all, teacher-alone, the best k and the cheapest k within the tolerance marked. Drawn with PIL
(what ComfyUI installs), so a user reads it in the node's preview and in the saved PNG."""
import math
from typing import List, Sequence, Tuple

import numpy as np

from ..oracle.histogram import _font
from .measure import CurvePoint, Measurement, best_k, cheapest_within

CURVE, MARK, TEXT, GRID = (40, 90, 170), (200, 40, 40), (0, 0, 0), (225, 225, 225)


def _ticks(lo: float, hi: float, most: int = 6) -> List[Tuple[float, str]]:
    """Round values between lo and hi, with labels of as many decimals as their spacing needs."""
    step = 10 ** math.floor(math.log10((hi - lo) / most))
    step *= next(m for m in (1, 2, 5, 10) if (hi - lo) / (step * m) <= most)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return [(t * step, f"{t * step:.{decimals}f}") for t in range(math.ceil(lo / step), math.floor(hi / step) + 1)]


def _span(values: Sequence[float], pad: float = 0.08) -> Tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    return lo - pad * (hi - lo), hi + pad * (hi - lo)


def render_curve(m: Measurement, tolerance: float, title: str = "", width: int = 768, height: int = 480) -> np.ndarray:
    """The measurement's curve -> uint8 array [height, width, 3]."""
    from PIL import Image, ImageDraw

    curve: List[CurvePoint] = m.curve()
    best, cheap = best_k(curve), cheapest_within(curve, tolerance)
    marks = [("student only", curve[0].cost, curve[0].quality), ("improve all", curve[-1].cost, curve[-1].quality)]
    if "teacher" in m.judge:
        marks.append(("teacher alone", float(m.teacher_alone_steps), float(m.judge["teacher"].mean())))
    marks += [(f"best k={best.k}", best.cost, best.quality),
              (f"within {tolerance:g}%: k={cheap.k}", cheap.cost, cheap.quality)]
    x_lo, x_hi = _span([p.cost for p in curve] + [c for _, c, _ in marks])
    y_lo, y_hi = _span([p.quality for p in curve] + [q for _, _, q in marks])

    img = Image.new("RGB", (width, height), (255, 255, 255))
    dr = ImageDraw.Draw(img)
    fs = max(10, min(14, height // 32))
    font = _font(fs)
    left, right, top, bottom = 64, width - 16, 2 * fs + 16, height - 2 * fs - 14
    dr.text((left, 4), title or f"{m.judge_name} on {m.n} prompts", fill=TEXT, font=font)
    dr.text((left, fs + 8), "mean judge score against average steps per sample (S + share improved x R)",
            fill=(90, 90, 90), font=font)

    def at(cost, quality):
        return (left + (cost - x_lo) / (x_hi - x_lo) * (right - left),
                bottom - (quality - y_lo) / (y_hi - y_lo) * (bottom - top))

    for t, label in _ticks(x_lo, x_hi):
        x = at(t, y_lo)[0]
        dr.line([(x, top), (x, bottom)], fill=GRID)
        dr.text((x - dr.textlength(label, font=font) / 2, bottom + 4), label, fill=TEXT, font=font)
    for t, label in _ticks(y_lo, y_hi):
        y = at(x_lo, t)[1]
        dr.line([(left, y), (right, y)], fill=GRID)
        dr.text((left - 6 - dr.textlength(label, font=font), y - fs / 2), label, fill=TEXT, font=font)
    dr.rectangle([left, top, right, bottom], outline=TEXT)
    dr.text(((left + right) / 2 - 40, bottom + fs + 6), "average steps", fill=TEXT, font=font)
    dr.line([at(p.cost, p.quality) for p in curve], fill=CURVE, width=2)
    groups = []  # marks at one spot share a label ("improve all, best k=100")
    for label, cost, quality in marks:
        x, y = at(cost, quality)
        near = next((g for g in groups if abs(g[0] - x) < 8 and abs(g[1] - y) < 8), None)
        if near:
            near[2].append(label)
        else:
            groups.append([x, y, [label]])
    placed = []
    for x, y, labels in groups:
        chosen = any(label.startswith(("best", "within")) for label in labels)
        dr.ellipse([x - 4, y - 4, x + 4, y + 4], fill=MARK if chosen else CURVE)
        text = ", ".join(labels)
        tw = dr.textlength(text, font=font)
        tx = x + 7 if x + 7 + tw < right else x - 7 - tw
        ty = min(max(y - fs - 2, top + 2), bottom - fs - 2)
        while any(abs(ty - py) < fs + 2 and tx < px + pw and px < tx + tw for px, py, pw in placed):
            ty += fs + 2  # below a label already there
        placed.append((tx, ty, tw))
        dr.text((tx, ty), text, fill=MARK if chosen else TEXT, font=font)
    return np.asarray(img, dtype=np.uint8).copy()

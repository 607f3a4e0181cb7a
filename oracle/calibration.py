"""Calibration of reward thresholds: per-k percentiles tau_k of a score distribution.

File format (the official ImageReward code's IR_percentiles_*.json): a JSON object whose
top-level keys are the percentiles as strings and values the thresholds, e.g.
``{"10": -0.61, "20": -0.17, ..., "90": 1.64}``. This pack may add a ``"metadata"`` object beside
them (model, prompt set, sampler, ...); readers ignore it if they do not know it.
"""
import itertools
import json
import math
import os
import uuid
from typing import Dict, Iterable, Mapping, Optional, Tuple

import numpy as np

DEFAULT_KS = (10, 20, 30, 40, 50, 60, 70, 80, 90)


class CalibrationError(ValueError):
    """A calibration file or request is unusable; the message says why and what to do."""


def _k_key(k) -> str:
    kf = float(k)
    return str(int(kf)) if kf.is_integer() else repr(kf)


def _clean_scores(scores) -> np.ndarray:
    try:
        import torch
        if isinstance(scores, torch.Tensor):
            scores = scores.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    a = np.asarray(scores, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise CalibrationError("no scores given: score at least one image (ideally hundreds) "
                               "before computing percentiles")
    if not np.all(np.isfinite(a)):
        raise CalibrationError(f"{int((~np.isfinite(a)).sum())} of {a.size} scores are NaN or "
                               "infinite; check the oracle's inputs (empty images? fp16 overflow?)")
    return a


def _check_ks(ks) -> list:
    ks = list(ks)
    if not ks:
        raise CalibrationError("no percentiles requested: pass ks such as (10, 20, ..., 90)")
    for k in ks:
        try:
            kf = float(k)
        except (TypeError, ValueError):
            raise CalibrationError(f"percentile {k!r} is not a number; use values in 0..100") from None
        if not (0.0 <= kf <= 100.0) or math.isnan(kf):
            raise CalibrationError(f"percentile {k} is outside 0..100; use values such as 10..90")
    return ks


def percentile_thresholds(scores, ks: Iterable = DEFAULT_KS) -> Dict[str, float]:
    """{"10": tau_10, ...}: numpy.percentile of the scores (linear interpolation)."""
    a = _clean_scores(scores)
    ks = _check_ks(ks)
    vals = np.percentile(a, [float(k) for k in ks])
    return {_k_key(k): float(v) for k, v in zip(ks, vals)}


class CalibrationExists(CalibrationError, FileExistsError):
    """The calibration file is there already: a calibration is never replaced silently."""


def write_calibration(path, scores, ks: Iterable = DEFAULT_KS,
                      metadata: Optional[Mapping] = None) -> dict:
    """Write {"10": tau, ..., "metadata": {...}} to a NEW file ``path``; returns the dict.
    Raises CalibrationExists if ``path`` exists (nothing is overwritten). The file appears whole
    or not at all (written beside it, then hard-linked into place). metadata gets "n_scores",
    "score_mean", "score_std" unless it has them already."""
    a = _clean_scores(scores)
    data = percentile_thresholds(a, ks)
    meta = dict(metadata or {})
    meta.setdefault("n_scores", int(a.size))
    meta.setdefault("score_mean", float(a.mean()))
    meta.setdefault("score_std", float(a.std()))
    data["metadata"] = meta
    try:
        text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise CalibrationError(f"metadata is not JSON-serialisable ({e}); pass plain strings, "
                               "numbers, lists and dicts") from None
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".calib-{uuid.uuid4().hex}.json")  # created like any file (umask), unlike mkstemp's 0600
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
        try:
            os.link(tmp, path)  # atomic, and fails rather than replace an existing file
        except FileExistsError:
            raise CalibrationExists(f"{os.path.basename(path)} exists already; choose another name") from None
        except OSError:  # a file system without hard links: exclusive create
            try:
                with open(path, "x", encoding="utf-8") as f:
                    f.write(text)
            except FileExistsError:
                raise CalibrationExists(f"{os.path.basename(path)} exists already; choose another name") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return data


def save_calibration_as(directory, name: str, scores, ks: Iterable = DEFAULT_KS,
                        metadata: Optional[Mapping] = None) -> Tuple[str, dict]:
    """Write <name>.json in ``directory``, or <name>_2.json, <name>_3.json, ... when the name is
    taken, never replacing a file. Returns (path written, data)."""
    for n in itertools.count(1):
        path = os.path.join(directory, f"{name}.json" if n == 1 else f"{name}_{n}.json")
        if os.path.exists(path):
            continue
        try:
            return path, write_calibration(path, scores, ks, metadata)
        except CalibrationExists:  # taken between the check and the write
            continue


def read_calibration(path) -> Tuple[Dict[int, float], dict]:
    """-> (taus {k: tau} with int k (float k if not integral), metadata dict ({} if none)).
    Accepts the official IR_percentiles_*.json files (no metadata)."""
    path = os.fspath(path)
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise CalibrationError(f"calibration file {name} does not exist; make one with the "
                               "Calibrate node or pick an existing file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CalibrationError(f"calibration file {name} is not valid JSON ({e}); it must look "
                               'like {"10": -0.61, "20": -0.17, ..., "90": 1.64}') from None
    if not isinstance(raw, dict):
        raise CalibrationError(f"calibration file {name} holds a {type(raw).__name__}, not an "
                               'object like {"10": -0.61, ..., "90": 1.64}')
    meta = raw.get("metadata", {})
    if not isinstance(meta, dict):
        raise CalibrationError(f'calibration file {name}: "metadata" must be an object')
    taus = {}
    for key, val in raw.items():
        if key == "metadata":
            continue
        try:
            kf = float(key)
        except ValueError:
            raise CalibrationError(f"calibration file {name}: key {key!r} is not a percentile; "
                                   'top-level keys must be numbers 0..100 (plus "metadata")') from None
        if not (0 <= kf <= 100):
            raise CalibrationError(f"calibration file {name}: percentile {key} is outside 0..100")
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
            raise CalibrationError(f"calibration file {name}: threshold for k={key} is {val!r}, "
                                   "not a finite number")
        taus[int(kf) if kf.is_integer() else kf] = float(val)
    if not taus:
        raise CalibrationError(f'calibration file {name} has no percentiles; expected keys like "10" ... "90"')
    return dict(sorted(taus.items())), meta


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

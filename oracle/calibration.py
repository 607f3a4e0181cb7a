"""Calibration of reward thresholds: per-k percentiles tau_k of a score distribution.

File format (the official code's IR_percentiles_*.json): a JSON object whose top-level keys are
the percentiles as strings and values the thresholds, e.g. ``{"10": -0.61, ..., "90": 1.64}``.
This pack adds a ``"metadata"`` object beside them, which readers that do not know it ignore:
the settings the scores were made with, the oracle that made them (name, kind, fingerprint) and,
under ``"samples"``, the evidence itself -- each sample's prompt index, prompt id (a hash of its
text) and raw score, in prompt-index order. With the raw scores any percentile is exact (not only
the stored ones), files made in shards merge into exactly the file one run makes, and the
histogram is drawn from the scores. A measurement (Measure Student vs Teacher) adds more columns of
one value per prompt beside "score" (the judge's scores of each sample: ``judge_student``, ...) and
its settings under ``"measurement"``; readers that do not know them ignore them.
"""
import hashlib
import itertools
import json
import math
import os
import uuid
from typing import Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np

DEFAULT_KS = (10, 20, 30, 40, 50, 60, 70, 80, 90)
SAMPLES = "samples"
SAMPLE_KEYS = ("prompt_index", "prompt_id", "score")  # the columns every file with raw scores has
# metadata that says how and when a file was made, not what it measured: allowed to differ in a merge
PROVENANCE = ("created", "merged_from", "n_scores", "score_mean", "score_std", "prompt_count", SAMPLES)


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


def is_finite_number(x) -> bool:
    """A JSON number a file may hold as a score or threshold: int or float (not a bool), finite."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _value(x) -> Optional[float]:
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        raise CalibrationError("a measured value is NaN or infinite; check the oracle's inputs")
    return x


def percentile_thresholds(scores, ks: Iterable = DEFAULT_KS) -> Dict[str, float]:
    """{"10": tau_10, ...}: numpy.percentile of the scores (linear interpolation)."""
    a = _clean_scores(scores)
    ks = _check_ks(ks)
    vals = np.percentile(a, [float(k) for k in ks])
    return {_k_key(k): float(v) for k, v in zip(ks, vals)}


def prompt_id(prompt: str) -> str:
    """A prompt's id in calibration files: the first 12 hex digits of its text's sha256."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


class Percentiles(Mapping):
    """{k: tau_k} for every k in 0..100, computed from the raw scores on demand (numpy.percentile,
    as the stored ones). Iterates over the integers 0..100."""

    def __init__(self, scores):
        self.scores = _clean_scores(scores)

    def __getitem__(self, k) -> float:
        kf = float(k)
        if not 0.0 <= kf <= 100.0:
            raise KeyError(k)
        return float(np.percentile(self.scores, kf))

    def __contains__(self, k) -> bool:
        try:
            return 0.0 <= float(k) <= 100.0
        except (TypeError, ValueError):
            return False

    def __iter__(self) -> Iterator[int]:
        return iter(range(101))

    def __len__(self) -> int:
        return 101


def calibration_data(scores, ks: Iterable = DEFAULT_KS, metadata: Optional[Mapping] = None,
                     prompt_indices: Optional[Sequence[int]] = None,
                     prompt_ids: Optional[Sequence[str]] = None,
                     columns: Optional[Mapping[str, Sequence[float]]] = None) -> dict:
    """The whole file's content. With prompt indices and ids, the raw scores are kept too, sorted by
    prompt index (so shards merge into the same bytes as one run), with any more per-prompt `columns`
    (finite numbers, or None for a value not measured) in the same order; the summary statistics are
    computed from that order."""
    a = _clean_scores(scores)
    meta = dict(metadata or {})
    columns = dict(columns or {})
    if columns and prompt_indices is None:
        raise CalibrationError("per-prompt columns need the prompts' indices and ids")
    if prompt_indices is not None:
        if len(prompt_indices) != a.size or prompt_ids is None or len(prompt_ids) != a.size:
            raise CalibrationError(f"{a.size} scores need as many prompt indices and prompt ids")
        for name, values in columns.items():
            if name in SAMPLE_KEYS or len(values) != a.size:
                raise CalibrationError(f"column {name!r} needs one value per score, and another name than "
                                       f"{SAMPLE_KEYS}")
        order = sorted(range(a.size), key=lambda i: (int(prompt_indices[i]), prompt_ids[i]))
        a = a[order]
        meta[SAMPLES] = {"prompt_index": [int(prompt_indices[i]) for i in order],
                         "prompt_id": [str(prompt_ids[i]) for i in order],
                         "score": [float(x) for x in a],
                         **{name: [_value(values[i]) for i in order] for name, values in sorted(columns.items())}}
    data = percentile_thresholds(a, ks)
    meta["n_scores"] = int(a.size)
    meta["score_mean"] = float(a.mean())
    meta["score_std"] = float(a.std())
    data["metadata"] = meta
    return data


class CalibrationExists(CalibrationError, FileExistsError):
    """The calibration file is there already: a calibration is never replaced silently."""


def write_calibration(path, scores, ks: Iterable = DEFAULT_KS, metadata: Optional[Mapping] = None,
                      prompt_indices: Optional[Sequence[int]] = None,
                      prompt_ids: Optional[Sequence[str]] = None) -> dict:
    """Write calibration_data(...) to a NEW file ``path``; returns the dict. Raises CalibrationExists
    if ``path`` exists (nothing is overwritten). The file appears whole or not at all."""
    return write_new(path, calibration_data(scores, ks, metadata, prompt_indices, prompt_ids))


def write_new(path, data: dict) -> dict:
    """Write `data` as JSON to a new file (written beside it, then hard-linked into place)."""
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


def save_new_as(directory, name: str, data: dict, taken: Iterable[str] = ()) -> Tuple[str, dict]:
    """Write <name>.json in ``directory``, or <name>_2.json, <name>_3.json, ... when the name is
    taken (a file there, or one of the file names `taken`), never replacing a file. Returns (path
    written, data)."""
    taken = set(taken)
    for n in itertools.count(1):
        file = f"{name}.json" if n == 1 else f"{name}_{n}.json"
        path = os.path.join(directory, file)
        if file in taken or os.path.exists(path):
            continue
        try:
            return path, write_new(path, data)
        except CalibrationExists:  # taken between the check and the write
            continue


def save_calibration_as(directory, name: str, scores, ks: Iterable = DEFAULT_KS,
                        metadata: Optional[Mapping] = None, prompt_indices=None, prompt_ids=None, taken=()):
    """save_new_as for freshly measured scores."""
    return save_new_as(directory, name, calibration_data(scores, ks, metadata, prompt_indices, prompt_ids), taken)


def _load_json(path) -> dict:
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
    return raw


def _stored_taus(raw: dict, name: str) -> Dict[float, float]:
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
        if not is_finite_number(val):
            raise CalibrationError(f"calibration file {name}: threshold for k={key} is {val!r}, "
                                   "not a finite number")
        taus[int(kf) if kf.is_integer() else kf] = float(val)
    if not taus:
        raise CalibrationError(f'calibration file {name} has no percentiles; expected keys like "10" ... "90"')
    return dict(sorted(taus.items()))


def samples_of(meta: dict, name: str) -> Optional[dict]:
    """The raw samples of a file's metadata (checked), or None when it has none."""
    samples = meta.get(SAMPLES)
    if samples is None:
        return None
    if not isinstance(samples, dict) or any(not isinstance(c, list) for c in samples.values()) or \
            any(c not in samples for c in SAMPLE_KEYS) or len({len(c) for c in samples.values()}) != 1:
        raise CalibrationError(f'calibration file {name}: metadata "{SAMPLES}" must hold lists of one '
                               'length: "prompt_index", "prompt_id", "score" and any measured columns')
    for column in set(samples) - set(SAMPLE_KEYS):
        if any(x is not None and not is_finite_number(x) for x in samples[column]):
            raise CalibrationError(f'calibration file {name}: column "{column}" must hold finite numbers or null')
    if samples["score"]:
        _clean_scores(samples["score"])  # finite numbers, or a CalibrationError
    return samples


def read_calibration(path) -> Tuple[Mapping, dict]:
    """-> (taus, metadata dict ({} if none)). taus maps k -> tau: the stored percentiles (int keys,
    float keys for non-integral k), or, when the file keeps its raw scores, every k in 0..100
    (Percentiles). Accepts the official IR_percentiles_*.json files (no metadata)."""
    path = os.fspath(path)
    name = os.path.basename(path)
    raw = _load_json(path)
    meta = raw.get("metadata", {})
    if not isinstance(meta, dict):
        raise CalibrationError(f'calibration file {name}: "metadata" must be an object')
    stored = _stored_taus(raw, name)
    samples = samples_of(meta, name)
    if not samples or not samples["score"]:
        return stored, meta
    exact = Percentiles(samples["score"])
    for k, tau in stored.items():
        if not math.isclose(exact[k], tau, rel_tol=1e-9, abs_tol=1e-12):
            raise CalibrationError(f"calibration file {name}: its {k}th percentile ({tau:g}) is not the one its "
                                   f"raw scores give ({exact[k]:g}); it was edited. Recalibrate, or delete "
                                   f'"{SAMPLES}" from its metadata to use the stored thresholds')
    return exact, meta


def _unnamed(oracle):
    return {k: v for k, v in oracle.items() if k != "name"} if isinstance(oracle, dict) else oracle


def _comparable(key, value):
    """A setting as shards must agree on it: each oracle (the gate's, a measurement's judge) by kind and
    weights, not by the name its file has on the server that ran the shard."""
    if key == "oracle":
        return _unnamed(value)
    if key == "measurement" and isinstance(value, dict):
        return {k: _unnamed(v) if k in ("judge", "gate") else v for k, v in value.items()}
    return value


class ShardRefused(CalibrationError):
    """A shard cannot be merged; `shard` is its position in the list given."""

    def __init__(self, shard: int, message: str):
        super().__init__(message)
        self.shard = shard


def merge_calibrations(files: Sequence[Tuple[str, dict]], ks: Iterable = DEFAULT_KS) -> dict:
    """Merge shards [(name, file content)] made with the same settings into the file one run over all
    their prompts makes: the samples pooled and re-sorted, the percentiles and statistics recomputed (one
    shard gives its own file, without its provenance). Refuses (ShardRefused, naming the shard at fault)
    files without raw scores, settings or measured columns that differ from the first file's, and a prompt
    already in an earlier shard."""
    if not files:
        raise CalibrationError("merging needs calibration files")
    settings, index, ids, scores, owner, columns = None, [], [], [], [], None
    for position, (name, raw) in enumerate(files):
        meta = raw.get("metadata")
        samples = samples_of(meta, name) if isinstance(meta, dict) else None
        if not samples:
            raise ShardRefused(position, f"{name} keeps no raw scores (an official file, or made before the pack kept "
                                   "them), so it cannot be merged; recalibrate that shard")
        mine = {k: v for k, v in meta.items() if k not in PROVENANCE}
        if settings is None:
            settings, first = mine, name
        for key in sorted(set(settings) | set(mine)):
            if _comparable(key, settings.get(key)) != _comparable(key, mine.get(key)):
                raise ShardRefused(position, f"{name} was made with {key} = {mine.get(key)!r} but {first} with "
                                             f"{settings.get(key)!r}; merge only shards of one calibration")
        extra = sorted(set(samples) - set(SAMPLE_KEYS))
        if columns is None:
            columns = {c: [] for c in extra}
        elif extra != sorted(columns):
            raise ShardRefused(position, f"{name} measured {extra or 'no columns'} but {first} "
                                         f"{sorted(columns) or 'no columns'}; merge only shards of one measurement")
        for c in extra:
            columns[c] += samples[c]
        index += samples["prompt_index"]
        ids += samples["prompt_id"]
        scores += samples["score"]
        owner += [position] * len(samples["score"])
    seen = {}
    for i, pid, position in zip(index, ids, owner):
        if i in seen:
            what = "twice" if seen[i] == pid else f"with two different prompts ({seen[i]}, {pid})"
            raise ShardRefused(position, f"prompt {i} is in the shards {what}; each shard must cover its own "
                                         "prompts of one prompt list")
        seen[i] = pid
    meta = dict(settings, prompt_count=len(scores), merged_from=[name for name, _ in files])
    return calibration_data(scores, ks, meta, index, ids, columns)


def oracle_identity(meta: dict) -> Tuple[str, Optional[str], Optional[str]]:
    """(kind, name, fingerprint) of the oracle that made a calibration. Files that do not say -- the
    official IR_percentiles files and this pack's before it kept the oracle -- hold ImageReward scores."""
    oracle = meta.get("oracle")
    if isinstance(oracle, dict):
        return str(oracle.get("kind", "ImageReward")), oracle.get("name"), oracle.get("fingerprint")
    return "ImageReward", oracle if isinstance(oracle, str) else None, None


def check_made_by(meta: dict, kind: str, name: str, fingerprint: Optional[str], file: str) -> None:
    """Refuse a calibration made with another oracle than (kind, name, fingerprint): its scores are on
    another scale, or come from other weights, so its tau means nothing here."""
    made_kind, made_name, made_print = oracle_identity(meta)
    made = f"{made_kind}" + (f" ({made_name})" if made_name else "")
    if made_kind != kind:
        raise CalibrationError(f"{file} was made with {made}, but this oracle is {kind} ({name}); a threshold "
                               "is only meaningful on its own oracle's scale")
    if made_print and fingerprint and made_print != fingerprint:
        raise CalibrationError(f"{file} was made with other {kind} weights ({made_name}, fingerprint {made_print}) "
                               f"than this oracle's ({name}, {fingerprint})")


def summary_statistics(meta: dict, name: str) -> Tuple[float, float]:
    """(mean, std) of the scores a calibration measured: from its raw scores, else its stored statistics."""
    samples = samples_of(meta, name)
    if samples and samples["score"]:
        a = _clean_scores(samples["score"])
        return float(a.mean()), float(a.std())
    if isinstance(meta.get("score_mean"), (int, float)) and isinstance(meta.get("score_std"), (int, float)):
        return float(meta["score_mean"]), float(meta["score_std"])
    raise CalibrationError(f"{name} has no score statistics (an official percentile file); make one with the "
                           "Calibrate node")


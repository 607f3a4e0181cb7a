"""An ensemble of oracles: several judges agreeing, for users who do not trust one.

Scores of different oracles live on different scales (ImageReward ~ N(0, 1) on real images, PickScore
~ 20, CLIP score ~ 30), so each member's score is first standardised with the mean and standard
deviation of that member's own calibration -- the same student, prompts and settings -- and the
ensemble's score is the weighted mean of these z-scores:

    score = sum_i w_i * (s_i - mean_i) / std_i  /  sum_i w_i

A z-score of 0 is the calibrated student's average sample under that judge. The ensemble is an Oracle
of its own (kind "Ensemble"), so it is calibrated and gated like any other; its fingerprint covers
the members' weights and statistics, so a calibration of another mix is refused.
"""
import hashlib
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from .calibration import CalibrationError, check_made_by, summary_statistics

KIND = "Ensemble"


@dataclass(frozen=True)
class Member:
    oracle: object          # an Oracle
    mean: float
    std: float
    weight: float = 1.0


def member_from_calibration(oracle, meta: dict, file: str, weight: float = 1.0) -> Member:
    """A member standardised by the calibration `file` (its metadata `meta`), which `oracle` must
    have made. Raises CalibrationError."""
    check_made_by(meta, oracle.kind, oracle.name, getattr(oracle, "fingerprint", None), file)
    mean, std = summary_statistics(meta, file)
    if not std > 0:
        raise CalibrationError(f"{file}: its scores do not vary (std {std:g}), so they cannot be standardised; "
                               "calibrate on more prompts")
    return Member(oracle, mean, std, weight)


# what makes two calibrations describe the same samples (the student, its settings, the prompts)
SAME_SAMPLES = ("steps", "cfg", "schedule", "width", "height", "w", "seed", "student", "prompts_file",
                "negative_prompt", "prompt_count")


def other_samples(meta: dict, first: dict) -> Optional[str]:
    """How calibration `meta` scored other samples than `first` did (None when it did not, as far as both
    say): members standardised on different students or prompts would put a sample at different
    z-scores for reasons that have nothing to do with the sample."""
    for key in SAME_SAMPLES:
        if key in meta and key in first and meta[key] != first[key]:
            return f"was made with {key} = {meta[key]!r}, the first member's calibration with {first[key]!r}"
    mine, theirs = (sorted((m.get("samples") or {}).get("prompt_id") or []) for m in (meta, first))
    if mine and theirs and mine != theirs:
        return "scored other prompts than the first member's calibration"
    return None


class EnsembleOracle:
    """Weighted mean of calibrated z-scores of several oracles; implements ``Oracle``."""

    kind = KIND

    def __init__(self, members: Sequence[Member], name: Optional[str] = None):
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one oracle with a weight above 0")
        for m in members:
            if not (math.isfinite(m.weight) and m.weight > 0):
                raise ValueError(f"member weights must be finite and > 0 (leave a judge out instead), got {m.weight}")
        self.members = members
        self.name = name or " + ".join(f"{m.oracle.name}" for m in members)
        h = hashlib.sha256()
        for m in members:
            h.update(f"{m.oracle.kind}|{getattr(m.oracle, 'fingerprint', '')}|{m.mean!r}|{m.std!r}|{m.weight!r};"
                     .encode())
        self.fingerprint = h.hexdigest()[:16]

    def z_scores(self, images, prompts: Union[str, Sequence[str]]) -> torch.Tensor:
        """[members, B] standardised scores."""
        return torch.stack([(m.oracle.score(images, prompts).double() - m.mean) / m.std for m in self.members])

    def score(self, images, prompts: Union[str, Sequence[str]]) -> torch.Tensor:
        z = self.z_scores(images, prompts)
        w = torch.tensor([m.weight for m in self.members], dtype=torch.float64)
        return ((w[:, None] * z).sum(0) / w.sum()).float()

    def __repr__(self):
        return f"EnsembleOracle({self.name!r}, weights={[m.weight for m in self.members]})"

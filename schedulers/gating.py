"""The oracle gate: which samples the student keeps and which go to the teacher.

A sample is accepted when its score is at least tau; tau is given directly, or is the
k-th percentile of student scores on held-out prompts (a calibration), or is the
percentile that an average-steps budget affords."""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from .budget import average_steps, k_within_budget
from .errors import InputError

THRESHOLD_MODES = ("tau", "percentile", "budget")


@dataclass
class Threshold:
    tau: float
    k: Optional[float]  # the percentile tau stands for, when known
    how: str            # one line for the report


def percentile_threshold(taus: Dict[int, float], k: int, source: str = "the calibration") -> Threshold:
    """tau for percentile k; k = 0 keeps every sample, k = 100 sends every sample to the teacher."""
    if k <= 0:
        return Threshold(-math.inf, 0, "k = 0: every sample kept")
    if k >= 100:
        return Threshold(math.inf, 100, "k = 100: every sample to the teacher")
    if int(k) not in taus:
        raise InputError("k", f"{source} has no {k}th percentile (it has {sorted(taus)})",
                         "pick one of those k, or calibrate that percentile")
    return Threshold(float(taus[int(k)]), int(k), f"tau = {taus[int(k)]:.4f}, the {int(k)}th percentile of {source}")


def resolve_threshold(mode: str, *, tau: float = 0.0, k: int = 50, taus: Optional[Dict[int, float]] = None,
                      source: str = "the calibration", budget: float = 0.0,
                      student_steps: int = 1, teacher_steps: int = 1) -> Threshold:
    if mode == "tau":
        return Threshold(float(tau), None, f"tau = {tau:.4f} (given)")
    if mode not in THRESHOLD_MODES:
        raise InputError("threshold_mode", f"unknown mode {mode!r}", f"choose one of {THRESHOLD_MODES}")
    if taus is None:
        raise InputError("calibration", f"threshold_mode {mode!r} needs a calibration file",
                         "choose a calibration file, or use threshold_mode 'tau'")
    if mode == "budget":
        k = k_within_budget(budget, student_steps, teacher_steps, available=set(taus) | {0, 100})
        t = percentile_threshold(taus, k, source)
        cost = average_steps(student_steps, teacher_steps, k)
        return Threshold(t.tau, t.k, f"budget {budget:g} steps -> k = {k} ({cost:g} average steps); {t.how}")
    return percentile_threshold(taus, k, source)


@dataclass
class GateDecision:
    """What the gate decided for one batch; the teacher node acts on it."""
    scores: torch.Tensor          # [B] float32
    accepted: torch.Tensor        # [B] bool
    threshold: Threshold
    batch_index: List[int]
    student_steps: Optional[int] = None
    images: Optional[torch.Tensor] = None   # the student's decoded images, reused for kept samples
    budget_teacher_steps: Optional[int] = None  # the R a budget threshold assumed
    notes: List[str] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return int(self.scores.shape[0])

    @property
    def rejected(self) -> List[int]:
        return [i for i, ok in enumerate(self.accepted.tolist()) if not ok]

    @property
    def acceptance_rate(self) -> float:
        return float(self.accepted.float().mean()) if self.batch_size else 1.0

    def lines(self) -> List[str]:
        out = [self.threshold.how]
        for i, (s, ok) in enumerate(zip(self.scores.tolist(), self.accepted.tolist())):
            out.append(f"#{self.batch_index[i]}: score {s:+.4f} -> {'kept' if ok else 'to teacher'}")
        out.append(f"kept {int(self.accepted.sum())}/{self.batch_size} ({100 * self.acceptance_rate:.0f}%)")
        return out + self.notes


def decide(scores: torch.Tensor, threshold: Threshold, batch_index: Sequence[int],
           student_steps: Optional[int] = None) -> GateDecision:
    scores = scores.detach().float().cpu().reshape(-1)
    if len(batch_index) != scores.shape[0]:
        raise InputError("batch_index", f"{len(batch_index)} indices for {scores.shape[0]} scores",
                         "pass one batch index per sample")
    return GateDecision(scores, scores >= threshold.tau, threshold, [int(b) for b in batch_index], student_steps)


def spent_steps(student_steps: int, teacher_steps: int, improved: int, batch_size: int) -> float:
    """Average steps actually spent on a batch."""
    return student_steps + (improved / batch_size if batch_size else 0.0) * teacher_steps

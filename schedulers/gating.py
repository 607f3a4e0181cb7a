"""The oracle gate: which samples the student keeps and which go to the teacher.

A sample is accepted when its score is at least tau; tau is given directly, or is the
k-th percentile of student scores on held-out prompts (a calibration), or is the
percentile that an average-steps budget affords."""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .budget import average_steps, k_within_budget
from .errors import InputError
from .record import SampleRecord, Stage

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


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided for one batch (the ST_GATE value); the teacher node acts on it.
    `records` are the samples' records with this gate's stage appended."""
    scores: torch.Tensor          # [B] float32
    accepted: torch.Tensor        # [B] bool
    threshold: Threshold
    records: Tuple[SampleRecord, ...]
    images: Optional[torch.Tensor] = None        # the decoded images, reused for kept samples
    budget_teacher_steps: Optional[int] = None   # the R a budget threshold assumed
    notes: Tuple[str, ...] = ()

    @property
    def batch_size(self) -> int:
        return int(self.scores.shape[0])

    @property
    def batch_index(self) -> List[int]:
        return [r.batch_index for r in self.records]

    @property
    def rejected(self) -> List[int]:
        return [i for i, ok in enumerate(self.accepted.tolist()) if not ok]

    @property
    def acceptance_rate(self) -> float:
        return float(self.accepted.float().mean()) if self.batch_size else 1.0

    def lines(self) -> List[str]:
        out = [self.threshold.how]
        for r in self.records:
            stage = r.last("gate")
            w = f" (w {r.w:g})" if r.w is not None else ""
            out.append(f"#{r.batch_index}{w}: score {stage.score:+.4f} -> {'kept' if stage.kept else 'to teacher'}")
        out.append(f"kept {int(self.accepted.sum())}/{self.batch_size} ({100 * self.acceptance_rate:.0f}%)")
        return out + list(self.notes)


def decide(scores: torch.Tensor, threshold: Threshold, records: Sequence[SampleRecord], *,
           images: Optional[torch.Tensor] = None, budget_teacher_steps: Optional[int] = None,
           notes: Sequence[str] = ()) -> GateDecision:
    """Keep the samples scoring at least tau; each record gets this gate's stage."""
    scores = scores.detach().float().cpu().reshape(-1)
    if len(records) != scores.shape[0]:
        raise InputError("latent", f"{len(records)} samples but {scores.shape[0]} scores",
                         "score the same batch the gate decides on")
    accepted = scores >= threshold.tau
    gated = tuple(r.then(Stage("gate", score=float(s), kept=bool(ok), settings={"tau": threshold.tau}))
                  for r, s, ok in zip(records, scores.tolist(), accepted.tolist()))
    return GateDecision(scores, accepted, threshold, gated, images, budget_teacher_steps, tuple(notes))

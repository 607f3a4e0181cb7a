"""Student against teacher, measured from per-prompt data (issue "your student against your teacher").

Per held-out prompt: the student sample's gating score, the judge's score of the student sample and of
the improved sample (refined or regenerated, as the gate would send it), optionally of the teacher alone.
From those numbers exactly:
- the student's win rate over another sample, with a Wilson interval (the paper's headline: a noticeable
  share of student samples beat the teacher's for the same prompt and noise);
- the adaptive curve: for each k, tau_k is the k-th percentile of the calibration's student scores (the
  gate's own rule), each prompt keeps its student sample when its gating score >= tau_k and takes the
  improved one otherwise; its mean judge score against its average cost S + (improved share) R;
- the k a user asks for: the best, the best within a step budget, the cheapest within x % of the best gain.
"""
import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from ..oracle.calibration import Percentiles
from .errors import InputError
from .gating import percentile_threshold


@dataclass(frozen=True)
class CurvePoint:
    k: int
    tau: float
    improved: float   # share of prompts sent to the teacher (k/100 on the calibration's own prompts)
    cost: float       # average steps per sample: S + improved * R
    quality: float    # mean judge score of the gated result


def _scores(name: str, values) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if a.size == 0 or not np.isfinite(a).all():
        raise InputError(name, "needs finite scores, one per prompt", "measure again; drop prompts that failed")
    return a


def gated_result(gate_student, judge_student, judge_improved, tau: float) -> Tuple[np.ndarray, np.ndarray]:
    """(kept mask, judge score of what each prompt ends with) for threshold tau: the gate keeps a student
    sample when its gating score >= tau."""
    kept = _scores("gate_student", gate_student) >= tau
    return kept, np.where(kept, _scores("judge_student", judge_student), _scores("judge_improved", judge_improved))


def adaptive_curve(gate_student, judge_student, judge_improved, student_steps: float, teacher_steps: float,
                   calibration_scores=None, ks: Sequence[int] = range(101)) -> List[CurvePoint]:
    """The curve's points for each k; tau_k from `calibration_scores` (held-out student gating scores; by
    default the measured prompts' own, which the paper's protocol keeps apart: say which in reports)."""
    gate = _scores("gate_student", gate_student)
    student, improved = _scores("judge_student", judge_student), _scores("judge_improved", judge_improved)
    if not gate.size == student.size == improved.size:
        raise InputError("judge_improved", f"{gate.size}, {student.size} and {improved.size} scores",
                         "give one score per prompt for each sample")
    taus = Percentiles(gate if calibration_scores is None else calibration_scores)
    points = []
    for k in ks:
        tau = percentile_threshold(taus, k).tau
        kept, result = gated_result(gate, student, improved, tau)
        share = 1.0 - float(kept.mean())
        points.append(CurvePoint(int(k), float(tau), share, student_steps + share * teacher_steps,
                                 float(result.mean())))
    return points


def best_k(curve: Sequence[CurvePoint]) -> CurvePoint:
    """The point of highest mean judge score (the cheapest of equals)."""
    return max(curve, key=lambda p: (p.quality, -p.cost))


def best_for_budget(curve: Sequence[CurvePoint], budget: float) -> CurvePoint:
    """The highest judged quality whose average cost fits `budget` steps."""
    fitting = [p for p in curve if p.cost <= budget + 1e-9]
    if not fitting:
        cheapest = min(p.cost for p in curve)
        raise InputError("budget", f"{budget:g} steps is below the cheapest point ({cheapest:g}, the student alone)",
                         f"give a budget of at least {cheapest:g} steps")
    return best_k(fitting)


def cheapest_within(curve: Sequence[CurvePoint], tolerance_pct: float) -> CurvePoint:
    """The cheapest point that keeps (100 - tolerance_pct) % of the best point's gain over the student
    alone (k = 0): a gain, so that scores of any sign (ImageReward's are often negative) mean the same."""
    if not 0.0 <= tolerance_pct <= 100.0 or math.isnan(tolerance_pct):
        raise InputError("tolerance", f"got {tolerance_pct}", "give a percentage between 0 and 100")
    base = min(curve, key=lambda p: p.k).quality
    best = best_k(curve)
    floor = base + (1.0 - tolerance_pct / 100.0) * (best.quality - base)
    return min((p for p in curve if p.quality >= floor - 1e-12), key=lambda p: (p.cost, -p.quality))


@dataclass(frozen=True)
class WinRate:
    rate: float   # wins + half the ties, over the prompts
    low: float    # 95 % Wilson score interval
    high: float
    n: int


def win_rate(ours, theirs, z: float = 1.959964) -> WinRate:
    """How often `ours` beats `theirs` on the same prompt (a tie counts half), with the Wilson score
    interval (Wilson 1927), which stays inside [0, 1] and is honest for small n and rates near 0 or 1."""
    a, b = _scores("ours", ours), _scores("theirs", theirs)
    if a.size != b.size:
        raise InputError("theirs", f"{b.size} scores for {a.size} prompts", "compare samples of the same prompts")
    n = a.size
    p = (float((a > b).sum()) + 0.5 * float((a == b).sum())) / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return WinRate(p, max(0.0, centre - half), min(1.0, centre + half), n)

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
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..oracle.calibration import CalibrationError, Percentiles, is_finite_number, samples_of
from .errors import InputError
from .gating import percentile_threshold

MEASUREMENT = "measurement"   # a calibration file's metadata key: the measurement's settings
# per-prompt columns beside a calibration's "score" (the gating oracle on the student sample): who scored
# which sample. The teacher-alone columns are there only when the teacher alone was measured.
GATE_COLUMNS = {"student": "score", "improved": "gate_improved", "teacher": "gate_teacher"}
JUDGE_COLUMNS = {"student": "judge_student", "improved": "judge_improved", "teacher": "judge_teacher"}
SAMPLE_NAMES = {"student": "student", "improved": "improved", "teacher": "teacher alone"}
# column -> (the Measure node's input that scored it, which sample)
SCORED_BY = {column: (scorer, sample) for scorer, columns in (("oracle", GATE_COLUMNS), ("judge", JUDGE_COLUMNS))
             for sample, column in columns.items()}


@dataclass(frozen=True)
class CurvePoint:
    k: int
    tau: float
    improved: float   # share of prompts sent to the teacher (about k/100; ties and few prompts move it)
    cost: float       # average steps per sample: S + improved * R
    quality: float    # mean judge score of the gated result


def require_finite_scores(scores: Dict[str, Sequence[float]], prompt_indices: Sequence[int]) -> None:
    """Stop a measurement at the batch where an oracle gave a NaN or infinite score ({column: a score per
    prompt}), naming that oracle's input and the prompt, before the run goes on for nothing."""
    for column, values in scores.items():
        for index, x in zip(prompt_indices, values):
            if not math.isfinite(x):
                scorer, sample = SCORED_BY[column]
                raise InputError(scorer, f"it scored the {SAMPLE_NAMES[sample]} sample of prompt {index} as {x}",
                                 f"load it with dtype fp32 or bf16 (fp16 can overflow), or leave prompt {index} out")


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
        share = float((~kept).mean())
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


@dataclass(frozen=True)
class Measurement:
    """A measurement as a calibration file keeps it: per prompt, each sample's score by the gating oracle
    and by the judge ({"student": [...], "improved": [...], "teacher": [...] when measured}), and what
    a sample costs."""
    gate: Dict[str, np.ndarray]
    judge: Dict[str, np.ndarray]
    student_steps: float
    teacher_steps: float                   # R, per improved sample
    teacher_alone_steps: Optional[float]   # the teacher's own full run, when measured
    gate_name: str
    judge_name: str
    same_judge: bool                       # the judge is the gating oracle: its verdict flatters the gate

    @property
    def n(self) -> int:
        return int(self.gate["student"].size)

    def curve(self, by: str = "judge", ks: Sequence[int] = range(101)) -> List[CurvePoint]:
        """The adaptive curve judged by the judge (or by="gate"), tau_k from the prompts' own student scores."""
        scores = self.judge if by == "judge" else self.gate
        return adaptive_curve(self.gate["student"], scores["student"], scores["improved"], self.student_steps,
                              self.teacher_steps, ks=ks)


def measurement_settings(judge: dict, gate: dict, student_steps, teacher_steps, teacher_alone_steps,
                         **improver) -> dict:
    """The metadata a measured calibration keeps under "measurement" (shards must agree on it)."""
    return {"judge": judge, "gate": gate, "student_steps": int(student_steps), "teacher_steps": int(teacher_steps),
            "teacher_alone_steps": int(teacher_alone_steps) or None, "improver": improver,
            "same_judge": judge.get("kind") == gate.get("kind") and judge.get("fingerprint") == gate.get("fingerprint")}


def _label(oracle: dict) -> str:
    kind, name = oracle.get("kind", "?"), oracle.get("name")
    return kind if not name or name == kind else f"{kind} ({name})"


def measurement_of(meta: dict, name: str) -> Optional[Measurement]:
    """The measurement a calibration file keeps, or None for a calibration that measured none."""
    settings = meta.get(MEASUREMENT)
    if settings is None:
        return None
    again = "measure again with Measure Student vs Teacher"
    if not isinstance(settings, dict):
        raise InputError("calibration", f'{name}: metadata "{MEASUREMENT}" must be an object', again)
    try:
        samples = samples_of(meta, name)
    except CalibrationError as e:
        raise InputError("calibration", str(e), again) from None
    if samples is None:
        raise InputError("calibration", f"{name} keeps its measurement's settings but not its per-prompt scores "
                         "(metadata \"samples\")", again)
    wanted = ("student", "improved") + (("teacher",) if settings.get("teacher_alone_steps") else ())
    needed = [cols[sample] for cols in (GATE_COLUMNS, JUDGE_COLUMNS) for sample in wanted]
    missing = [c for c in needed if c not in samples or any(x is None for x in samples[c])] + \
        [key for key in ("student_steps", "teacher_steps")
         if not (is_finite_number(settings.get(key)) and settings[key] > 0)] + \
        [key for key in ("gate", "judge") if not isinstance(settings.get(key), dict)]
    if missing:
        raise InputError("calibration", f"{name}: its measurement lacks {', '.join(missing)}", again)
    columns = {what: {sample: np.asarray(samples[cols[sample]], dtype=np.float64) for sample in wanted}
               for what, cols in (("gate", GATE_COLUMNS), ("judge", JUDGE_COLUMNS))}
    return Measurement(columns["gate"], columns["judge"], float(settings["student_steps"]),
                       float(settings["teacher_steps"]), settings.get("teacher_alone_steps"),
                       _label(settings["gate"]), _label(settings["judge"]), bool(settings.get("same_judge")))


HELD_OUT_MIN = 20  # prompts below which a split-half check says nothing worth printing


def held_out_best(m: Measurement) -> Optional[float]:
    """The judged mean of the best k when k and its tau are chosen on half of the prompts (even positions)
    and applied to the other half (odd), then the other way round: an estimate free of the optimism of
    choosing k on the prompts it is judged on (the paper keeps its tau prompts apart from its test prompts).
    None for fewer than HELD_OUT_MIN prompts."""
    if m.n < HELD_OUT_MIN:
        return None
    even = np.arange(m.n) % 2 == 0
    results = []
    for pick, use in ((even, ~even), (~even, even)):
        point = best_k(adaptive_curve(m.gate["student"][pick], m.judge["student"][pick], m.judge["improved"][pick],
                                      m.student_steps, m.teacher_steps))
        results.append(gated_result(m.gate["student"][use], m.judge["student"][use], m.judge["improved"][use],
                                    point.tau)[1])
    return float(np.concatenate(results).mean())


def measured_k(measurement: Optional[Measurement], mode: str, budget: float, tolerance: float,
               source: str) -> Tuple[CurvePoint, str]:
    """The curve's point a measured threshold mode picks, and one line for the report."""
    if measurement is None:
        raise InputError("calibration", f"threshold_mode {mode!r} needs a measured calibration and {source} "
                         "measured nothing", "choose a file made by Measure Student vs Teacher, or use percentile")
    curve = measurement.curve()
    if mode == "best for budget":
        point = best_for_budget(curve, budget)
        why = f"the best judged k within {budget:g} average steps"
    else:
        point = cheapest_within(curve, tolerance)
        why = f"the cheapest k within {tolerance:g} % of the best judged gain"
    return point, (f"k = {point.k} ({why}: {measurement.judge_name} {point.quality:+.4f} at {point.cost:.4g} "
                   f"average steps, measured on {measurement.n} prompts)")


def _rate(w: WinRate) -> str:
    return f"{100 * w.rate:.0f} % (95 % interval {100 * w.low:.0f}-{100 * w.high:.0f} %)"


def measurement_report(m: Measurement, tolerance: float) -> List[str]:
    """The short text report of a measurement: win rates per judge, the curve's ends and chosen points."""
    lines = [f"{m.n} prompts; gate: {m.gate_name}; judge: {m.judge_name}"]
    if m.same_judge:
        lines.append("WARNING: the judge IS the gating oracle: gating by a score and judging by the same score "
                     "flatters the gate. Connect an independent judge (another oracle) for an honest measure.")
    for who, scores in (("judge", m.judge), ("gate", m.gate)):
        name = m.judge_name if who == "judge" else m.gate_name
        for other in [s for s in ("improved", "teacher") if s in scores]:
            lines.append(f"student beats {SAMPLE_NAMES[other]} by {name}: "
                         f"{_rate(win_rate(scores['student'], scores[other]))}")
    curve = m.curve()
    ends = [("student only (k = 0)", curve[0].cost, curve[0].quality),
            ("improve all (k = 100)", curve[-1].cost, curve[-1].quality)]
    if "teacher" in m.judge:
        ends.append(("teacher alone", m.teacher_alone_steps, float(m.judge["teacher"].mean())))
    lines += [f"{what}: {m.judge_name} {q:+.4f} at {c:.4g} steps" for what, c, q in ends]
    best, cheap = best_k(curve), cheapest_within(curve, tolerance)
    lines.append(f"best k = {best.k}: {best.quality:+.4f} at {best.cost:.4g} average steps")
    held_out = held_out_best(m)
    if held_out is not None:
        lines.append(f"  chosen on half the prompts and judged on the other half, the best k gives {held_out:+.4f}: "
                     "the line above chose k on the prompts it judges, so it flatters a little")
    lines.append(f"cheapest within {tolerance:g} % of the best gain: k = {cheap.k}: {cheap.quality:+.4f} at "
                 f"{cheap.cost:.4g} average steps")
    lines.append("tau_k is the k-th percentile of these prompts' own student scores; gate with this file's "
                 "threshold_mode 'best for budget' or 'cheapest within' to take k from this curve.")
    return lines

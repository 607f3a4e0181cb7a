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
from .record import SampleRecord, Stage, per_student_lines, student_labels, student_name

# these take k from a measured curve (Measure Student vs Teacher): the best judged quality within the
# budget, or the cheapest k within a tolerance of the best judged gain
MEASURED_MODES = ("best for budget", "cheapest within")
THRESHOLD_MODES = ("tau", "percentile", "budget") + MEASURED_MODES


@dataclass(frozen=True)
class Threshold:
    tau: float
    k: Optional[float]  # the percentile tau stands for, when known
    how: str            # one line for the report


def percentile_threshold(taus: Dict[float, float], k: float, source: str = "the calibration") -> Threshold:
    """tau for percentile k (a calibrated one: 50, or 12.5); k = 0 keeps every sample, k = 100 sends
    every sample to the teacher."""
    if k <= 0:
        return Threshold(-math.inf, 0, "k = 0: every sample kept")
    if k >= 100:
        return Threshold(math.inf, 100, "k = 100: every sample to the teacher")
    if k not in taus:
        raise InputError("k", f"{source} has no {k:g}th percentile (it has {sorted(taus)})",
                         "pick one of those k, or calibrate that percentile")
    return Threshold(float(taus[k]), k, f"tau = {taus[k]:.4f}, the {k:g}th percentile of {source}")


def resolve_threshold(mode: str, *, tau: float = 0.0, k: float = 50, taus: Optional[Dict[float, float]] = None,
                      source: str = "the calibration", budget: float = 0.0,
                      student_steps: int = 1, teacher_steps: int = 1, metadata: Optional[dict] = None,
                      tolerance: float = 5.0) -> Threshold:
    """The threshold a mode gives; `metadata` is the calibration file's, whose measurement only the measured
    modes read (a file whose measurement was edited away still serves the other modes)."""
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
        return Threshold(t.tau, t.k, f"budget {budget:g} steps -> k = {k:g} ({cost:g} average steps); {t.how}")
    if mode in MEASURED_MODES:
        from .measure import measured_k, measurement_of  # measure builds on this module's percentile_threshold
        point, how = measured_k(measurement_of(metadata or {}, source), mode, budget, tolerance, source)
        return Threshold(percentile_threshold(taus, point.k, source).tau, point.k, how)
    return percentile_threshold(taus, k, source)


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided for one batch (the ST_GATE value); the teacher node acts on it.
    `records` are the samples' records with this gate's stage appended."""
    scores: torch.Tensor          # [B] float32
    accepted: torch.Tensor        # [B] bool
    thresholds: Tuple[Threshold, ...]  # each sample's (its student's) threshold
    records: Tuple[SampleRecord, ...]
    images: Optional[torch.Tensor] = None        # the decoded images, reused for kept samples
    budget_teacher_steps: Optional[int] = None   # the R a budget threshold assumed
    notes: Tuple[str, ...] = ()
    latent: Optional[dict] = None                # the gated LATENT (keep-the-better may have restored rows)
    oracle_name: Optional[str] = None            # who scored, for reports: "PickScore (PickScore_v1.safetensors)"

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
    def threshold(self) -> Threshold:
        """The threshold of the first sample (of every sample when one student made them all)."""
        return self.thresholds[0]

    @property
    def acceptance_rate(self) -> float:
        return float(self.accepted.float().mean()) if self.batch_size else 1.0

    def lines(self) -> List[str]:
        students = student_labels(self.records)
        out = [f"oracle: {self.oracle_name}"] if self.oracle_name else []
        for label, threshold in dict.fromkeys(zip([r.student for r in self.records], self.thresholds)):
            out.append(f"{student_name(label)}: {threshold.how}" if len(students) > 1 else threshold.how)
        for r in self.records:
            stage = r.last("gate")
            tags = ", ".join(t for t in (student_name(r.student) if len(students) > 1 else None,
                                         f"w {r.w:g}" if r.w is not None else None) if t)
            tags = f" ({tags})" if tags else ""
            earlier = (f" (kept the earlier version: the new one scored {stage.settings['new_score']:+.4f})"
                       if "new_score" in stage.settings else "")
            out.append(f"#{r.batch_index}{tags}: score {stage.score:+.4f} -> {'kept' if stage.kept else 'to teacher'}"
                       + earlier)
        out.append(f"kept {int(self.accepted.sum())}/{self.batch_size} ({100 * self.acceptance_rate:.0f}%)")
        if len(students) > 1:
            out += per_student_lines(self.records)
        return out + list(self.notes)


def decide(scores: torch.Tensor, threshold, records: Sequence[SampleRecord], *,
           images: Optional[torch.Tensor] = None, budget_teacher_steps: Optional[int] = None,
           notes: Sequence[str] = (), new_scores: Optional[Sequence[Optional[float]]] = None,
           latent: Optional[dict] = None, oracle: Optional[str] = None,
           oracle_name: Optional[str] = None, prompts: Optional[Sequence[str]] = None) -> GateDecision:
    """Keep the samples scoring at least their tau; `threshold` is one Threshold for all samples or
    one per sample (its student's). Each record gets this gate's stage; `new_scores` marks the samples
    whose earlier version was kept because it scored higher (keep_better). `oracle` identifies the
    scorer and `prompts` the text each sample was scored against, in each gate stage (a later gate
    re-scores what another oracle, or another text, scored); `oracle_name` is shown in the report."""
    scores = scores.detach().float().cpu().reshape(-1)
    if len(records) != scores.shape[0]:
        raise InputError("latent", f"{len(records)} samples but {scores.shape[0]} scores",
                         "score the same batch the gate decides on")
    thresholds = (threshold,) * len(records) if isinstance(threshold, Threshold) else tuple(threshold)
    # in float64, as tau (a percentile of stored float32 scores) and the measured curve are: a tau between
    # two float32 neighbours must not round onto one of them
    accepted = scores.double() >= torch.tensor([t.tau for t in thresholds], dtype=torch.float64)
    new_scores = new_scores or [None] * len(records)
    prompts = prompts or [None] * len(records)
    gated = tuple(r.then(Stage("gate", score=float(s), kept=bool(ok),
                               settings={"tau": t.tau, "oracle": oracle, "prompt": text,
                                         **({"new_score": new} if new is not None else {})}))
                  for r, s, ok, t, new, text in zip(records, scores.tolist(), accepted.tolist(), thresholds,
                                                    new_scores, prompts))
    return GateDecision(scores, accepted, thresholds, gated, images, budget_teacher_steps, tuple(notes), latent,
                        oracle_name)


def keep_better(new: Sequence[float], earlier: Sequence[Optional[float]]) -> List[bool]:
    """Which samples go back to their earlier version: those an improvement made score lower (a tie
    keeps the new one), so no stage can lower a sample's score."""
    return [e is not None and e > n for n, e in zip(new, earlier)]


def calibration_of(student: Optional[int], threshold_mode: str, calibrations: Sequence[str],
                   none: str = "none") -> Tuple[str, str]:
    """(the gate input, the calibration file) that thresholds student `student`'s samples: `calibration` for
    student 1 and the plain sampler's samples, `calibration_<n>` for routed student n. In tau mode only
    `calibration` is read (for its warnings); the others are not needed."""
    number = student or 1
    if number > len(calibrations):
        raise InputError(f"calibration_{number}", f"the samples come from student {number}, and the gate has no "
                         "calibration input for it", f"use at most {len(calibrations)} students")
    input_name = "calibration" if number == 1 else f"calibration_{number}"
    return input_name, calibrations[number - 1] if threshold_mode != "tau" or number == 1 else none


def rows_to_score(records: Sequence[SampleRecord], oracle: Optional[str], texts: Sequence[str]) -> List[int]:
    """The samples a gate scores: those `oracle` has not scored against the same text since they last changed
    (a gate after an improver scores only what the improver changed, unless the earlier score is another
    oracle's or against another text)."""
    return [i for i, r in enumerate(records) if not r.scored_by(oracle, texts[i])]


def calibration_mismatch(meta, records):
    """Calibrating with other steps, cfg, schedule or guidance w than the gate's student makes tau
    meaningless (the official code calibrated its LCM-SDXL at guidance 0 and sampled at 8)."""
    student = records[0].last("student")
    settings = student.settings if student is not None else {}
    notes = [f"warning: the calibration used {key} = {meta[key]} but the student ran with {key} = {settings[key]}; "
             "recalibrate with the gate's settings"
             for key in ("steps", "cfg", "schedule") if key in meta and key in settings and meta[key] != settings[key]]
    if "w" in meta:
        calibrated, used = sorted(meta["w"] or []), sorted({r.w for r in records if r.w is not None})
        if calibrated != used:
            notes.append(f"warning: the calibration was made at w = {calibrated or 'none'} but the samples used "
                         f"w = {used or 'none'}; recalibrate at the w you gate")
    return notes


def sample_prompts(prompt, records):
    """The text each sample is scored against: the widget when it is filled in (an override), else
    each sample's own prompt from its record (Encode Prompt List puts it there)."""
    if prompt.strip():
        return [prompt] * len(records)
    if any(r.prompt is None for r in records):
        raise InputError("prompt", "the gate has no prompt to score against", "type the prompt, or encode it with "
                         "Encode Prompt List (the gate then finds each sample's text itself)")
    return [r.prompt for r in records]

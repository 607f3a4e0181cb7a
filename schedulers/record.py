"""What is known about each sample, in one record that travels with the sample.

A LATENT made by the pack carries, under RECORDS_KEY, one SampleRecord per row in batch order: the
sample's batch index and seed, the latent space it lives in, its prompt / student / guidance w when
known, and the stages it went through (student, gate, teacher, ...) with their cost and score.
Nodes read what they need and append the stage they ran; sub-batches take and put records with the
same row indices as tensors, so a record always follows its sample. Reports and cost accounting are
functions of the records, written once here.

A core latent node copies the LATENT dict but not the meaning of this key. When it changed the rows
(LatentFromBatch, LatentBatch, ...), `records_of` finds records that no longer match them and returns
None, and the nodes fall back to their widgets and say so once. When it kept the rows but changed the
samples (KSampler, LatentUpscale, Rollback Noise then SamplerCustom), the records still say whose
samples these are, but no score or decoded image of the pack's describes them any more: `records_of`
adds an "outside" stage to each record (so every gate scores them again) and the images are dropped.
"""
from dataclasses import dataclass, field, replace
from typing import Any, List, Mapping, Optional, Sequence, Tuple

RECORDS_KEY = "student_teacher"
# artifacts that follow the rows with their records (not facts about the samples, so not in them):
IMAGES_KEY = "student_teacher_images"    # each row's decoded image, so a later gate decodes only what changed
EARLIER_KEY = "student_teacher_earlier"  # (latent row, image row, w) an improver replaced, for keep-the-better
SAMPLES_KEY = "student_teacher_samples"  # the very samples tensor the records describe (compared by identity)
DECODER_KEY = "student_teacher_decoder"  # the VAE that decoded the images (compared by identity)
OUTSIDE = "outside"  # the stage of a change made outside the pack (its steps are not known)
REMAKES = ("teacher", "retry", OUTSIDE)  # stages that make a sample again from noise


@dataclass(frozen=True)
class Stage:
    """One thing that happened to a sample. `steps` counts model evaluations per sample of the
    sampler that ran (the paper's cost unit: S for the student, R for the teacher, 0 for a gate)."""
    kind: str                         # "student", "gate", "teacher", ...
    steps: int = 0
    score: Optional[float] = None     # the oracle's score after this stage (gates)
    kept: Optional[bool] = None       # gates: True = kept, False = sent on
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SampleRecord:
    batch_index: int
    seed: Optional[int] = None
    latent_format: Optional[str] = None   # the latent space ("SD15", "SDXL", ...) of the model that made it
    prompt: Optional[str] = None
    student: Optional[int] = None         # which routed student made it (1, 2, ...); None: the only one
    w: Optional[float] = None
    stages: Tuple[Stage, ...] = ()

    def then(self, stage: Stage) -> "SampleRecord":
        return replace(self, stages=self.stages + (stage,))

    def last(self, kind: str) -> Optional[Stage]:
        return next((s for s in reversed(self.stages) if s.kind == kind), None)

    @property
    def cost(self) -> int:
        return sum(s.steps for s in self.stages)

    @property
    def score(self) -> Optional[float]:
        """The latest score an oracle gave this sample."""
        return next((s.score for s in reversed(self.stages) if s.score is not None), None)

    @property
    def noise_round(self) -> int:
        """How many times the sample was made again (teacher, retry, a node outside the pack): a stage
        that draws noise (the teacher's rollback and sampler) draws that round of its stream, so two such
        stages of one sample never share noise, whatever their seeds (and whatever else is in the batch).
        Counting re-makings, not all stages, keeps it right for a latent that came without its making."""
        return sum(s.kind in REMAKES for s in self.stages)

    def scored_by(self, oracle: Optional[str], prompt: Optional[str] = None) -> bool:
        """Whether the sample is unchanged since `oracle` (a gate's settings["oracle"]) scored it against
        `prompt`: its last stage is a gate of that oracle and text. Another oracle's score is on another
        scale, and a score against another text answers another question."""
        last = self.stages[-1] if self.stages else None
        return last is not None and _gate_of(last, oracle, prompt)

    def earlier_score(self, oracle: Optional[str], prompt: Optional[str] = None) -> Optional[float]:
        """The score `oracle` gave the version before the latest change (the last non-gate stage)
        against `prompt`, if a gate of that oracle scored that very version (not an older one)."""
        changes = [i for i, s in enumerate(self.stages) if s.kind != "gate"]
        if not changes:
            return None
        since = changes[-2] if len(changes) > 1 else -1  # the gates between the last two changes saw that version
        return next((s.score for s in reversed(self.stages[since + 1:changes[-1]]) if _gate_of(s, oracle, prompt)),
                    None)


def _gate_of(stage: Stage, oracle: Optional[str], prompt: Optional[str]) -> bool:
    return stage.kind == "gate" and stage.score is not None and stage.settings.get("oracle") == oracle and \
        stage.settings.get("prompt") == prompt


def _samples_changed(latent: Mapping) -> bool:
    """Whether a node outside the pack put other samples into the LATENT since its records were written."""
    return latent.get(SAMPLES_KEY) is not latent["samples"]


def records_of(latent: Mapping) -> Optional[Tuple[SampleRecord, ...]]:
    """The LATENT's records, or None when it has none or they no longer describe its rows."""
    records = latent.get(RECORDS_KEY)
    n = int(latent["samples"].shape[0])
    if not isinstance(records, tuple) or len(records) != n or \
            not all(isinstance(r, SampleRecord) for r in records):
        return None
    index = latent.get("batch_index")
    if index is not None and [int(i) for i in index] != [r.batch_index for r in records]:
        return None
    return tuple(r.then(Stage(OUTSIDE)) for r in records) if _samples_changed(latent) else records


def with_records(latent: Mapping, records: Sequence[SampleRecord], images: Optional[Sequence] = None,
                 earlier: Optional[Sequence] = None, decoder=None) -> dict:
    """A copy of the LATENT carrying `records` (one per row) and the matching batch_index, and the
    rows' decoded images (by `decoder`, a VAE) and replaced versions when given (else none: stale ones
    are dropped)."""
    records = tuple(records)
    n = int(latent["samples"].shape[0])
    if len(records) != n:
        raise ValueError(f"{len(records)} records for {n} samples")
    out = {k: v for k, v in latent.items() if k not in (IMAGES_KEY, EARLIER_KEY, DECODER_KEY)}
    out[RECORDS_KEY] = records
    out[SAMPLES_KEY] = out["samples"]
    out["batch_index"] = [r.batch_index for r in records]
    for key, rows in ((IMAGES_KEY, images), (EARLIER_KEY, earlier)):
        if rows is not None:
            if len(rows) != n:
                raise ValueError(f"{len(rows)} rows of {key} for {n} samples")
            out[key] = tuple(rows)
    if images is not None:
        out[DECODER_KEY] = decoder
    return out


def rows_of(latent: Mapping, key: str) -> tuple:
    """The per-row artifacts under `key` (None for each row when absent or no longer matching: the rows
    changed, or their samples did)."""
    n = int(latent["samples"].shape[0])
    rows = latent.get(key)
    fresh = not _samples_changed(latent) and records_of(latent) is not None
    return tuple(rows) if fresh and isinstance(rows, tuple) and len(rows) == n else (None,) * n


def decoded_rows(latent: Mapping, decoder, key: str = IMAGES_KEY) -> tuple:
    """rows_of(latent, key) when `decoder` (a VAE) decoded those images, else None for each row: a stage
    with another VAE decodes again rather than mix two VAEs' images."""
    if latent.get(DECODER_KEY) is not decoder:
        return (None,) * int(latent["samples"].shape[0])
    return rows_of(latent, key)


def bare_records(batch_index: Sequence[int]) -> Tuple[SampleRecord, ...]:
    """Records that know only their batch index (for a LATENT that came without any)."""
    return tuple(SampleRecord(int(b)) for b in batch_index)


def stage_steps(records: Sequence[SampleRecord], kind: str) -> Optional[int]:
    """The steps every record's last `kind` stage took, or None when they differ or are missing."""
    steps = {r.last(kind).steps if r.last(kind) else None for r in records}
    return steps.pop() if len(steps) == 1 else None


def average_cost(records: Sequence[SampleRecord]) -> float:
    return sum(r.cost for r in records) / len(records) if records else 0.0


def stage_line(records: Sequence[SampleRecord]) -> str:
    """What each kind of stage cost the batch: 'student 4 x 4/4, retry 4 x 2/4, teacher 12 x 1/4'."""
    kinds = list(dict.fromkeys(s.kind for r in records for s in r.stages if s.steps))
    parts = []
    for kind in kinds:
        ran = [s.steps for r in records for s in r.stages if s.kind == kind and s.steps]
        steps = sorted(set(ran))
        parts.append(f"{kind} {'/'.join(map(str, steps))} steps x {len(ran)}/{len(records)}")
    return "stages: " + ", ".join(parts) if parts else "stages: none"


def cost_line(records: Sequence[SampleRecord]) -> str:
    """'average steps spent: S + m/n x R = c' for a student + teacher batch, else the plain average;
    saying so when nodes outside the pack changed samples (their steps are not known here)."""
    avg = average_cost(records)
    improved = [r for r in records if r.last("teacher")]
    student = stage_steps(records, "student")
    teacher = stage_steps(improved, "teacher") if improved else 0
    outside = sum(1 for r in records if r.last(OUTSIDE))
    note = f", plus what other nodes did to {outside}/{len(records)} samples (not counted)" if outside else ""
    if student is not None and teacher is not None and \
            all(r.cost == student + (teacher if r.last("teacher") else 0) for r in records):
        return f"average steps spent: {student} + {len(improved)}/{len(records)} x {teacher} = {avg:g}{note}"
    return f"average steps spent: {avg:g} per sample{note}"


def student_name(student: Optional[int]) -> str:
    """How reports and calibration files name a student: 'student 2' (the plain sampler's: 'student 1')."""
    return f"student {student or 1}"


def student_labels(records: Sequence[SampleRecord]) -> List[Optional[int]]:
    """The students that made these samples, in order of first appearance (None: one unnamed student)."""
    return list(dict.fromkeys(r.student for r in records))


def per_student_lines(records: Sequence[SampleRecord]) -> List[str]:
    """Per student: how many samples its gate kept and the average steps its samples cost."""
    lines = []
    for label in student_labels(records):
        mine = [r for r in records if r.student == label]
        kept = [r for r in mine if r.last("gate") is not None and r.last("gate").kept]
        gated = [r for r in mine if r.last("gate") is not None]
        acceptance = f"kept {len(kept)}/{len(gated)}, " if gated else ""
        lines.append(f"{student_name(label) if label else 'student'}: {len(mine)} samples, {acceptance}average steps "
                     f"{average_cost(mine):g}")
    return lines

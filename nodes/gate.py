"""Oracle gate: score each student sample and decide which ones the teacher improves."""
import dataclasses
import logging

import torch

import folder_paths

from ..oracle.calibration import CalibrationError, check_made_by, read_calibration
from ..schedulers.batching import batch_indices
from ..schedulers.errors import InputError
from ..schedulers.gating import (GateDecision, calibration_mismatch, calibration_of, decide,
                                 keep_better, resolve_threshold, rows_to_score, sample_prompts)
from ..schedulers.record import (DECODER_KEY, EARLIER_KEY, bare_records, decoded_rows, records_of, rows_of,
                                 stage_steps, student_labels, student_name, with_records)
from ..schedulers.routing import STUDENT_SLOTS, calibration_student_problem
from .model_checks import check_vae_fits
from .sampling import check_interrupt
from . import inputs
from .common import CATEGORY, GATE_TYPE, ORACLE_TYPE, file_signature, full_path, inputs_named
from .preview import save_previews

log = logging.getLogger("StudentTeacher")
CALIBRATION_FOLDER = "image_reward_calibration"
NO_CALIBRATION = "none"
NO_RECORDS = ("the latent carries no sample records (it does not come straight from the Consistency Student "
              "Sampler, or a core latent node rebuilt it): using the widgets' settings")


def calibration_choices():
    return [NO_CALIBRATION] + folder_paths.get_filename_list(CALIBRATION_FOLDER)


def load_calibration(name, input_name="calibration"):
    """(taus, metadata) of a calibration file, or (None, {}) for none."""
    if not name or name == NO_CALIBRATION:
        return None, {}
    path = full_path(CALIBRATION_FOLDER, name, input_name, "the calibration JSON (the Calibrate node makes one)")
    try:
        return read_calibration(path)
    except CalibrationError as e:
        raise InputError(input_name, str(e), "pick another file, or make it again with the Calibrate node") from None


def oracle_id(oracle) -> str:
    """What a gate stage records of its scorer: scores of the same kind and weights are comparable."""
    return f"{oracle.kind} {oracle.fingerprint}"


def oracle_label(oracle) -> str:
    return oracle.kind if oracle.name == oracle.kind else f"{oracle.kind} ({oracle.name})"


def check_calibration_oracle(meta, name, input_name, oracle):
    """A calibration made with another oracle than the gate's is refused: its tau is on another scale."""
    try:
        check_made_by(meta, oracle.kind, oracle.name, oracle.fingerprint, name)
    except CalibrationError as e:
        raise InputError(input_name, str(e), "choose a calibration made with this oracle, or make one with the "
                         "Calibrate node and this oracle") from None


def calibration_signature(node_class, calibration=NO_CALIBRATION, **inputs):
    """IS_CHANGED of the nodes with calibration inputs: a file recalibrated under the same name re-runs them."""
    names = [calibration] + [inputs.get(f"calibration_{i}", NO_CALIBRATION) for i in range(2, STUDENT_SLOTS + 1)]
    return "/".join(file_signature(CALIBRATION_FOLDER, n) if n != NO_CALIBRATION else "" for n in names)


def gate(latent, vae, oracle, prompt, threshold_mode="tau", tau=0.0, k=50, calibration=NO_CALIBRATION,
         budget=10.0, student_steps=0, teacher_steps=12, student_calibrations=(), keep_better=False,
         tolerance=5.0) -> GateDecision:
    """Decode the samples that are new since the last gate once, score them, and threshold the scores:
    each sample with the threshold of its own student (calibration for student 1, student_calibrations
    for students 2..). The decision carries the gated LATENT for the next stage."""
    records = records_of(latent)
    notes = [] if records else [NO_RECORDS]
    records = records or bare_records(batch_indices(latent))
    calibrations = [calibration] + list(student_calibrations)
    thresholds = {}
    for student in student_labels(records):
        mine = [r for r in records if r.student == student]
        input_name, name = calibration_of(student, threshold_mode, calibrations, NO_CALIBRATION)
        steps = int(student_steps) or stage_steps(mine, "student") or 0
        if threshold_mode == "budget" and not steps:
            raise InputError("student_steps", "budget mode needs the student's step count and the latent does not "
                             "say it", "set student_steps")
        taus, meta = load_calibration(name, input_name)
        if taus is not None and threshold_mode != "tau":
            check_calibration_oracle(meta, name, input_name, oracle)
            problem = calibration_student_problem(meta, student)
            if problem and student is not None:
                raise InputError(input_name, f"{name} {problem}", f"choose {student_name(student)}'s calibration here")
            if problem:
                notes.append(f"warning: {name} {problem}")
        if taus is None and threshold_mode != "tau" and input_name != "calibration":
            raise InputError(input_name, f"{student_name(student)} has no calibration",
                             f"choose {student_name(student)}'s calibration file (each student scores differently)")
        with inputs_named({"calibration": input_name}):  # a measured mode's problem is its student's file's
            thresholds[student] = resolve_threshold(threshold_mode, tau=tau, k=k, taus=taus, source=name,
                                                    budget=budget, student_steps=steps or 1,
                                                    teacher_steps=teacher_steps, metadata=meta,
                                                    tolerance=tolerance)
        notes += calibration_mismatch(meta, mine)
    texts = sample_prompts(prompt, records)
    samples, images, scores, new_scores, records = score_changed(latent, records, vae, oracle, texts, keep_better)
    for note in notes:
        log.warning(note)
    gated = {**latent, "samples": samples}
    decision = decide(scores, [thresholds[r.student] for r in records], records, images=images,
                      budget_teacher_steps=teacher_steps if threshold_mode == "budget" else None, notes=notes,
                      new_scores=new_scores, oracle=oracle_id(oracle), oracle_name=oracle_label(oracle), prompts=texts)
    return dataclasses.replace(decision, latent=with_records(gated, decision.records, images=list(images),
                                                             decoder=vae))


def score_changed(latent, records, vae, oracle, texts, keep_better_on=False):
    """Decode and score only the samples that changed since a gate of this oracle scored them against
    the same text (a gate after an improver); the others keep their score and decoded image.
    keep_better_on: a sample an improver made score lower goes back to its earlier version and w
    (scored by this oracle too, when an earlier gate used another). -> (samples, images, scores, new
    scores of the samples sent back (else None), records)."""
    me = oracle_id(oracle)
    samples = latent["samples"]
    images = list(decoded_rows(latent, vae))   # decoded by the gate or improver before, with this VAE
    missing = [i for i in range(len(records)) if images[i] is None]
    check_vae_fits(vae, samples)
    if missing:
        for i, image in zip(missing, vae.decode(samples[missing])):
            images[i] = image
    check_interrupt()
    fresh = rows_to_score(records, me, texts)
    new = oracle.score(torch.stack([images[i] for i in fresh]), [texts[i] for i in fresh]).tolist() if fresh else []
    scores = [records[i].score for i in range(len(records))]
    for i, score in zip(fresh, new):
        scores[i] = score
    new_scores = [None] * len(records)
    if keep_better_on:
        earlier = [list(row) if row is not None else None for row in rows_of(latent, EARLIER_KEY)]
        if latent.get(DECODER_KEY) is not vae:  # their images are another VAE's
            earlier = [row[:1] + [None] + row[2:] if row is not None else None for row in earlier]
        before = [records[i].earlier_score(me, texts[i]) if earlier[i] is not None else None for i in fresh]
        unscored = [j for j, i in enumerate(fresh) if earlier[i] is not None and before[j] is None]
        if unscored:  # an earlier gate used another oracle: score the earlier versions on this one's scale
            for j in unscored:
                row = earlier[fresh[j]]
                if row[1] is None:
                    row[1] = vae.decode(row[0][None])[0]
            again = oracle.score(torch.stack([earlier[fresh[j]][1] for j in unscored]),
                                 [texts[fresh[j]] for j in unscored]).tolist()
            for j, value in zip(unscored, again):
                before[j] = value
        back = [i for i, revert in zip(fresh, keep_better(new, before)) if revert]
        samples, records = samples.clone(), list(records)
        for i in back:
            samples[i], images[i], w = earlier[i]
            records[i] = dataclasses.replace(records[i], w=w)
            if images[i] is None:  # the improver had no decoded image of it
                images[i] = vae.decode(samples[i:i + 1])[0]
            new_scores[i], scores[i] = scores[i], before[fresh.index(i)]
    return samples, torch.stack(images), torch.tensor(scores, dtype=torch.float32), new_scores, records


class OracleGate:
    DESCRIPTION = ("Decodes the student's samples, scores each against its prompt with the oracle "
                   "(ImageReward, PickScore, HPSv2, CLIP score or an ensemble), and keeps the samples scoring at "
                   "least tau; the others go to the teacher. A calibration made with another oracle is refused. "
                   "tau is given directly, or is the k-th percentile of a calibration file, or is the percentile "
                   "an average-steps budget affords (S + k/100 * R). Shows every sample with its score. Chained "
                   "after an improver, it decodes and scores only the samples that stage changed, and can keep "
                   "the better version of each.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", GATE_TYPE, "STRING", "LATENT")
    RETURN_NAMES = ("images", "gate", "report", "latent")
    OUTPUT_TOOLTIPS = ("The samples' decoded images (the teacher node reuses them for kept samples).",
                       "Scores, tau and the kept/rejected decision for each sample; connect to Teacher Improve.",
                       "One line per sample: score and decision.",
                       "The gated samples (with keep_better, the better of each sample's versions), each knowing "
                       "its score: a gate after the next improver scores only what that improver changed.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": ("LATENT", {"tooltip": "The student's samples."}),
            "vae": ("VAE", {"tooltip": "Decodes the samples for the oracle (once; the images are reused)."}),
            "oracle": (ORACLE_TYPE, {"tooltip": "The scorer, from Load Oracle (or Ensemble Oracles)."}),
            "prompt": ("STRING", {"multiline": True, "default": "",
                                  "tooltip": "The prompt the samples were made for (the oracle scores image-text "
                                             "agreement). Leave empty when the prompts come from Encode Prompt "
                                             "List: each sample is then scored against its own prompt. Filled in, "
                                             "it is used for every sample."}),
            "threshold_mode": inputs.threshold_mode("tau: use tau as given (0 = ImageReward's average "
                                                    "generated image). percentile: tau = the k-th "
                                                    "percentile from the calibration file. budget: the "
                                                    "largest calibrated k whose average cost "
                                                    "S + k/100*R fits the budget." + inputs.MEASURED_MODES_TIP),
            "tau": inputs.tau("Score threshold (threshold_mode tau): samples scoring below it go to "
                              "the teacher. On the oracle's scale: ImageReward ~ -2..2, PickScore "
                              "~ 18..23, HPSv2 ~ 0.2..0.3, CLIP score ~ 20..35, ensemble ~ -2..2."),
            "k": inputs.k("Percentile (threshold_mode percentile): about k% of samples go to the "
                          "teacher. 0 keeps all, 100 improves all."),
            "calibration": (calibration_choices(), {"tooltip": "Calibration JSON ({\"10\": tau, ...}) from "
                                                               "models/image_reward/calibration or the pack's "
                                                               "presets; made by the Calibrate node."}),
            "budget": inputs.budget("Average steps per sample (threshold_mode budget and best for budget)."),
            "student_steps": ("INT", {"default": 0, "min": 0, "max": 50,
                                      "tooltip": "S for budgets and reports; 0 reads it from the Consistency "
                                                 "Student Sampler's latent."}),
            "teacher_steps": ("INT", {"default": 12, "min": 1, "max": 1000,
                                      "tooltip": "R, the teacher's steps (threshold_mode budget); match the "
                                                 "Teacher Improve node."}),
        }, "optional": {
            "keep_better": ("BOOLEAN", {"default": False,
                                        "tooltip": "After an improver (teacher, retry): keep, per sample, whichever "
                                                   "of its version before and after scores higher, so no stage can "
                                                   "lower a score. Use this gate's latent output downstream."}),
            **{f"calibration_{i}": (calibration_choices(), {"tooltip": f"Routed students: student {i}'s own calibration "
                                                                    "(students score differently, one tau for all "
                                                                    "would be wrong); percentile and budget modes."})
               for i in range(2, STUDENT_SLOTS + 1)},
            "tolerance": inputs.tolerance(inputs.TOLERANCE_TIP),
        }}

    IS_CHANGED = classmethod(calibration_signature)

    def run(self, latent, vae, oracle, prompt, threshold_mode, tau, k, calibration, budget, student_steps,
            teacher_steps, keep_better=False, tolerance=5.0, **student_calibrations):
        per_student = [student_calibrations.get(f"calibration_{i}", NO_CALIBRATION)
                       for i in range(2, STUDENT_SLOTS + 1)]
        decision = gate(latent, vae, oracle, prompt, threshold_mode, tau, k, calibration, budget,
                        student_steps, teacher_steps, per_student, keep_better, tolerance)
        captions = [f"{s:+.3f} {'kept' if ok else 'to teacher'}" + (f" w {r.w:g}" if r.w is not None else "")
                    for s, ok, r in zip(decision.scores.tolist(), decision.accepted.tolist(), decision.records)]
        ui = {"images": save_previews(decision.images, captions, decision.accepted.tolist())}
        return {"ui": ui, "result": (decision.images, decision, "\n".join(decision.lines()), decision.latent)}

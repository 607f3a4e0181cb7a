"""Measure Student vs Teacher: on held-out prompts, per prompt, the student's sample, the sample the gate's
improver makes of it, and optionally the teacher alone from the same noise, each scored by the gating oracle
and by an independent judge (Starodubcev et al. 2023: a noticeable share of student samples beat the
teacher's). The per-prompt scores go into a calibration file; the report and the plot are computed from it."""
import math
from collections import defaultdict
from types import SimpleNamespace

import torch
from PIL import Image

import comfy.utils
import folder_paths

from ..oracle.calibration import DEFAULT_KS, calibration_data, prompt_id
from ..schedulers.errors import InputError, require_file_stem
from ..schedulers.record import records_of
from ..schedulers.measure import (GATE_COLUMNS, JUDGE_COLUMNS, MEASUREMENT, measurement_of, measurement_report,
                                  measurement_settings, require_finite_scores)
from ..schedulers.measure_plot import render_curve
from ..schedulers.shards import PROMPT_INDEX_MAX
from . import inputs
from .calibrate import (CALIBRATION_UI, SHIPPED_PROMPTS, TOO_FEW, as_image, calibration_settings, oracle_identity,
                        save_file)
from .common import CATEGORY, ORACLE_TYPE, file_signature, inputs_named
from .gate import gate
from .improvers import images_of
from .inputs import STUDENT_SAMPLER, STUDENT_SCHEDULER
from .model_checks import latent_format_name
from .prompts import NO_FILE, PROMPTS_FOLDER, encode_prompts, prompt_list
from .sampling import check_interrupt
from .student import student_sample
from .teacher import improve

STUDENT_INPUTS = {"model": "student", "steps": "student_steps", "cfg": "student_cfg", "scheduler": "student_scheduler",
                  "positive": "clip", "negative": "clip", "latent_image": "width"}
TEACHER_INPUTS = {"model": "teacher", "steps": "teacher_steps", "cfg": "teacher_cfg", "latent": "width",
                  "source_latent": "width"}


def measure_batch(prompts, index, setup):
    """One batch of prompts (their indices in the whole list) -> ({column: scores}, the student's w per sample).
    Every sample's noise depends on (seed, its index) only, so a shard measures what one run would, and a
    gated run with the same seed ends with exactly these samples."""
    positive = encode_prompts(setup.clip, prompts)
    negative = setup.clip.encode_from_tokens_scheduled(setup.clip.tokenize(setup.negative_prompt))
    empty = {"samples": torch.zeros([len(prompts), 4, setup.height // 8, setup.width // 8]), "batch_index": index}
    with inputs_named(STUDENT_INPUTS):
        student = student_sample(setup.student, positive, negative, empty, setup.seed, setup.student_steps,
                                 setup.student_cfg, setup.schedule, model_input="student",
                                 sampler_name=setup.student_sampler, scheduler=setup.student_scheduler)
    # the gate with tau = +inf: every sample scored and sent on, so the improver makes what it would at any k
    decision = gate(student, setup.vae, setup.oracle, "", "tau", math.inf)
    images = {"student": decision.images}
    with inputs_named(TEACHER_INPUTS):
        improved, _ = improve(setup.teacher, positive, negative, decision.latent, setup.strategy,
                              setup.rollback_mode, setup.rollback, setup.teacher_steps, setup.sampler_name,
                              setup.scheduler, setup.teacher_cfg, setup.seed, setup.vae, decision, empty)
        images["improved"] = images_of(improved)
    if setup.teacher_alone_steps:
        with inputs_named(dict(TEACHER_INPUTS, steps="teacher_alone_steps")):
            alone, _ = improve(setup.teacher, positive, negative, student, "regenerate", setup.rollback_mode,
                               setup.rollback, setup.teacher_alone_steps, setup.sampler_name, setup.scheduler,
                               setup.teacher_cfg, setup.seed, setup.vae, None, empty)
        images["teacher"] = images_of(alone)
    check_interrupt()
    scores = {GATE_COLUMNS["student"]: decision.scores.tolist()}
    for sample, pixels in images.items():
        if sample != "student":
            scores[GATE_COLUMNS[sample]] = setup.oracle.score(pixels, prompts).tolist()
        scores[JUDGE_COLUMNS[sample]] = setup.judge.score(pixels, prompts).tolist()
    require_finite_scores(scores, index)
    return scores, [r.w for r in records_of(student)]


def save_plot(picture, stem):
    """The plot as a PNG in ComfyUI's output folder (a new file, ComfyUI's own numbering) -> its ui entry."""
    image = Image.fromarray(picture)
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
        f"StudentTeacher/{stem}_curve", folder_paths.get_output_directory(), image.width, image.height)
    file = f"{name}_{counter:05}_.png"
    image.save(f"{folder}/{file}")
    return {"filename": file, "subfolder": subfolder, "type": "output"}


class MeasureStudentVsTeacher:
    DESCRIPTION = ("Measures, on YOUR models, how often the student beats the teacher and what quality each k buys. "
                   "On held-out prompts it makes per prompt the student sample, the improved sample (refine or "
                   "regenerate, as the gate would send it) and optionally the teacher alone (its own full step "
                   "count, same noise), and scores each with the gating oracle and an independent judge. Saves the "
                   "per-prompt scores as a calibration of the student (the gate reads its tau and, with threshold "
                   "mode 'best for budget' or 'cheapest within', its k from the measured curve); reports the "
                   "student's win rates with 95 % intervals and plots the judged quality against average steps "
                   "S + (share improved) R for k = 0..100. Split long lists over runs or servers with first_prompt and "
                   "max_prompts (tools/distribute.py).")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("plot", "report")
    OUTPUT_TOOLTIPS = ("The quality-cost curve with student only, improve all, teacher alone, the best k and the "
                       "cheapest k within the tolerance marked (also saved as a PNG in the output folder).",
                       "Win rates with 95 % intervals, the curve's ends, the chosen k, and the saved file.")

    @classmethod
    def INPUT_TYPES(cls):
        files = [NO_FILE] + folder_paths.get_filename_list(PROMPTS_FOLDER)
        return {"required": {
            "student": ("MODEL", {"tooltip": "The student, exactly as your gated graph uses it."}),
            "teacher": ("MODEL", {"tooltip": "The teacher, of the student's family (it refines the student's "
                                             "latents and shares its text encoder here)."}),
            "clip": ("CLIP", {"tooltip": "Encodes each prompt for the student and the teacher."}),
            "vae": ("VAE", {"tooltip": "Decodes every sample for the oracle and the judge."}),
            "oracle": (ORACLE_TYPE, {"tooltip": "The gating oracle, as your gate uses it: its scores of the student "
                                                "samples are the file's calibration (tau)."}),
            "judge": (ORACLE_TYPE, {"tooltip": "An independent judge, ANOTHER oracle than the gate's (e.g. gate with "
                                               "ImageReward, judge with PickScore, HPSv2 or the LAION aesthetic "
                                               "predictor). The same oracle flatters the gate; the report says so."}),
            "prompts": ("STRING", {"multiline": True, "default": "",
                                   "tooltip": "Held-out prompts, one per line (ignored when prompts_file is set); "
                                              "not the ones you tune on. Hundreds for a stable curve."}),
            "prompts_file": (files, {"default": SHIPPED_PROMPTS if SHIPPED_PROMPTS in files else NO_FILE,
                                     "tooltip": "A prompt list: the pack's prompts/ folder or "
                                                "models/image_reward/prompts/, one prompt per line."}),
            "max_prompts": ("INT", {"default": 0, "min": 0, "max": PROMPT_INDEX_MAX,
                                    "tooltip": "Use only N prompts from first_prompt on (0 = all)."}),
            "negative_prompt": ("STRING", {"multiline": True, "default": "",
                                           "tooltip": "Shared negative prompt of the student and the teacher."}),
            "width": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 8, "tooltip": "Image width."}),
            "height": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 8, "tooltip": "Image height."}),
            "seed": inputs.seed("Noise seed: prompt i's samples use batch index i of it, as a gated run over the "
                                "same prompt list with this seed does."),
            "student_steps": inputs.student_steps("S, the student's steps, as your gated graph runs them."),
            "student_cfg": inputs.student_cfg("The student's classifier-free guidance."),
            "schedule": inputs.schedule("The student's schedule (lcm, turbo or sampler), as your graph uses it."),
            "strategy": inputs.strategy("How the gate's improver treats a rejected sample. refine: rollback + "
                                        "teacher steps. regenerate: the teacher from the same noise."),
            "rollback_mode": inputs.rollback_mode("refine: strength (like KSampler denoise) or vp (Algorithm 1)."),
            "rollback": inputs.rollback("refine: how far back towards noise, as your Teacher Improve node."),
            "teacher_steps": inputs.teacher_steps("R, the teacher steps per improved sample, as your Teacher "
                                                  "Improve node (the curve's cost is S + (share improved) R)."),
            "sampler_name": inputs.sampler_name("The teacher's sampler."),
            "scheduler": inputs.scheduler("The teacher's scheduler."),
            "teacher_cfg": inputs.teacher_cfg("The teacher's classifier-free guidance."),
            "teacher_alone_steps": ("INT", {"default": 25, "min": 0, "max": 1000,
                                            "tooltip": "The teacher alone at its own full step count, from the "
                                                       "student's noise: the paper's 'student vs teacher'. 0 skips "
                                                       "it (faster)."}),
            "tolerance": inputs.tolerance("The report's and plot's 'cheapest within': the cheapest k keeping all "
                                          "but tolerance % of the best judged gain over the student alone."),
            "batch_size": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip": "Prompts per batch."}),
            "filename": ("STRING", {"default": "my_student_measured",
                                    "tooltip": "Saved as models/image_reward/calibration/<filename>.json; if that "
                                               "name exists, as <filename>_2.json (never overwritten)."}),
        }, "optional": {
            "first_prompt": ("INT", {"default": 0, "min": 0, "max": PROMPT_INDEX_MAX,
                                     "tooltip": "Start at this prompt of the list: one shard of a measurement split "
                                                "over runs or servers (Merge Calibrations and tools/distribute.py "
                                                "merge shards into the file one run makes)."}),
            "student_sampler": inputs.student_sampler(inputs.STUDENT_SAMPLER_TIP),
            "student_scheduler": inputs.student_scheduler(inputs.STUDENT_SCHEDULER_TIP),
        }}

    @classmethod
    def IS_CHANGED(cls, prompts_file=NO_FILE, **_):
        return file_signature(PROMPTS_FOLDER, prompts_file) if prompts_file != NO_FILE else ""

    def run(self, student, teacher, clip, vae, oracle, judge, prompts, prompts_file, max_prompts, negative_prompt,
            width, height, seed, student_steps, student_cfg, schedule, strategy, rollback_mode, rollback,
            teacher_steps, sampler_name, scheduler, teacher_cfg, teacher_alone_steps, tolerance, batch_size,
            filename, first_prompt=0, student_sampler=STUDENT_SAMPLER, student_scheduler=STUDENT_SCHEDULER):
        name = require_file_stem("filename", filename, "lcm_sd15_measured")
        first = int(first_prompt)
        texts = prompt_list(prompts, prompts_file, at_least=2, fix=TOO_FEW)[first:]
        texts = texts[:max_prompts] if max_prompts else texts
        if len(texts) < 2:
            raise InputError("first_prompt" if first else "max_prompts", f"{len(texts)} prompt(s) to measure",
                             "measure at least 2 prompts (hundreds for a stable curve)")
        if latent_format_name(teacher) != latent_format_name(student):
            raise InputError("teacher", f"the teacher is a {latent_format_name(teacher)} model, the student makes "
                             f"{latent_format_name(student)} latents", "measure with a teacher of the student's "
                             "family (one of another family needs its own text encoder: gate it in a graph)")
        setup = SimpleNamespace(student=student, teacher=teacher, clip=clip, vae=vae, oracle=oracle, judge=judge,
                        negative_prompt=negative_prompt, width=width, height=height, seed=seed,
                        student_steps=student_steps, student_cfg=student_cfg, schedule=schedule,
                        student_sampler=student_sampler, student_scheduler=student_scheduler, strategy=strategy,
                        rollback_mode=rollback_mode, rollback=rollback, teacher_steps=teacher_steps,
                        sampler_name=sampler_name, scheduler=scheduler, teacher_cfg=teacher_cfg,
                        teacher_alone_steps=teacher_alone_steps)
        columns, ws = defaultdict(list), []
        bar = comfy.utils.ProgressBar(len(texts))
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            scores, w = measure_batch(chunk, list(range(first + start, first + start + len(chunk))), setup)
            for column, values in scores.items():
                columns[column] += values
            ws += w
            bar.update(len(chunk))
        meta = calibration_settings(student, oracle, student_steps, student_cfg, schedule,
                                    (student_sampler, student_scheduler), width, height, ws, len(texts),
                                    prompts_file, seed, negative_prompt, student="student 1", students=1,
                                    route="every prompt")
        meta[MEASUREMENT] = measurement_settings(oracle_identity(judge), oracle_identity(oracle), student_steps,
                                                 teacher_steps, teacher_alone_steps, strategy=strategy,
                                                 rollback_mode=rollback_mode, rollback=float(rollback),
                                                 sampler=sampler_name, scheduler=scheduler, cfg=float(teacher_cfg),
                                                 teacher=type(teacher.model.model_config).__name__)
        data = calibration_data(columns.pop(GATE_COLUMNS["student"]), DEFAULT_KS, meta,
                                list(range(first, first + len(texts))), [prompt_id(p) for p in texts], columns)
        saved, data, where = save_file(name, data)
        measured = measurement_of(data["metadata"], saved)
        report = "\n".join([where] + measurement_report(measured, tolerance))
        picture = render_curve(measured, tolerance, title=f"{saved}: {measured.n} prompts, judge {judge.kind}, "
                                                          f"gate {oracle.kind}")
        ui = {"text": [report], "images": [save_plot(picture, saved[:-len('.json')])],
              CALIBRATION_UI: [{"file": saved, "data": data}]}
        return {"ui": ui, "result": (as_image(picture), report)}

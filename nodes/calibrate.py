"""Calibration: tau as the k-th percentile of the student's scores on held-out prompts."""
import datetime
import os

import numpy as np
import torch

import comfy.utils
import folder_paths

from ..oracle.calibration import (DEFAULT_KS, ShardRefused, calibration_data, merge_calibrations, prompt_id,
                                  save_new_as)
from ..oracle.histogram import render_histogram
from ..schedulers.errors import InputError, require_file_stem
from ..schedulers.record import records_of
from ..schedulers.routing import ROUTE_MODES, STUDENT_SLOTS, prompts_of_students
# the UI output key of the files a node saved, [{"file": name, "data": content}], read by tools/distribute.py
from ..schedulers.shards import PROMPT_INDEX_MAX, RESULT_KEY as CALIBRATION_UI
from .sampling import check_interrupt
from .common import CATEGORY, ORACLE_TYPE, file_signature, inputs_named
from .gate import (CALIBRATION_FOLDER, NO_CALIBRATION, calibration_choices, calibration_signature, load_calibration,
                   oracle_label)
from .prompts import NO_FILE, PROMPTS_FOLDER, encode_prompts, prompt_list
from .routing import CENTROIDS_FOLDER, route as route_prompts
from .routing import NO_FILE as NO_CENTROIDS
from . import inputs
from .inputs import STUDENT_SAMPLER, STUDENT_SCHEDULER
from .student import student_sample

SHIPPED_PROMPTS = "calibration_prompts.txt"  # 64 held-out prompts in the pack's prompts/ folder
TOO_FEW = "give at least 2 prompts, one per line (hundreds for a stable tau; the paper uses 500 held-out captions)"


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def student_scores(model, clip, vae, oracle, prompts, negative_prompt, width, height, steps, cfg, schedule,
                   seed, batch_size, w="", indices=None, model_input="model",
                   sampler=(STUDENT_SAMPLER, STUDENT_SCHEDULER)):
    """Score one student sample per prompt; the sample of a prompt uses the batch index of its position
    in the whole list (`indices`, default 0, 1, ...), so a shard or a routed share draws the samples one
    run would. Returns the scores and the w each sample embedded (None for a student without a guidance
    embedding)."""
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(negative_prompt))
    indices = list(indices) if indices is not None else list(range(len(prompts)))
    scores, ws = [], []
    bar = comfy.utils.ProgressBar(len(prompts))
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        latent = {"samples": torch.zeros([len(chunk), 4, height // 8, width // 8]),
                  "batch_index": indices[start:start + batch_size]}
        out = student_sample(model, encode_prompts(clip, chunk), negative, latent, seed, steps, cfg, schedule, w=w,
                             model_input=model_input, sampler_name=sampler[0], scheduler=sampler[1])
        scores.append(oracle.score(vae.decode(out["samples"]), chunk))
        ws += [r.w for r in records_of(out)]
        check_interrupt()
        bar.update(len(chunk))
    return torch.cat(scores).numpy(), ws


class CalibrateThreshold:
    DESCRIPTION = ("Makes a calibration file: generates one student sample per held-out prompt, scores them "
                   "with the oracle and saves the 10th..90th percentiles ({\"10\": tau, ...}, the format of the "
                   "paper's IR_percentiles_*.json) plus the settings, the oracle and every raw score (so any k is "
                   "exact and shards merge), to models/image_reward/calibration/. Split a long prompt list over "
                   "machines with first_prompt and max_prompts, then merge with Merge Calibrations. "
                   "Use the same steps, cfg and size as the gate's student. With several students (routing), one "
                   "file per student from the same prompts, in one run.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("histogram", "summary")
    OUTPUT_TOOLTIPS = ("Histogram of the scores with the percentile lines.", "Saved path and thresholds.")

    @classmethod
    def INPUT_TYPES(cls):
        files = [NO_FILE] + folder_paths.get_filename_list(PROMPTS_FOLDER)
        return {"required": {
            "model": ("MODEL", {"tooltip": "The student, exactly as the gate's graph uses it."}),
            "clip": ("CLIP", {"tooltip": "Encodes each prompt."}),
            "vae": ("VAE", {"tooltip": "Decodes the samples for the oracle."}),
            "oracle": (ORACLE_TYPE, {"tooltip": "From Load Oracle (or Ensemble Oracles)."}),
            "prompts": ("STRING", {"multiline": True, "default": "",
                                   "tooltip": "Held-out prompts, one per line (ignored when prompts_file is set)."}),
            "prompts_file": (files, {"default": SHIPPED_PROMPTS if SHIPPED_PROMPTS in files else NO_FILE,
                                     "tooltip": "A prompt list: the pack's prompts/ folder or "
                                                "models/image_reward/prompts/, one prompt per line."}),
            "max_prompts": ("INT", {"default": 0, "min": 0, "max": PROMPT_INDEX_MAX,
                                    "tooltip": "Use only the first N prompts (0 = all)."}),
            "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "Shared negative prompt."}),
            "width": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 8, "tooltip": "Image width."}),
            "height": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 8, "tooltip": "Image height."}),
            "steps": inputs.student_steps("The student's steps, as the gate's student runs them."),
            "cfg": inputs.student_cfg("The student's classifier-free guidance, as the gate's student uses it."),
            "schedule": inputs.schedule("The student's schedule (lcm, turbo or sampler), as the gate's student uses "
                                        "it."),
            "seed": inputs.seed("Noise seed: the sample of prompt i uses batch index i of it, so shards and routed "
                                "shares draw the samples one run would."),
            "batch_size": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip": "Prompts per student batch."}),
            "filename": ("STRING", {"default": "my_student",
                                    "tooltip": "Saved as models/image_reward/calibration/<filename>.json; if a "
                                               "calibration of that name exists (the pack's presets too), as "
                                               "<filename>_2.json (never overwritten)."}),
        }, "optional": {
            "w": inputs.w("Guidance-embedded students: the w to calibrate at, one value or a list cycled over the "
                          "prompts (calibrate at the w you gate). Empty: the student's default w."),
            "first_prompt": ("INT", {"default": 0, "min": 0, "max": PROMPT_INDEX_MAX,
                                     "tooltip": "Start at this prompt of the list (0 = the first): one shard of a "
                                                "calibration split over runs or machines. Each prompt keeps its seed "
                                                "and id, so Merge Calibrations makes the file one run would."}),
            **{f"student_{i}": ("MODEL", {"tooltip": f"Routed students: student {i}, calibrated into "
                                                     f"<filename>_student{i}.json (the first model then goes to "
                                                     "<filename>_student1.json), on the prompts route sends it."})
               for i in range(2, STUDENT_SLOTS + 1)},
            "route": (["every prompt"] + [m for m in ROUTE_MODES if m != "best_of"],
                      {"default": "every prompt",
                       "tooltip": "Several students: calibrate each on the prompts the Route Prompts to Students "
                                  "node would send it (set route, rules, default_student and centroids as "
                                  "there), so its tau is a percentile of the share it serves. every prompt: each "
                                  "student on all of them (for best_of)."}),
            "rules": ("STRING", {"multiline": True, "default": "",
                                 "tooltip": "route embedding / keywords: the router's rules, copied from Route "
                                            "Prompts to Students."}),
            "default_student": ("INT", {"default": 1, "min": 1, "max": STUDENT_SLOTS,
                                        "tooltip": "route keywords: the router's default_student."}),
            "centroids": ([NO_CENTROIDS] + folder_paths.get_filename_list(CENTROIDS_FOLDER),
                          {"tooltip": "route centroids: the router's centroid file."}),
            "sampler_name": inputs.student_sampler(inputs.STUDENT_SAMPLER_TIP),
            "scheduler": inputs.student_scheduler(inputs.STUDENT_SCHEDULER_TIP),
        }}

    @classmethod
    def IS_CHANGED(cls, prompts_file=NO_FILE, centroids=NO_CENTROIDS, **_):
        return "/".join(file_signature(folder, name) if name != NO_FILE else ""
                        for folder, name in ((PROMPTS_FOLDER, prompts_file), (CENTROIDS_FOLDER, centroids)))

    def run(self, model, clip, vae, oracle, prompts, prompts_file, max_prompts, negative_prompt, width, height,
            steps, cfg, schedule, seed, batch_size, filename, w="", first_prompt=0, route="every prompt", rules="",
            default_student=1, centroids=NO_CENTROIDS, sampler_name=STUDENT_SAMPLER, scheduler=STUDENT_SCHEDULER,
            **more_students):
        name = require_file_stem("filename", filename, "lcm_sd15_4steps")
        first = int(first_prompt)
        texts = prompt_list(prompts, prompts_file, at_least=2, fix=TOO_FEW)[first:]
        if len(texts) < 2:
            raise InputError("first_prompt", f"{len(texts)} prompt(s) from prompt {first} on",
                             "lower first_prompt, or give more prompts")
        if max_prompts == 1:
            raise InputError("max_prompts", "1 prompt has no percentiles", "use 0 (every prompt) or at least 2")
        texts = texts[:max_prompts] if max_prompts else texts
        students = [(1, model)] + [(i, more_students[f"student_{i}"]) for i in range(2, STUDENT_SLOTS + 1)
                                   if more_students.get(f"student_{i}")]
        shares = routed_shares(route, texts, [n for n, _ in students], clip, rules, default_student, centroids)
        images, lines, files = [], [], []
        for (number, student), share in zip(students, shares):  # each keeps its input's number, as the gate's
            model_input = "model" if number == 1 else f"student_{number}"
            mine = [texts[i] for i in share]
            with inputs_named({"positive": "clip", "negative": "clip", "latent_image": "width"}):
                scores, ws = student_scores(student, clip, vae, oracle, mine, negative_prompt, width, height, steps,
                                            cfg, schedule, seed, batch_size, w, [first + i for i in share],
                                            model_input, (sampler_name, scheduler))
            meta = calibration_settings(student, oracle, steps, cfg, schedule, (sampler_name, scheduler), width,
                                        height, ws, len(mine), prompts_file, seed, negative_prompt,
                                        student=f"student {number}", students=len(students), route=route)
            routed = f" (routed: {len(mine)} of {len(texts)} prompts)" if len(mine) < len(texts) else ""
            image, text, file = save_student_calibration(name if len(students) == 1 else f"{name}_student{number}",
                                                         scores, meta, f"{oracle_label(oracle)}, {len(mine)} prompts, "
                                                         f"{steps} steps, cfg {cfg:g}", [first + i for i in share], mine)
            images.append(image)
            files.append(file)
            lines.append(f"student {number}{routed}: {text}" if len(students) > 1 else text)
        summary = "\n\n".join(lines)
        return {"ui": {"text": [summary], CALIBRATION_UI: files}, "result": (torch.cat(images), summary)}


def oracle_identity(oracle) -> dict:
    """How a file names the oracle that made its scores (a gate checks it before using the file)."""
    return {"name": oracle.name, "kind": oracle.kind, "fingerprint": oracle.fingerprint}


def calibration_settings(model, oracle, steps, cfg, schedule, sampler, width, height, ws, prompt_count,
                         prompts_file, seed, negative_prompt, **more):
    """The metadata of a calibration: the settings its student samples were made with (a gate warns when its
    student's differ), the oracle, and when."""
    return {"steps": int(steps), "cfg": float(cfg), "schedule": schedule, "width": width, "height": height,
            **({"sampler": sampler[0], "scheduler": sampler[1]} if schedule == "sampler" else {}),
            "w": sorted({x for x in ws if x is not None}) or None, "prompt_count": prompt_count,
            "prompts_file": prompts_file, "seed": int(seed), "oracle": oracle_identity(oracle), **more,
            "model": type(model.model.model_config).__name__, "negative_prompt": negative_prompt, "created": now()}


def routed_shares(route, texts, numbers, clip, rules, default_student, centroids):
    """The positions in `texts` each student (by its input number) is calibrated on: every prompt, or the
    prompts the router sends it (at least 2 each: a percentile needs them)."""
    if route == "every prompt" or len(numbers) == 1:
        return [list(range(len(texts)))] * len(numbers)
    assignment = route_prompts(route, texts, len(numbers), clip, rules, default_student, centroids)
    shares = prompts_of_students(assignment, len(numbers))
    for number, share in zip(numbers, shares):
        if len(share) < 2:
            raise InputError("route", f"student {number} gets {len(share)} of the {len(texts)} prompts", "give more "
                             "held-out prompts (hundreds), or rules that send each student at least 2")
    return shares


def save_student_calibration(name, scores, meta, caption, prompt_indices, prompts):
    """Write <name>.json (or <name>_2.json, ...: never over a file) with the raw scores of the prompts
    (their index in the list, their id) -> (histogram IMAGE, summary, {"file", "data"})."""
    data = calibration_data(scores, DEFAULT_KS, meta, list(prompt_indices), [prompt_id(p) for p in prompts])
    return save_and_draw(name, data, caption)


def save_file(name, data):
    """Save calibration `data` as <name>.json (or <name>_2.json, ...) -> (the name saved, what it holds, a line
    saying where). A name any calibration folder has (the pack's presets too) is taken: the gate's list shows
    one file per name, and a new file must not hide the one the user picks today."""
    out_dir = folder_paths.get_folder_paths(CALIBRATION_FOLDER)[0]
    path, data = save_new_as(out_dir, name, data, taken=set(folder_paths.get_filename_list(CALIBRATION_FOLDER)))
    saved = os.path.basename(path)
    where = f"saved {path}"
    if saved != name + ".json":
        where += f" (a calibration named {name}.json exists already and was left as it is)"
    return saved, data, where


def as_image(array):
    """A uint8 [H, W, 3] picture as a ComfyUI IMAGE batch of one."""
    return torch.from_numpy(np.asarray(array, dtype=np.float32) / 255.0)[None]


def save_and_draw(name, data, caption):
    """save_file, then the histogram -> (histogram IMAGE, summary, {"file": the name saved, "data": what it
    holds}: the node's UI output, which a client of ComfyUI's HTTP API reads from /history, as
    tools/distribute.py does to merge shards run on other machines)."""
    saved, data, where = save_file(name, data)
    taus = {int(k): v for k, v in data.items() if k != "metadata"}
    hist = render_histogram(data["metadata"]["samples"]["score"], taus, title=f"{saved}: {caption}")
    summary = where + "\n" + "\n".join(f"k={k}: tau={t:+.4f}" for k, t in taus.items())
    return as_image(hist), summary, {"file": saved, "data": data}


class MergeCalibrations:
    DESCRIPTION = ("Merges calibration shards -- the same student, settings, oracle and prompt list, split over runs "
                   "or machines with the Calibrate node's first_prompt and max_prompts -- into exactly the file one run "
                   "over all their prompts makes (raw scores pooled, percentiles recomputed). Refuses shards that "
                   "differ in anything but their prompts, or share a prompt. Saves to models/image_reward/calibration/.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("histogram", "summary")
    OUTPUT_TOOLTIPS = ("Histogram of all the scores with the percentile lines.", "Saved path and thresholds.")

    @classmethod
    def INPUT_TYPES(cls):
        def shard(i):
            return (calibration_choices(), {"tooltip": f"Shard {i}: a calibration made by the Calibrate node."})
        return {"required": {
            "calibration": shard(1),
            "calibration_2": shard(2),
            "filename": ("STRING", {"default": "merged",
                                    "tooltip": "Saved as models/image_reward/calibration/<filename>.json; if a "
                                               "calibration of that name exists (the pack's presets too), as "
                                               "<filename>_2.json (never overwritten)."}),
        }, "optional": {"calibration_3": shard(3), "calibration_4": shard(4)}}

    IS_CHANGED = classmethod(calibration_signature)

    def run(self, calibration, calibration_2, filename, calibration_3=NO_CALIBRATION, calibration_4=NO_CALIBRATION):
        name = require_file_stem("filename", filename, "merged_lcm_sd15")
        chosen = [("calibration", calibration), ("calibration_2", calibration_2), ("calibration_3", calibration_3),
                  ("calibration_4", calibration_4)]
        shards = [(input_name, file, load_calibration(file, input_name)[1]) for input_name, file in chosen
                  if file != NO_CALIBRATION]
        if len(shards) < 2:
            empty = next(input_name for input_name, file in chosen if file == NO_CALIBRATION)
            raise InputError(empty, "merging needs at least two calibration files", "choose another shard here")
        try:
            data = merge_calibrations([(file, {"metadata": meta}) for _, file, meta in shards])
        except ShardRefused as e:
            raise InputError(shards[e.shard][0], str(e), "choose shards of one calibration (same settings, own "
                             "prompts)") from None
        data["metadata"]["created"] = now()
        image, text, file = save_and_draw(name, data, f"{len(shards)} shards, {data['metadata']['n_scores']} prompts")
        return {"ui": {"text": [text], CALIBRATION_UI: [file]}, "result": (image, text)}

"""Calibration: tau as the k-th percentile of the student's scores on held-out prompts."""
import datetime
import os

import numpy as np
import torch

import comfy.utils
import folder_paths

from ..oracle.calibration import DEFAULT_KS, save_calibration_as
from ..oracle.histogram import render_histogram
from ..schedulers.errors import InputError
from ..schedulers.record import records_of
from .comfy_glue import check_interrupt
from .common import CATEGORY, ORACLE_TYPE, SEED, file_signature
from .gate import CALIBRATION_FOLDER
from .prompts import NO_FILE, PROMPTS_FOLDER, encode_prompts, prompt_list
from .student import ConsistencySampler, student_sample

SHIPPED_PROMPTS = "calibration_prompts.txt"  # 64 held-out prompts in the pack's prompts/ folder
TOO_FEW = "give at least 2 prompts, one per line (hundreds for a stable tau; the paper uses 500 held-out captions)"


def student_scores(model, clip, vae, oracle, prompts, negative_prompt, width, height, steps, cfg, schedule,
                   seed, batch_size, w=""):
    """Score one student sample per prompt; sample i uses batch index i of the seed. Returns the
    scores and the w each sample embedded (None for a student without a guidance embedding)."""
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(negative_prompt))
    scores, ws = [], []
    bar = comfy.utils.ProgressBar(len(prompts))
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        latent = {"samples": torch.zeros([len(chunk), 4, height // 8, width // 8]),
                  "batch_index": list(range(start, start + len(chunk)))}
        out = student_sample(model, encode_prompts(clip, chunk), negative, latent, seed, steps, cfg, schedule, w=w)
        scores.append(oracle.score(vae.decode(out["samples"]), chunk))
        ws += [r.w for r in records_of(out)]
        check_interrupt()
        bar.update(len(chunk))
    return torch.cat(scores).numpy(), ws


class CalibrateThreshold:
    DESCRIPTION = ("Makes a calibration file: generates one student sample per held-out prompt, scores them "
                   "with the oracle and saves the 10th..90th percentiles ({\"10\": tau, ...}, the format of the "
                   "paper's IR_percentiles_*.json) plus the settings used, to models/image_reward/calibration/. "
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
        student = ConsistencySampler.INPUT_TYPES()["required"]  # the same settings as the gate's student
        files = [NO_FILE] + folder_paths.get_filename_list(PROMPTS_FOLDER)
        return {"required": {
            "model": ("MODEL", {"tooltip": "The student, exactly as the gate's graph uses it."}),
            "clip": ("CLIP", {"tooltip": "Encodes each prompt."}),
            "vae": ("VAE", {"tooltip": "Decodes the samples for the oracle."}),
            "oracle": (ORACLE_TYPE, {"tooltip": "From Load ImageReward Oracle."}),
            "prompts": ("STRING", {"multiline": True, "default": "",
                                   "tooltip": "Held-out prompts, one per line (ignored when prompts_file is set)."}),
            "prompts_file": (files, {"default": SHIPPED_PROMPTS if SHIPPED_PROMPTS in files else NO_FILE,
                                     "tooltip": "A prompt list: the pack's prompts/ folder or "
                                                "models/image_reward/prompts/, one prompt per line."}),
            "max_prompts": ("INT", {"default": 0, "min": 0, "max": 100000,
                                    "tooltip": "Use only the first N prompts (0 = all)."}),
            "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "Shared negative prompt."}),
            "width": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 8, "tooltip": "Image width."}),
            "height": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 8, "tooltip": "Image height."}),
            **{name: student[name] for name in ("steps", "cfg", "schedule")},
            "seed": SEED,
            "batch_size": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip": "Prompts per student batch."}),
            "filename": ("STRING", {"default": "my_student",
                                    "tooltip": "Saved as models/image_reward/calibration/<filename>.json; if that "
                                               "file exists, as <filename>_2.json (never overwritten)."}),
        }, "optional": {
            **ConsistencySampler.INPUT_TYPES()["optional"],
            **{f"student_{i}": ("MODEL", {"tooltip": f"Routed students: student {i}, calibrated on the same prompts "
                                                     f"and seeds into <filename>_student{i}.json (the first model "
                                                     "then goes to <filename>_student1.json)."}) for i in (2, 3, 4)},
        }}

    @classmethod
    def IS_CHANGED(cls, prompts_file=NO_FILE, **_):
        return file_signature(PROMPTS_FOLDER, prompts_file) if prompts_file != NO_FILE else ""

    def run(self, model, clip, vae, oracle, prompts, prompts_file, max_prompts, negative_prompt, width, height,
            steps, cfg, schedule, seed, batch_size, filename, w="", **more_students):
        name = os.path.basename(filename.strip()).removesuffix(".json")
        if not name:
            raise InputError("filename", "empty file name", "give a name such as lcm_sd15_4steps")
        texts = prompt_list(prompts, prompts_file, max_prompts, at_least=2, fix=TOO_FEW)
        students = [model] + [more_students[f"student_{i}"] for i in range(2, 5) if more_students.get(f"student_{i}")]
        images, lines = [], []
        for s, student in enumerate(students):
            scores, ws = student_scores(student, clip, vae, oracle, texts, negative_prompt, width, height, steps, cfg,
                                        schedule, seed, batch_size, w)
            meta = {"steps": int(steps), "cfg": float(cfg), "schedule": schedule, "width": width, "height": height,
                    "w": sorted({x for x in ws if x is not None}) or None, "prompt_count": len(texts),
                    "prompts_file": prompts_file, "oracle": oracle.name, "seed": int(seed),
                    "student": f"student {s + 1}", "model": type(student.model.model_config).__name__,
                    "negative_prompt": negative_prompt, "created": datetime.datetime.now().isoformat(timespec="seconds")}
            image, text = save_student_calibration(name if len(students) == 1 else f"{name}_student{s + 1}", scores,
                                                   meta, f"{len(texts)} prompts, {steps} steps, cfg {cfg:g}")
            images.append(image)
            lines.append(text)
        summary = "\n\n".join(lines)
        return {"ui": {"text": [summary]}, "result": (torch.cat(images), summary)}


def save_student_calibration(name, scores, meta, caption):
    """Write <name>.json (or <name>_2.json, ...: never over a file) -> (histogram IMAGE, summary)."""
    out_dir = folder_paths.get_folder_paths(CALIBRATION_FOLDER)[0]
    path, data = save_calibration_as(out_dir, name, scores, DEFAULT_KS, meta)
    saved = os.path.basename(path)
    taus = {int(k): v for k, v in data.items() if k != "metadata"}
    hist = render_histogram(scores, taus, title=f"{saved}: {caption}")
    where = f"saved {path}"
    if saved != name + ".json":
        where += f" ({name}.json exists already and was left as it is)"
    summary = where + "\n" + "\n".join(f"k={k}: tau={t:+.4f}" for k, t in taus.items())
    return torch.from_numpy(np.asarray(hist, dtype=np.float32) / 255.0)[None], summary

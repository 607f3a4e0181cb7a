"""Calibration: tau as the k-th percentile of the student's scores on held-out prompts."""
import datetime
import os

import numpy as np
import torch

import comfy.utils
import folder_paths

from ..oracle.calibration import DEFAULT_KS, render_histogram, save_calibration_as
from ..schedulers.errors import InputError
from .comfy_glue import check_interrupt
from .common import CATEGORY, ORACLE_TYPE, SEED, file_signature, full_path
from .gate import CALIBRATION_FOLDER
from ..schedulers.record import records_of
from .student import ConsistencySampler, student_sample

PROMPTS_FOLDER = "student_teacher_prompts"
NO_FILE = "none"
SHIPPED_PROMPTS = "calibration_prompts.txt"  # 64 held-out prompts in the pack's prompts/ folder


def read_prompts(text, prompts_file, limit):
    if prompts_file and prompts_file != NO_FILE:
        path = full_path(PROMPTS_FOLDER, prompts_file, "prompts_file", "a text file with one prompt per line")
        with open(path, encoding="utf-8") as f:
            text = f.read()
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if limit:
        prompts = prompts[:limit]
    if len(prompts) < 2:
        raise InputError("prompts", f"{len(prompts)} prompt(s) given", "give at least 2 prompts, one per line "
                         "(hundreds for a stable tau; the paper uses 500 held-out captions)")
    return prompts


def encode_batch(clip, prompts):
    """One CONDITIONING for a batch of prompts when their encodings stack, else None."""
    encoded = [clip.encode_from_tokens_scheduled(clip.tokenize(p)) for p in prompts]
    if any(len(e) != 1 for e in encoded) or len({tuple(e[0][0].shape) for e in encoded}) != 1:
        return None
    extra = dict(encoded[0][0][1])
    if "pooled_output" in extra:
        extra["pooled_output"] = torch.cat([e[0][1]["pooled_output"] for e in encoded])
    return [[torch.cat([e[0][0] for e in encoded]), extra]]


def student_scores(model, clip, vae, oracle, prompts, negative_prompt, width, height, steps, cfg, schedule,
                   seed, batch_size, w=""):
    """Score one student sample per prompt; sample i uses batch index i of the seed. Returns the
    scores and the w each sample embedded (None for a student without a guidance embedding)."""
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(negative_prompt))
    scores, ws = [], []
    bar = comfy.utils.ProgressBar(len(prompts))
    for start in range(0, len(prompts), batch_size):
        chunk = list(enumerate(prompts[start:start + batch_size], start))
        positive = encode_batch(clip, [p for _, p in chunk])
        groups = [(chunk, positive)] if positive is not None else \
            [([item], encode_batch(clip, [item[1]])) for item in chunk]  # prompts of different token lengths
        for group, positive in groups:
            latent = {"samples": torch.zeros([len(group), 4, height // 8, width // 8]),
                      "batch_index": [i for i, _ in group]}
            out = student_sample(model, positive, negative, latent, seed, steps, cfg, schedule, w=w)
            scores.append(oracle.score(vae.decode(out["samples"]), [p for _, p in group]))
            ws += [r.w for r in records_of(out)]
            check_interrupt()
        bar.update(len(chunk))
    return torch.cat(scores).numpy(), ws


class CalibrateThreshold:
    DESCRIPTION = ("Makes a calibration file: generates one student sample per held-out prompt, scores them "
                   "with the oracle and saves the 10th..90th percentiles ({\"10\": tau, ...}, the format of the "
                   "paper's IR_percentiles_*.json) plus the settings used, to models/image_reward/calibration/. "
                   "Use the same steps, cfg and size as the gate's student.")
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
        }, "optional": ConsistencySampler.INPUT_TYPES()["optional"]}

    @classmethod
    def IS_CHANGED(cls, prompts_file=NO_FILE, **_):
        return file_signature(PROMPTS_FOLDER, prompts_file) if prompts_file != NO_FILE else ""

    def run(self, model, clip, vae, oracle, prompts, prompts_file, max_prompts, negative_prompt, width, height,
            steps, cfg, schedule, seed, batch_size, filename, w=""):
        name = os.path.basename(filename.strip()).removesuffix(".json")
        if not name:
            raise InputError("filename", "empty file name", "give a name such as lcm_sd15_4steps")
        texts = read_prompts(prompts, prompts_file, max_prompts)
        scores, ws = student_scores(model, clip, vae, oracle, texts, negative_prompt, width, height, steps, cfg,
                                    schedule, seed, batch_size, w)
        meta = {"steps": int(steps), "cfg": float(cfg), "schedule": schedule, "width": width, "height": height,
                "w": sorted({x for x in ws if x is not None}) or None,
                "prompt_count": len(texts), "prompts_file": prompts_file, "oracle": oracle.name,
                "student": type(model.model.model_config).__name__, "seed": int(seed),
                "negative_prompt": negative_prompt, "created": datetime.datetime.now().isoformat(timespec="seconds")}
        out_dir = folder_paths.get_folder_paths(CALIBRATION_FOLDER)[0]
        path, data = save_calibration_as(out_dir, name, scores, DEFAULT_KS, meta)
        saved = os.path.basename(path)
        taus = {int(k): v for k, v in data.items() if k != "metadata"}
        hist = render_histogram(scores, taus, title=f"{saved}: {len(texts)} prompts, {steps} steps, cfg {cfg:g}")
        image = torch.from_numpy(np.asarray(hist, dtype=np.float32) / 255.0)[None]
        where = f"saved {path}"
        if saved != name + ".json":
            where += f" ({name}.json exists already and was left as it is)"
        summary = where + "\n" + "\n".join(f"k={k}: tau={t:+.4f}" for k, t in taus.items())
        return {"ui": {"text": [summary]}, "result": (image, summary)}

"""A cheap retry before the teacher: a consistency student draws the rejected samples again, from fresh
noise (each retry round its own), at a fraction of the teacher's cost."""
import torch

from ..schedulers.batching import take_rows
from ..schedulers.errors import InputError
from ..schedulers.noise import RETRY_NUMBERS, retry_round
from ..schedulers.record import Stage, records_of
from .comfy_glue import check_model_fits, subset_conditioning
from .common import CATEGORY, GATE_TYPE, inputs_named
from .improvers import images_of, put_back, report, rows_to_improve, source_rows, warn_one_prompt
from .student import ConsistencySampler, student_sample


def retry_rejected(model, positive, negative, latent, seed, steps, cfg, schedule, retry, vae, decision=None,
                   source_latent=None, denoise=1.0, w=""):
    """The student on the samples the gate rejected, from fresh noise: retry number `retry`'s round, counted
    on from the retries each sample already had (schedulers.noise.retry_round) -> (LATENT, rows retried)."""
    if not 1 <= int(retry) < RETRY_NUMBERS:
        raise InputError("retry", f"got {retry}", "number the retries 1, 2, ...: each is fresh noise")
    todo, records, images = rows_to_improve(latent, decision, vae)
    if todo:
        n = int(latent["samples"].shape[0])
        check_model_fits(model, "model", latent["samples"], "latent", records,
                         {"positive": positive, "negative": negative})
        warn_one_prompt(positive, records, todo, "Student Retry")
        start = torch.zeros_like(latent["samples"][todo]) if source_latent is None else \
            source_rows(source_latent, todo, latent["samples"], model)
        sub = {"samples": start,
               "batch_index": [records[i].batch_index for i in todo]}
        if latent.get("noise_mask") is not None:  # inpainting: the retry repaints the same area
            sub["noise_mask"] = take_rows(latent["noise_mask"], todo, n)
        rounds = [retry_round(int(retry), sum(s.kind == "retry" for s in records[i].stages)) for i in todo]
        with inputs_named({"latent_image": "latent"}):
            out = student_sample(model, subset_conditioning(positive, todo, n), subset_conditioning(negative, todo, n),
                                 sub, seed, steps, cfg, schedule, denoise, w, retry_rounds=rounds,
                                 recorded_w=[records[i].w for i in todo])
        fresh = records_of(out)
        stage = Stage("retry", steps=int(steps), settings={**fresh[0].last("student").settings,
                                                           "retry": int(retry)})
        # each record keeps the sample's history and takes the retry's w (it may embed another one)
        return put_back(latent, todo, records, images, out["samples"], stage, vae, [r.w for r in fresh]), todo
    return put_back(latent, todo, records, images, None, None, vae), todo


class StudentRetry:
    DESCRIPTION = ("Before the teacher, a cheap second chance: a consistency student (the same one, another w, or "
                   "another student) draws the samples the gate rejected again from fresh noise - each retry "
                   "number its own - at the student's cost. Put an Oracle Gate after it: it scores only the "
                   "retried samples, and with keep_better keeps whichever version of each scores higher.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("LATENT", "IMAGE", "STRING")
    RETURN_NAMES = ("latent", "images", "report")
    OUTPUT_TOOLTIPS = ("Kept samples as they were and retried ones, in batch order, each with its history.",
                       "The same, decoded (only the retried samples are decoded again).",
                       "What the retry did and the average steps spent so far.")

    @classmethod
    def INPUT_TYPES(cls):
        student = ConsistencySampler.INPUT_TYPES()
        return {"required": {
            **{k: student["required"][k] for k in ("model", "positive", "negative")},
            "latent": ("LATENT", {"tooltip": "The gated samples (the Oracle Gate's latent output)."}),
            "gate": (GATE_TYPE, {"tooltip": "The Oracle Gate's decision: its rejected samples are drawn again."}),
            **{k: student["required"][k] for k in ("seed", "steps", "cfg", "schedule")},
            "retry": ("INT", {"default": 1, "min": 1, "max": 100,
                              "tooltip": "Which retry this is: each number draws other fresh noise. A second "
                                         "Student Retry in a chain draws fresh noise at any number (the samples "
                                         "count their retries)."}),
            "vae": ("VAE", {"tooltip": "Decodes the retried samples (only those)."}),
        }, "optional": {
            "source_latent": ("LATENT", {"tooltip": "Editing only: the encoded image the student started from "
                                                    "(text-to-image retries start from noise)."}),
            "denoise": student["required"]["denoise"],
            "w": student["optional"]["w"],
        }}

    def run(self, model, positive, negative, latent, gate, seed, steps, cfg, schedule, retry, vae,
            source_latent=None, denoise=1.0, w=""):
        out, todo = retry_rejected(model, positive, negative, latent, seed, steps, cfg, schedule, retry, vae, gate,
                                   source_latent, denoise, w)
        text = report(out, gate, todo, f"student retry {retry} ({steps} steps)")
        return {"ui": {"text": [text]}, "result": (out, images_of(out), text)}

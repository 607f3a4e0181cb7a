"""A cheap retry before the teacher: a consistency student draws the rejected samples again, from fresh
noise (each retry round its own), at a fraction of the teacher's cost."""
import torch

from ..schedulers.batching import take_rows
from ..schedulers.errors import InputError
from ..schedulers.noise import RETRY_NUMBERS, retry_round
from ..schedulers.record import Stage, records_of
from .conditioning import subset_conditioning
from .model_checks import check_model_fits
from .common import CATEGORY, GATE_TYPE, inputs_named
from .improvers import images_of, put_back, report, rows_to_improve, source_rows, warn_one_prompt
from . import inputs
from .inputs import STUDENT_SAMPLER, STUDENT_SCHEDULER
from .student import student_sample


def retry_rejected(model, positive, negative, latent, seed, steps, cfg, schedule, retry, vae, decision=None,
                   source_latent=None, denoise=1.0, w="", sampler_name=STUDENT_SAMPLER, scheduler=STUDENT_SCHEDULER):
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
                                 recorded_w=[records[i].w for i in todo], sampler_name=sampler_name,
                                 scheduler=scheduler)
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
        return {"required": {
            "model": ("MODEL", {"tooltip": "The student that draws the rejected samples again: the same one, the "
                                           "same with another w, or another consistency student."}),
            "positive": ("CONDITIONING", {"tooltip": "The retry's prompt conditioning (a prompt list: each sample "
                                                     "keeps its own row)."}),
            "negative": ("CONDITIONING", {"tooltip": "What to avoid; unused when cfg is 1."}),
            "latent": ("LATENT", {"tooltip": "The gated samples (the Oracle Gate's latent output)."}),
            "gate": (GATE_TYPE, {"tooltip": "The Oracle Gate's decision: its rejected samples are drawn again."}),
            "seed": inputs.seed("With the retry number and the sample's batch index, which fresh noise the retry "
                                "draws (never the student's first noise)."),
            "steps": inputs.student_steps("The retry's student steps (its cost per retried sample)."),
            "cfg": inputs.student_cfg("The retry's classifier-free guidance (1.0: one model pass per step)."),
            "schedule": inputs.schedule("lcm, turbo or sampler, as for the Consistency Student Sampler."),
            "retry": ("INT", {"default": 1, "min": 1, "max": 100,
                              "tooltip": "Which retry this is: each number draws other fresh noise. A second "
                                         "Student Retry in a chain draws fresh noise at any number (the samples "
                                         "count their retries)."}),
            "vae": ("VAE", {"tooltip": "Decodes the retried samples (only those)."}),
        }, "optional": {
            "source_latent": ("LATENT", {"tooltip": "Editing only: the encoded image the student started from "
                                                    "(text-to-image retries start from noise)."}),
            "denoise": inputs.denoise("Editing only, with source_latent: the SDEdit strength the student used."),
            "w": inputs.w("Guidance-embedded students: the w to embed, one value or a list cycled over the batch. "
                          "Empty: each sample keeps the w it was made with."),
            "sampler_name": inputs.student_sampler(inputs.STUDENT_SAMPLER_TIP),
            "scheduler": inputs.student_scheduler(inputs.STUDENT_SCHEDULER_TIP),
        }}

    def run(self, model, positive, negative, latent, gate, seed, steps, cfg, schedule, retry, vae,
            source_latent=None, denoise=1.0, w="", sampler_name=STUDENT_SAMPLER, scheduler=STUDENT_SCHEDULER):
        out, todo = retry_rejected(model, positive, negative, latent, seed, steps, cfg, schedule, retry, vae, gate,
                                   source_latent, denoise, w, sampler_name, scheduler)
        text = report(out, gate, todo, f"student retry {retry} ({steps} steps)")
        return {"ui": {"text": [text]}, "result": (out, images_of(out), text)}

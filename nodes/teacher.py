"""Teacher improvement: refine (rollback + a few teacher steps) or regenerate the samples
the gate rejected, as one sub-batch, and put them back in place (nodes/improvers.py)."""
import torch

from ..schedulers.batching import take_rows
from ..schedulers.errors import InputError, require_fraction
from ..schedulers.record import Stage
from ..schedulers.rollback import rollback_sigmas, strength_sigmas
from .conditioning import subset_conditioning
from .model_checks import check_model_fits, latent_format_name, model_frame, other_family
from .noise import initial_noise, per_sample_sampler, rollback_noise
from .sampling import check_interrupt, ksampler_schedule, sample_with_sigmas
from . import inputs
from .common import CATEGORY, GATE_TYPE
from .inputs import STRATEGIES
from .improvers import images_of, put_back, report, rows_to_improve, source_rows, warn_one_prompt

NEEDS_SOURCE = ("regenerate needs the latent the student started from",
                "connect the Empty Latent Image (text-to-image) or the VAE-encoded source image (editing) "
                "to source_latent")


def teacher_start(latent, todo, strategy, source_latent, model):
    """The clean latents the teacher starts from: the student's samples (refine) or the
    source latent - empty for text-to-image, the encoded image for editing (regenerate)."""
    if strategy == "refine":
        return latent["samples"][todo], latent.get("noise_mask")
    if strategy != "regenerate":
        raise InputError("strategy", f"unknown strategy {strategy!r}", f"choose one of {STRATEGIES}")
    if source_latent is None:
        raise InputError("source_latent", *NEEDS_SOURCE)
    return source_rows(source_latent, todo, latent["samples"], model), source_latent.get("noise_mask")


def through_pixels(latent, todo, images, vae, teacher_vae, strategy, source_denoise):
    """A teacher of another family: its start, in its own latent space, at the student's pixel size. refine:
    the student's images (the gate's decode, or decoded now) encoded with the teacher's VAE; regenerate:
    an empty teacher latent (text-to-image: the families' latents cannot share a source)."""
    if float(source_denoise) < 1.0 and strategy == "regenerate":
        raise InputError("source_denoise", "an editing regenerate needs a teacher of the student's family",
                         "use strategy refine for a teacher of another family, or source_denoise 1.0")
    missing = [i for i in todo if images[i] is None]
    decoded = dict(zip(missing, vae.decode(latent["samples"][missing]))) if missing else {}
    pixels = torch.stack([images[i] if images[i] is not None else decoded[i] for i in todo])
    encoded = teacher_vae.encode(pixels[..., :3])
    return encoded if strategy == "refine" else torch.zeros_like(encoded)


def improve(model, positive, negative, latent, strategy, rollback_mode, rollback, steps, sampler_name,
            scheduler, cfg, seed, vae, decision=None, source_latent=None, source_denoise=1.0, teacher_vae=None):
    """The teacher on the samples the gate rejected (all without a gate) -> (LATENT with every row's
    record, decoded image and replaced version, the rows improved). A teacher of another family than the
    student's samples works through pixels (teacher_vae): its rows come back encoded with the student's
    VAE, so the LATENT stays in the student's family, and its own decode is their image."""
    todo, records, images = rows_to_improve(latent, decision, vae)
    if not todo:
        return put_back(latent, todo, records, images, None, None, vae), todo
    n = int(latent["samples"].shape[0])
    student_family = other_family(model, records)
    if student_family and teacher_vae is None:
        raise InputError("teacher_vae", f"the teacher is a {latent_format_name(model)} model, the samples are "
                         f"{student_family} latents", "connect the teacher's VAE to teacher_vae (the samples go to "
                         "the teacher through pixels), or use a teacher of the student's family")
    warn_one_prompt(positive, records, todo, "Teacher Improve")
    index = [records[i].batch_index for i in todo]
    rounds = [records[i].noise_round for i in todo]
    if student_family:
        start = through_pixels(latent, todo, images, vae, teacher_vae, strategy, source_denoise)
        mask = latent.get("noise_mask")
        check_model_fits(model, "model", start, "latent", conditioning={"positive": positive, "negative": negative})
    else:
        check_model_fits(model, "model", latent["samples"], "latent", records,
                         {"positive": positive, "negative": negative})
        start, mask = teacher_start(latent, todo, strategy, source_latent, model)
    schedule = ksampler_schedule(model, sampler_name, scheduler)
    if strategy == "refine":
        sigmas = rollback_sigmas(rollback_mode, schedule, steps, rollback, model_frame(model))
        noise = rollback_noise(seed, index, start.shape[1:], rounds)
        settings = {"strategy": strategy, "rollback_mode": rollback_mode, "rollback": float(rollback)}
    else:
        sigmas = strength_sigmas(schedule, steps, require_fraction("source_denoise", source_denoise))
        noise = initial_noise(start, seed, index)
        settings = {"strategy": strategy, "source_denoise": float(source_denoise)}
    settings.update(sampler=sampler_name, scheduler=scheduler, cfg=float(cfg), seed=int(seed))
    if student_family:
        settings.update(teacher_family=latent_format_name(model))
    check_interrupt()
    sampler = per_sample_sampler(sampler_name, seed, index, tuple(start.shape[1:]), model.load_device, rounds)
    rows = sample_with_sigmas(model, noise, cfg, sampler, sigmas, subset_conditioning(positive, todo, n),
                              subset_conditioning(negative, todo, n), start, take_rows(mask, todo, n), seed)
    stage = Stage("teacher", steps=int(steps), settings=settings)
    if student_family:
        new_images = teacher_vae.decode(rows)
        return put_back(latent, todo, records, images, vae.encode(new_images[..., :3]), stage, vae,
                        new_images=new_images), todo
    return put_back(latent, todo, records, images, rows, stage, vae), todo


class Improve:
    DESCRIPTION = ("Runs the teacher on the samples the gate rejected (all samples when no gate is "
                   "connected), as one sub-batch through ComfyUI's samplers. refine: roll the student "
                   "sample back to a noise level with fresh noise and run a few teacher steps. regenerate: "
                   "sample from the source latent with the student's noise (same seed: text-to-image, or "
                   "SDEdit editing). Kept samples pass through bit-identical, and when the gate keeps every "
                   "sample the teacher model is never loaded.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("LATENT", "IMAGE", "STRING")
    RETURN_NAMES = ("latent", "images", "report")
    OUTPUT_TOOLTIPS = ("Kept student samples and improved samples, in their original order.",
                       "The same, decoded (kept samples reuse the gate's decode).",
                       "What the teacher did and the average steps spent.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"lazy": True, "tooltip": "The teacher (e.g. SD1.5, SDXL-Base, SDXL-Refiner). "
                                                         "Not loaded at all when the gate keeps every sample."}),
            "positive": ("CONDITIONING", {"lazy": True, "tooltip": "The teacher's prompt conditioning; may differ "
                                                                   "from the student's (e.g. the SDXL refiner's)."}),
            "negative": ("CONDITIONING", {"lazy": True, "tooltip": "The teacher's negative conditioning."}),
            "latent": ("LATENT", {"tooltip": "The samples: the Oracle Gate's latent output (with a gate, the gate's "
                                             "samples are the ones improved), or the student's."}),
            "strategy": inputs.strategy("refine: rollback + teacher steps from the student "
                                        "sample. regenerate: teacher from the source latent "
                                        "and the same noise (the paper's choice for editing)."),
            "rollback_mode": inputs.rollback_mode("strength: fraction of the timestep axis, like "
                                                  "KSampler denoise (the paper's code). vp: "
                                                  "x = sqrt(1-s) x0 + sqrt(s) z (Algorithm 1)."),
            "rollback": inputs.rollback("How far refine goes back towards noise (0.85 LCM-SDXL, 0.4 "
                                        "SDXL-Turbo, 0.5 ControlNet in the paper)."),
            "steps": inputs.teacher_steps("Teacher steps R actually run per improved sample."),
            "sampler_name": inputs.sampler_name("Any ComfyUI sampler (the paper: "
                                                "UniPC, DPM++ 2M)."),
            "scheduler": inputs.scheduler("Any ComfyUI scheduler."),
            "cfg": inputs.teacher_cfg("The teacher's classifier-free guidance."),
            "seed": inputs.seed(),
            "vae": ("VAE", {"tooltip": "Decodes the improved samples (only those)."}),
        }, "optional": {
            "gate": (GATE_TYPE, {"tooltip": "The Oracle Gate's decision. Without it every sample is improved "
                                            "(the 'refine everything' baseline)."}),
            "source_latent": ("LATENT", {"lazy": True,
                                         "tooltip": "regenerate only: the latent the student started from."}),
            "source_denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                         "tooltip": "regenerate only: 1.0 for text-to-image, the editing "
                                                    "strength (e.g. 0.6) for SDEdit."}),
            "teacher_vae": ("VAE", {"tooltip": "A teacher of another family than the student (e.g. an SDXL-Lightning "
                                               "student, a FLUX.1-dev teacher): the teacher's VAE. The rejected "
                                               "images are encoded with it, improved at the student's pixel size, "
                                               "and decoded with it; kept samples are untouched."}),
        }}

    def check_lazy_status(self, strategy, gate=None, **inputs):
        """The lazy inputs still needed: none when the gate keeps every sample. An input that is not
        connected is absent from `inputs` (a connected one not yet evaluated is None): ask only for
        connected ones, so a missing source_latent gets the pack's own message from run()."""
        if gate is not None and not gate.rejected:
            return []
        needed = ["model", "positive", "negative"] + (["source_latent"] if strategy == "regenerate" else [])
        return [name for name in needed if name in inputs and inputs[name] is None]

    def run(self, model, positive, negative, latent, strategy, rollback_mode, rollback, steps, sampler_name,
            scheduler, cfg, seed, vae, gate=None, source_latent=None, source_denoise=1.0, teacher_vae=None):
        out, todo = improve(model, positive, negative, latent, strategy, rollback_mode, rollback, steps,
                            sampler_name, scheduler, cfg, seed, vae, gate, source_latent, source_denoise,
                            teacher_vae)
        text = report(out, gate, todo, f"teacher ({strategy}, {steps} steps)", steps)
        return {"ui": {"text": [text]}, "result": (out, images_of(out), text)}

"""Consistency student sampler: LCM / CD / SDXL-Turbo students in 1-8 steps."""
import comfy.sample

from ..schedulers.batching import batch_indices
from ..schedulers.consistency import lcm_timesteps, trailing_timesteps
from ..schedulers.errors import InputError, require_fraction
from ..schedulers.noise import Stream
from ..schedulers.guidance import parse_w, w_per_sample
from ..schedulers.record import SampleRecord, Stage, with_records
from ..schedulers.rollback import strength_sigmas
from .consistency_sampling import consistency_sampler, sigmas_at_timesteps, with_consistency_sampling
from .model_checks import check_model_fits, discrete_model_sampling, latent_format_name
from .noise import initial_noise, per_sample_sampler, retry_noise
from .sampling import ksampler_schedule, sample_with_sigmas
from . import inputs
from .common import CATEGORY, inputs_named
from .inputs import SCHEDULES, STUDENT_SAMPLER, STUDENT_SCHEDULER
from .guidance import guidance_of, with_w
from .prompts import prompts_of


def student_ws(model, w_text, index, recorded=None):
    """(the model that embeds each sample's w, the per-sample w or Nones) for a guided student. An empty
    w box means each sample's recorded w (a retry of a w sweep keeps its w), else the student's default."""
    ws, guided = parse_w(w_text), guidance_of(model)
    if guided is None:
        if ws:
            raise InputError("w", "the model has no guidance embedding to give w to",
                             "load the student with Load Guidance-Embedded Student (or Attach Guidance Embedding), "
                             "or leave w empty")
        return model, [None] * len(index)
    per_sample = w_per_sample(ws, index) if ws else \
        [guided.default_w if w is None else w for w in (recorded or [None] * len(index))]
    return with_w(model, per_sample), per_sample


def student_sample(model, positive, negative, latent, seed, steps, cfg, schedule="lcm", denoise=1.0, w="",
                   retry_rounds=None, recorded_w=None, model_input="model", sampler_name=STUDENT_SAMPLER,
                   scheduler=STUDENT_SCHEDULER):
    """Sample a LATENT with a few-step student; returns a new LATENT whose records say how.
    schedule: lcm / turbo (consistency students, discrete models), or sampler (ComfyUI's `sampler_name`
    and `scheduler`, any family: Lightning, DMD2, Hyper-SD, FLUX.1-schnell, SD3.5 Turbo, ...).
    retry_rounds: per sample, the retry round whose fresh noise replaces ComfyUI's seed noise (a retry);
    recorded_w: per sample, the w it was made with (used when the w box is empty). model_input: what
    the calling node calls the model, in its messages."""
    if schedule not in SCHEDULES:
        raise InputError("schedule", f"unknown schedule {schedule!r}", f"choose one of {SCHEDULES}")
    index = batch_indices(latent)
    rounds = list(retry_rounds) if retry_rounds else 0
    with inputs_named({"model": model_input}):  # the model checks say "model"
        check_model_fits(model, model_input, latent["samples"], "latent_image",
                         conditioning={"positive": positive, "negative": negative})
        model, ws = student_ws(model, w, index, recorded_w)
        x = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
        settings = {"steps": int(steps), "cfg": float(cfg), "schedule": schedule, "denoise": float(denoise)}
        if schedule == "sampler":
            sigmas = strength_sigmas(ksampler_schedule(model, sampler_name, scheduler), steps,
                                     require_fraction("denoise", denoise))
            sampler = per_sample_sampler(sampler_name, seed, index, tuple(x.shape[1:]), model.load_device, rounds,
                                         Stream.STUDENT_RENOISE)
            settings.update(sampler=sampler_name, scheduler=scheduler)
        else:
            if schedule == "lcm":
                model = with_consistency_sampling(model)
                timesteps = lcm_timesteps(steps, strength=denoise)
            else:
                discrete_model_sampling(model, schedule)
                timesteps = trailing_timesteps(steps, strength=denoise)
            sigmas = sigmas_at_timesteps(model, timesteps)
            sampler = consistency_sampler(seed, index, tuple(x.shape[1:]), rounds)
            settings.update(timesteps=tuple(timesteps))
    noise = retry_noise(seed, index, x.shape[1:], rounds) if retry_rounds else initial_noise(x, seed, index)
    samples = sample_with_sigmas(model, noise, cfg, sampler, sigmas, positive, negative, x, latent.get("noise_mask"),
                                 seed)
    stage = Stage("student", steps=int(steps), settings=settings)
    family = latent_format_name(model)
    records = [SampleRecord(b, seed=int(seed), latent_format=family, prompt=text, w=w_b, stages=(stage,))
               for b, text, w_b in zip(index, prompts_of(positive, len(index)), ws)]
    return with_records({**latent, "samples": samples}, records)


class ConsistencySampler:
    DESCRIPTION = ("Samples with a few-step student. schedule lcm / turbo: consistency students (LCM checkpoint, "
                   "SD + LCM-LoRA, LCM-SDXL, SDXL-Turbo), with the LCM timesteps and boundary condition applied "
                   "here, so no ModelSampling node is needed; a guidance-embedded student (LCM-Dreamshaper-v7) "
                   "embeds each sample's w. schedule sampler: any distilled student of any family with "
                   "ComfyUI's own sampler and scheduler (SDXL-Lightning, DMD2, Hyper-SD, FLUX.1-schnell, "
                   "SD3.5 Large Turbo, Qwen-Image-Lightning). "
                   "Each sample's noise depends only on (seed, batch index), so a sample never changes when "
                   "others join its batch.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The student's samples, each with its record (seed, batch index, settings) for the gate.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The student: an LCM checkpoint, a base model with an LCM-LoRA, "
                                           "SDXL-Turbo (lcm / turbo), or any distilled model run with a ComfyUI "
                                           "sampler (sampler): SDXL-Lightning, DMD2, FLUX.1-schnell, SD3.5 Turbo, "
                                           "Qwen-Image + Lightning LoRA."}),
            "positive": ("CONDITIONING", {"tooltip": "What the image should show (ControlNet may be applied)."}),
            "negative": ("CONDITIONING", {"tooltip": "What to avoid; unused when cfg is 1."}),
            "latent_image": ("LATENT", {"tooltip": "An Empty Latent Image for text-to-image, or a VAE-encoded "
                                                   "image for editing (then lower denoise)."}),
            "seed": inputs.seed(),
            "steps": inputs.student_steps("Student steps (the paper: 4 for LCM-SDXL, 5 for SD1.5 students, "
                                          "2 for SDXL-Turbo)."),
            "cfg": inputs.student_cfg("Classifier-free guidance. 1.0 runs one model pass per step; "
                                      "LCM-LoRA works best at 1-2, SDXL-Turbo at 1."),
            "schedule": inputs.schedule("lcm: LCM timesteps on the 50-step distillation grid "
                                        "plus the consistency boundary condition. turbo: "
                                        "'trailing' timesteps for SDXL-Turbo / ADD students. sampler: "
                                        "sampler_name and scheduler below (every other student, every family)."),
            "denoise": inputs.denoise("1.0 for text-to-image; lower for editing an encoded image "
                                      "(SDEdit strength, e.g. 0.6)."),
        }, "optional": {
            "w": inputs.w("Guidance-embedded students only: the guidance scale w each sample embeds, one "
                          "value or a list cycled over the batch (e.g. 3, 5, 7, 9 shows the quality/"
                          "diversity trade-off in one queue). Empty: the student's default w."),
            "sampler_name": inputs.student_sampler(inputs.STUDENT_SAMPLER_TIP),
            "scheduler": inputs.student_scheduler(inputs.STUDENT_SCHEDULER_TIP),
        }}

    def sample(self, model, positive, negative, latent_image, seed, steps, cfg, schedule, denoise, w="",
               sampler_name=STUDENT_SAMPLER, scheduler=STUDENT_SCHEDULER):
        return (student_sample(model, positive, negative, latent_image, seed, steps, cfg, schedule, denoise, w,
                               sampler_name=sampler_name, scheduler=scheduler),)

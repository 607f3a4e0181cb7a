"""The input specs several nodes share, written once: type, default and range are the same everywhere
(a saved graph's values mean the same on every node), and each node gives the tooltip that says what the
input does THERE (a router's latent has no denoise, a retry's seed draws retry noise)."""
import comfy.samplers

from ..schedulers.gating import THRESHOLD_MODES
from ..schedulers.rollback import ROLLBACK_MODES

SCHEDULES = ("lcm", "turbo", "sampler")
STRATEGIES = ("refine", "regenerate")


def seed(tooltip="Noise seed. A sample's noise depends only on this seed and its batch index."):
    return ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                    "tooltip": tooltip})


def student_steps(tooltip):
    return ("INT", {"default": 4, "min": 1, "max": 50, "tooltip": tooltip})


def student_cfg(tooltip):
    return ("FLOAT", {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01, "tooltip": tooltip})


def schedule(tooltip):
    return (list(SCHEDULES), {"default": "lcm", "tooltip": tooltip})


STUDENT_SAMPLER, STUDENT_SCHEDULER = "euler", "simple"  # schedule 'sampler''s defaults


def student_sampler(tooltip):
    return (comfy.samplers.KSampler.SAMPLERS, {"default": STUDENT_SAMPLER, "tooltip": tooltip})


def student_scheduler(tooltip):
    return (comfy.samplers.KSampler.SCHEDULERS, {"default": STUDENT_SCHEDULER, "tooltip": tooltip})


STUDENT_SAMPLER_TIP = ("schedule 'sampler' only: ComfyUI's sampler for a distilled student (euler: "
                       "SDXL-Lightning, FLUX.1-schnell, SD3.5 Large Turbo, Qwen-Image-Lightning; lcm: DMD2).")
STUDENT_SCHEDULER_TIP = ("schedule 'sampler' only: ComfyUI's scheduler (simple: FLUX.1-schnell, SD3.5 Turbo, "
                         "Qwen-Image-Lightning; sgm_uniform: SDXL-Lightning, DMD2).")


def denoise(tooltip):
    return ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": tooltip})


def w(tooltip):
    return ("STRING", {"default": "", "tooltip": tooltip})


def threshold_mode(tooltip):
    return (list(THRESHOLD_MODES), {"default": "tau", "tooltip": tooltip})


def tau(tooltip):
    return ("FLOAT", {"default": 0.0, "min": -100.0, "max": 100.0, "step": 0.01, "tooltip": tooltip})


def k(tooltip):
    return ("INT", {"default": 50, "min": 0, "max": 100, "step": 1, "tooltip": tooltip})


def budget(tooltip):
    return ("FLOAT", {"default": 10.0, "min": 1.0, "max": 1000.0, "step": 0.5, "tooltip": tooltip})


def tolerance(tooltip):
    return ("FLOAT", {"default": 5.0, "min": 0.0, "max": 100.0, "step": 0.5, "tooltip": tooltip})


MEASURED_MODES_TIP = (" best for budget: the k of a measured calibration (Measure Student vs Teacher) whose judged "
                      "quality is highest within the budget. cheapest within: its cheapest k within tolerance % of "
                      "the best judged gain.")
TOLERANCE_TIP = ("threshold_mode cheapest within: how much of the best judged gain over the student alone you may "
                 "give up, in percent, for a cheaper k (0 = the best k).")


def strategy(tooltip):
    return (list(STRATEGIES), {"default": "refine", "tooltip": tooltip})


def rollback_mode(tooltip):
    return (list(ROLLBACK_MODES), {"default": "strength", "tooltip": tooltip})


def rollback(tooltip):
    return ("FLOAT", {"default": 0.5, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": tooltip})


def teacher_steps(tooltip):
    return ("INT", {"default": 12, "min": 1, "max": 1000, "tooltip": tooltip})


def sampler_name(tooltip):
    return (comfy.samplers.KSampler.SAMPLERS, {"default": "uni_pc", "tooltip": tooltip})


def scheduler(tooltip):
    return (comfy.samplers.KSampler.SCHEDULERS, {"default": "normal", "tooltip": tooltip})


def teacher_cfg(tooltip):
    return ("FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01, "tooltip": tooltip})

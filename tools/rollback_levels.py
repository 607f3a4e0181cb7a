#!/usr/bin/env python
"""What a refine's rollback means on each model family's teacher: the first sigma the teacher runs and the
noise level it is in the paper's terms (s of x = sqrt(1-s) x0 + sqrt(s) z), for `strength` (KSampler's
denoise: a fraction of the teacher's timestep axis) and for `vp` (the same s in every family).

    COMFYUI_PATH=/path/to/ComfyUI python tools/rollback_levels.py [--steps 4] [--values 0.3,0.5,0.7]

Uses ComfyUI's own model sampling classes and schedulers (no model file is loaded); prints a Markdown
table (docs/families.md shows its output).
"""
import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tools.comfyui_boot import boot  # noqa: E402

# family -> (ComfyUI model sampling class names, its settings, the scheduler its users run)
FAMILIES = [
    ("SD1.5 / SDXL", ("ModelSamplingDiscrete", "EPS"), {}, "normal"),
    ("SD3 / SD3.5", ("ModelSamplingDiscreteFlow", "CONST"), {"shift": 3.0}, "simple"),
    ("FLUX.1-dev (1024 px)", ("ModelSamplingFlux", "CONST"), {"shift": 1.15}, "simple"),
    ("FLUX.1-schnell", ("ModelSamplingDiscreteFlow", "CONST"), {"shift": 1.0}, "simple"),
    ("Qwen-Image", ("ModelSamplingFlux", "CONST"), {"shift": 1.15}, "simple"),
]


def model_sampling(names, settings):
    import comfy.model_sampling as MS

    class Config:
        sampling_settings = dict(settings)

    cls = type("Sampling", (getattr(MS, names[0]), getattr(MS, names[1])), {})
    return cls(Config())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout")
    ap.add_argument("--steps", type=int, default=4, help="teacher steps R")
    ap.add_argument("--values", default="0.3,0.5,0.7", help="rollback values (strength d, vp s)")
    a = ap.parse_args(argv)
    if not a.comfyui:
        sys.exit("set COMFYUI_PATH (or --comfyui) to a ComfyUI checkout")
    pack = boot(a.comfyui).pack_module.__name__
    import comfy.samplers
    rollback = sys.modules[f"{pack}.schedulers.rollback"]
    values = [float(v) for v in a.values.split(",")]
    head = " | ".join(f"strength {v:g}" for v in values) + " | " + " | ".join(f"vp {v:g}" for v in values)
    print(f"First sigma of a {a.steps}-step refine (in brackets: the paper's s of that noise level)\n")
    print(f"| teacher (scheduler) | {head} |")
    print("|---" * (1 + 2 * len(values)) + "|")
    for name, classes, settings, scheduler in FAMILIES:
        ms = model_sampling(classes, settings)
        frame = "flow" if classes[1] == "CONST" else "ve"

        def schedule(n):
            return comfy.samplers.calculate_sigmas(ms, scheduler, n).float()
        cells = []
        for mode in ("strength", "vp"):
            for v in values:
                sigma = float(rollback.rollback_sigmas(mode, schedule, a.steps, v, frame)[0])
                cells.append(f"{sigma:.3g} ({rollback.vp_level(sigma, frame):.2f})")
        print(f"| {name} ({scheduler}) | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

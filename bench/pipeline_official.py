"""The paper's own pipeline, timed: yandex-research/adaptive-diffusion's AdaptiveDiffusionPipeline.

Run by bench/bench_pipeline.py inside a side environment (diffusers, the original image-reward
package), never in ComfyUI's. Its code is read from the user's copy of that repository (--official)
and run unchanged, with three shims, each said in the table's notes:
- on the CPU, its hard-coded torch.Generator(device="cuda") gets a CPU generator;
- --resize native: the student image keeps its size where the code resizes it to 1024x1024 (SDXL's
  size), so an SD1.5 teacher refines at the size the pack refines at; --resize 1024 runs it as is;
- its threshold table is given one entry, {k: tau}, tau set from this run's own scores (as for the
  pack) so the same number of samples goes to the teacher.
Prints one JSON line per batch size.
"""
import argparse
import contextlib
import importlib.util
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, os.path.join(REPO, "tests", "support")]  # the original ImageReward
sys.path.insert(0, HERE)
from pipeline_timing import Clock, MemoryPeak, tau_for  # noqa: E402
from make_imagereward_golden import original_image_reward  # noqa: E402


def load_official(folder):
    spec = importlib.util.spec_from_file_location("adaptive_diffusion", os.path.join(folder, "adaptive_diffusion.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.AdaptiveDiffusionPipeline


@contextlib.contextmanager
def native_size():
    """PIL's resize to (1024, 1024) leaves the image as it is."""
    from PIL import Image
    resize = Image.Image.resize

    def keep(self, size, *a, **kw):
        return self if tuple(size) == (1024, 1024) else resize(self, size, *a, **kw)
    Image.Image.resize = keep
    try:
        yield
    finally:
        Image.Image.resize = resize


def cpu_generators():
    """The official code asks for a CUDA generator; on the CPU it gets a CPU one."""
    make = torch.Generator

    class Generator:
        def __new__(cls, device="cpu"):
            return make(device="cpu")
    torch.Generator = Generator


def models(a, device, dtype):
    from diffusers import (DPMSolverMultistepScheduler, LCMScheduler, StableDiffusionImg2ImgPipeline,
                           StableDiffusionPipeline)
    common = dict(safety_checker=None, requires_safety_checker=False, torch_dtype=dtype)
    student = StableDiffusionPipeline.from_pretrained(a.student, **common).to(device)
    student.scheduler = LCMScheduler.from_config(student.scheduler.config)
    student.unet.register_to_config(sample_size=a.size // 8)  # the official call gives no height/width
    student.set_progress_bar_config(disable=True)
    teacher = StableDiffusionImg2ImgPipeline.from_pretrained(a.teacher, **common).to(device)
    teacher.scheduler = DPMSolverMultistepScheduler.from_config(teacher.scheduler.config)  # DPM++ 2M
    teacher.set_progress_bar_config(disable=True)
    estimator = original_image_reward(device)
    estimator.load_state_dict(torch.load(a.oracle, map_location="cpu", weights_only=True), strict=False)
    estimator.to(device=device)
    return student, teacher, estimator


def instrument(clock, student, teacher, estimator):
    """Time every model evaluation: each UNet by role, both VAEs, the oracle's whole score call."""
    clock.wrap(student.unet, "forward", "student")
    clock.wrap(teacher.unet, "forward", "teacher")
    for pipe in (student, teacher):
        clock.wrap(pipe.vae, "decode", "vae")
        clock.wrap(pipe.vae, "encode", "vae")
    clock.wrap(estimator, "score", "oracle")


def counted(pipe, calls):
    """`pipe`, counting its calls in calls[0] (the official pipeline calls its teacher once per refined image)."""
    def call(*args, **kw):
        calls[0] += 1
        return pipe(*args, **kw)
    return call


def main():
    ap = argparse.ArgumentParser()
    for name in ("official", "student", "teacher", "oracle", "prompt", "out"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--batches", required=True)
    for name in ("student_steps", "teacher_steps", "k"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, required=True)
    ap.add_argument("--rollback", type=float, required=True)
    ap.add_argument("--cfg", type=float, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--resize", choices=("native", "1024"), default="native")
    a = ap.parse_args()
    device = torch.device(a.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[a.dtype]
    if device.type == "cpu":
        cpu_generators()
    torch.manual_seed(0)
    Pipeline = load_official(a.official)
    student, teacher, estimator = models(a, device, dtype)
    clock = Clock(device)
    instrument(clock, student, teacher, estimator)
    refined = [0]
    pipe = Pipeline(estimator=estimator, student=student, teacher=counted(teacher, refined))
    batches = [int(b) for b in a.batches.split(",")]
    call = dict(num_inference_steps_student=a.student_steps, student_guidance=0.0,
                num_inference_steps_teacher=a.teacher_steps, teacher_guidance=a.cfg, sigma=a.rollback, k=a.k)
    resize = native_size() if a.resize == "native" else contextlib.nullcontext()
    results = []
    with resize, torch.inference_mode():
        # the scores of the timed seeds, the way the official __call__ computes them (steps 1 and 2)
        scores = []
        for seed in range(max(batches)):
            g = torch.Generator(device=device.type).manual_seed(seed)
            image = student(prompt=a.prompt, num_inference_steps=a.student_steps, generator=g,
                            guidance_scale=0.0).images[0].resize((1024, 1024))
            scores.append(float(estimator.score(a.prompt, image)))
        pipe.score_percentiles = {a.k: float("inf")}
        pipe(a.prompt, seed=10 ** 6, **call)  # warm-up: every model once
        for batch in batches:
            pipe.score_percentiles = {a.k: tau_for(scores[:batch], a.k)}
            clock.reset()
            refined[0] = 0
            with MemoryPeak(device) as peak:
                t0 = time.perf_counter()
                for seed in range(batch):  # the official pipeline makes one image per call
                    pipe(a.prompt, seed=seed, **call)
                clock.sync()
                wall = time.perf_counter() - t0
            results.append(clock.row("official", batch, wall, peak.bytes, refined[0] / batch))
    with open(a.out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()

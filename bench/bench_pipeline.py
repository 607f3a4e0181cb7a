"""Benchmark: the pack's adaptive pipeline in ComfyUI against the paper's own code and core ComfyUI.

    python bench/bench_pipeline.py --comfyui /path/to/ComfyUI --official /path/to/adaptive-diffusion
    python bench/bench_pipeline.py ... --size 512 --device cuda --dtype fp16          # on a GPU
    python bench/bench_pipeline.py ... --batches 1 --configs "pack: student file"      # a quick look

Run with ComfyUI's Python. One invocation, on the same random full-size SD1.5 weights (UNet, VAE,
CLIP text encoder, an LCM-LoRA-shaped LoRA, ImageReward; made once under --work by
bench/pipeline_models.py), the same prompt, S, R, k, rollback and teacher cfg, it times:
- the pack's graph executed by ComfyUI in this process (bench/pipeline_comfy.py), on each wiring the
  shipped workflows use, and on the LCM-LoRA wiring without Separate Student Weights;
- the official AdaptiveDiffusionPipeline (yandex-research/adaptive-diffusion, your copy: a checkout or
  a bare git repository) in a side environment with diffusers and the original image-reward package,
  made under --official-venv on first use (bench/pipeline_official.py);
- core ComfyUI: the student alone, the teacher alone (DPM++ 2M, --teacher-alone-steps) and the student
  refined by the teacher with no gate.
Each configuration is warmed up with one batch-1 queue, then timed on one queue per batch size (in
ComfyUI, a queue with a new seed: models stay loaded, as when a user queues again). Every pipeline
sends ceil(batch * k / 100) samples to the teacher: its tau is set between its own scores of the timed
seeds. Prints one table; --json writes the rows. Not a test.

Columns: images/s; seconds in the student's UNet, VAE (decode + encode), oracle (preprocessing
included), teacher's UNet, and everything else; wall / (sum of those model evaluations); peak memory
(process RSS on the CPU, max allocated on a GPU); the share of samples refined.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, os.path.join(REPO, "tests", "support")]  # side environments
sys.path.insert(0, HERE)
import pipeline_models  # noqa: E402
from pipeline_timing import tau_for  # noqa: E402
from side_env import offline_env  # noqa: E402

PROMPT = "Astronaut in a jungle, cold color palette, muted colors, detailed, 8k"
# beside the original image-reward package's own pins: what the official pipeline and the timing need
OFFICIAL_PINS = ["diffusers==0.35.2", "pandas", "psutil"]


@dataclass
class Settings:
    files: dict
    prompt: str
    size: int
    batches: list
    student_steps: int
    teacher_steps: int
    teacher_alone_steps: int
    cfg: float
    rollback: float
    k: int
    seed: int = 1


def boot_comfyui(path, device, work):
    """ComfyUI with the pack, the bench's model folders, and PyTorch's attention (SDPA) on every device,
    as ComfyUI picks on NVIDIA GPUs and diffusers uses everywhere."""
    sys.path.insert(0, os.path.abspath(path))
    import comfy.options  # noqa: F401
    from comfy.cli_args import args
    args.use_pytorch_cross_attention = True
    from tools.comfyui_boot import boot
    config = os.path.join(work, "extra_model_paths.yaml")
    with open(config, "w") as f:
        f.write(f"bench:\n  base_path: {os.path.join(work, 'models')}\n" +
                "".join(f"  {folder}: {folder}\n" for folder, _ in pipeline_models.FILES.values()))
    return boot(path, cpu=device == "cpu", extra_model_paths=[config],
                dirs={k: os.path.join(work, k) for k in ("output", "input", "temp", "user")})


def official_code(path, work):
    """The folder holding adaptive_diffusion.py: `path` itself, or a copy out of a bare git repository."""
    if os.path.isfile(os.path.join(path, "adaptive_diffusion.py")):
        return path
    folder = os.path.join(work, "official")
    os.makedirs(folder, exist_ok=True)
    code = subprocess.run(["git", f"--git-dir={path}", "show", "HEAD:adaptive_diffusion.py"], check=True,
                          capture_output=True).stdout
    with open(os.path.join(folder, "adaptive_diffusion.py"), "wb") as f:
        f.write(code)
    return folder


def run_official(a, s, paths):
    """The official pipeline in its side environment -> its rows."""
    from make_imagereward_golden import make_venv, offline_hf_cache
    py = os.path.join(a.official_venv, "bin", "python")
    if not os.path.exists(py):
        py = make_venv(a.official_venv, *OFFICIAL_PINS)
    out = os.path.join(a.work, "official.json")
    with tempfile.TemporaryDirectory() as hf:
        offline_hf_cache(hf)  # the BLIP tokenizer's bert-base-uncased vocabulary, from the pack
        subprocess.run([py, os.path.join(HERE, "pipeline_official.py"), "--official", official_code(a.official, a.work),
                        "--student", paths["student_diffusers"], "--teacher", paths["teacher_diffusers"],
                        "--oracle", paths["oracle"], "--prompt", s.prompt, "--out", out, "--size", str(s.size),
                        "--batches", ",".join(map(str, s.batches)), "--student-steps", str(s.student_steps),
                        "--teacher-steps", str(s.teacher_steps), "--k", str(s.k), "--rollback", str(s.rollback),
                        "--cfg", str(s.cfg), "--device", a.device, "--dtype", a.dtype, "--resize", a.official_resize],
                       check=True, env=offline_env(HF_HOME=hf))
    with open(out) as f:
        return json.load(f)


def table(rows):
    head = ("configuration", "batch", "img/s", "wall s", "student", "VAE", "oracle", "teacher", "other",
            "wall/models", "peak GB", "refined")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = (r["config"], r["batch"], f"{r['images_per_s']:.3f}", f"{r['wall']:.1f}",
                 *(f"{r[p]:.1f}" for p in ("student", "vae", "oracle", "teacher", "other")),
                 f"{r['wall_over_models']:.3f}", f"{r['peak_bytes'] / 2 ** 30:.1f}", f"{r['refined']:.2f}")
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def summary(rows, shipped, teacher_alone_steps):
    by = {(r["config"], r["batch"]): r for r in rows}
    lines = []
    top = max(r["batch"] for r in rows)
    official = by.get(("official", top))
    for config in shipped:
        mine = by.get((config, top))
        if mine and official:
            lines.append(f"{config} / official, images/s at batch {top}: "
                         f"{mine['images_per_s'] / official['images_per_s']:.2f}x")
    # the gate's cost in teacher steps: decoding the student's batch (the student-alone row's VAE) and scoring it
    decode, teacher = by.get(("core: student alone", top)), by.get(("core: teacher alone", top))
    gated = next((by[(c, top)] for c in shipped if (c, top) in by), None)
    if decode and teacher and gated:
        step = teacher["teacher"] / teacher_alone_steps
        lines.append(f"oracle at batch {top}: decode + score {(decode['vae'] + gated['oracle']) / step:.2f}, "
                     f"score alone {gated['oracle'] / step:.2f} of one teacher cfg step ({step:.2f} s)")
    ratios = [r["wall_over_models"] for r in rows if r["config"] in shipped]
    if ratios:
        lines.append(f"wall / model evaluations on the shipped wirings: max {max(ratios):.3f}")
    return lines


def main(argv=None):
    from pipeline_comfy import CONFIGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout (or COMFYUI_PATH)")
    ap.add_argument("--official", help="yandex-research/adaptive-diffusion: a checkout or a bare git repository "
                                       "(without it the official pipeline is skipped)")
    ap.add_argument("--official-venv", default=os.path.join(tempfile.gettempdir(), "adaptive-diffusion-venv"))
    ap.add_argument("--official-resize", choices=("native", "1024"), default="native",
                    help="native: the official code's resize of the student image to 1024x1024 (SDXL's size) "
                         "keeps the image's own size, so its SD1.5 teacher refines at --size like the pack's; "
                         "1024: run it as is")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "student-teacher-bench"),
                    help="model files (about 18 GB, made once) and outputs")
    ap.add_argument("--size", type=int, default=128,
                    help="pixels (a 2-core CPU runs the whole comparison in about 15 minutes at 128, 45 at 256)")
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--student-steps", type=int, default=4)
    ap.add_argument("--teacher-steps", type=int, default=4, help="R, the teacher steps a refined sample gets")
    ap.add_argument("--teacher-alone-steps", type=int, default=25)
    ap.add_argument("--rollback", type=float, default=0.5)
    ap.add_argument("--k", type=int, default=50, help="percent of samples sent to the teacher")
    ap.add_argument("--cfg", type=float, default=8.0, help="the teacher's guidance (the paper's code: 8)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "fp16"),
                    help="the official pipeline's dtype (ComfyUI picks its own: fp32 on the CPU, fp16 on a GPU)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of: " + ", ".join(CONFIGS))
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args(argv)
    if not a.comfyui:
        ap.error("--comfyui (or COMFYUI_PATH) is needed")
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        ap.error(f"unknown --configs {unknown}; choose from {list(CONFIGS)}")
    os.makedirs(a.work, exist_ok=True)

    comfy = boot_comfyui(a.comfyui, a.device, a.work)
    paths = pipeline_models.make(a.work, a.comfyui)
    s = Settings(files={k: os.path.basename(paths[k]) for k in pipeline_models.FILES}, prompt=PROMPT, size=a.size,
                 batches=[int(b) for b in a.batches.split(",")], student_steps=a.student_steps,
                 teacher_steps=a.teacher_steps, teacher_alone_steps=a.teacher_alone_steps, cfg=a.cfg,
                 rollback=a.rollback, k=a.k)
    from pipeline_comfy import ComfyBench
    bench = ComfyBench(comfy, a.device)
    started = time.strftime("%Y-%m-%d %H:%M")
    rows, taus = [], {}
    for config in configs:
        kind = CONFIGS[config]["student"]
        if CONFIGS[config]["graph"] in ("nodes", "all-in-one") and kind not in taus:
            scores = bench.scores(config, s, max(s.batches))
            taus[kind] = {b: tau_for(scores[:b], s.k) for b in s.batches}
        rows += bench.time_config(config, s, taus.get(kind, {}))
        print(table(rows[-len(s.batches):]), flush=True)
    if a.official:
        bench.free()
        rows += run_official(a, s, paths)
    shipped = [c for c in configs if CONFIGS[c]["shipped"]]
    import torch
    machine = (torch.cuda.get_device_name() if a.device == "cuda" else
               f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"\n{started}, {machine}, torch {torch.__version__}; SD1.5 full size, random weights, {s.size} px, "
          f"S={s.student_steps}, R={s.teacher_steps}, rollback {s.rollback}, k={s.k}, teacher cfg {s.cfg}, "
          f"teacher alone {s.teacher_alone_steps} steps; official resize: {a.official_resize}")
    print(table(rows))
    for line in summary(rows, shipped, s.teacher_alone_steps):
        print(line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"started": started, "machine": machine, "argv": sys.argv[1:], "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

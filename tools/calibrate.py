"""Headless calibration against a ComfyUI install: the Calibrate node, without the web UI.

    python custom_nodes/comfyui-student-teacher/tools/calibrate.py \
        --checkpoint v1-5-pruned-emaonly.safetensors --lora lcm-lora-sdv1-5.safetensors \
        --oracle ImageReward.pt --prompts my_prompts.txt --steps 4 --cfg 1.0 --name lcm_sd15_4steps

Boots ComfyUI in this process (tools/comfyui_boot.py; its folder is found from the pack's place in
custom_nodes/, or --comfyui), runs CheckpointLoaderSimple [+ LoraLoaderModelOnly] -> Calibrate Oracle
Threshold, and writes models/image_reward/calibration/<name>.json (or <name>_2.json, ... when that
name is taken: nothing is overwritten) plus the histogram in ComfyUI's output folder.
"""
import argparse
import json
import os
import sys
import uuid

PACK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PACK not in sys.path:
    sys.path.insert(0, PACK)
from tools.comfyui_boot import boot  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description="Calibrate the oracle gate's threshold for a student.")
    p.add_argument("--comfyui", default=os.path.dirname(os.path.dirname(PACK)),
                   help="ComfyUI folder (default: the one whose custom_nodes/ holds this pack)")
    p.add_argument("--extra-model-paths-config", help="an extra_model_paths.yaml, as ComfyUI takes it")
    p.add_argument("--output-directory", help="where the histogram goes (default: ComfyUI's output folder)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU")
    p.add_argument("--checkpoint", required=True, help="student checkpoint in models/checkpoints")
    p.add_argument("--lora", help="LCM-LoRA in models/loras, applied to the checkpoint's model")
    p.add_argument("--guided-unet", help="a guidance-embedded student's UNet in models/diffusion_models (e.g. "
                                         "LCM_Dreamshaper_v7_4k.safetensors); the checkpoint then gives CLIP and VAE")
    p.add_argument("--w", default="", help="guided students: the w to calibrate at, as the gate's student uses it")
    p.add_argument("--oracle", default="ImageReward.pt", help="file in models/oracles (or models/image_reward)")
    p.add_argument("--kind", default="auto",
                   help="the oracle's kind (auto, ImageReward, CLIP score, PickScore, HPSv2, Aesthetic)")
    p.add_argument("--image-encoder", default="none",
                   help="the aesthetic predictor's CLIP ViT-L/14, a file in models/oracles")
    p.add_argument("--prompts", required=True, help="text file, one held-out prompt per line")
    p.add_argument("--first-prompt", type=int, default=0,
                   help="start at this prompt (a shard; merge shards with tools/merge_calibrations.py)")
    p.add_argument("--max-prompts", type=int, default=0, help="use N prompts (0 = all)")
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--steps", type=int, default=4, help="student steps, as the gate's graph uses")
    p.add_argument("--cfg", type=float, default=1.0, help="student cfg, as the gate's graph uses")
    p.add_argument("--schedule", choices=("lcm", "turbo", "sampler"), default="lcm",
                   help="sampler: any other distilled student, with --sampler and --scheduler")
    p.add_argument("--sampler", default="euler", help="schedule sampler: ComfyUI's sampler (lcm for DMD2)")
    p.add_argument("--scheduler", default="simple", help="schedule sampler: ComfyUI's scheduler")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--name", required=True, help="saved as models/image_reward/calibration/<name>.json")
    return p.parse_args(argv)


def calibration_graph(a, prompts_text):
    model = ["ckpt", 0]
    g = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": a.checkpoint}},
         "oracle": {"class_type": "StudentTeacherLoadImageRewardOracle",
                    "inputs": {"oracle_file": a.oracle, "device": "cpu" if a.cpu else "auto", "dtype": "auto",
                               "preprocess": "auto", "batch_size": 8, "kind": a.kind,
                               "image_encoder": a.image_encoder}}}
    if a.guided_unet:
        g["guided"] = {"class_type": "StudentTeacherLoadGuidedStudent",
                       "inputs": {"unet_name": a.guided_unet, "w": 8.0, "w_convention": "diffusers"}}
        model = ["guided", 0]
    if a.lora:
        g["lora"] = {"class_type": "LoraLoaderModelOnly",
                     "inputs": {"model": model, "lora_name": a.lora, "strength_model": 1.0}}
        model = ["lora", 0]
    g["cal"] = {"class_type": "StudentTeacherCalibrateThreshold",
                "inputs": {"model": model, "clip": ["ckpt", 1], "vae": ["ckpt", 2], "oracle": ["oracle", 0],
                           "prompts": prompts_text, "prompts_file": "none", "max_prompts": a.max_prompts,
                           "negative_prompt": a.negative, "width": a.width, "height": a.height,
                           "steps": a.steps, "cfg": a.cfg, "schedule": a.schedule, "seed": a.seed,
                           "batch_size": a.batch_size, "filename": a.name, "w": a.w,
                           "first_prompt": a.first_prompt, "sampler_name": a.sampler, "scheduler": a.scheduler}}
    g["save"] = {"class_type": "SaveImage", "inputs": {"images": ["cal", 0], "filename_prefix": f"calibration_{a.name}"}}
    return g


def main(argv=None):
    a = parse(argv)
    with open(a.prompts, encoding="utf-8") as f:
        prompts_text = f.read()
    default_paths = os.path.join(a.comfyui, "extra_model_paths.yaml")  # as ComfyUI's main.py reads it
    comfy = boot(a.comfyui, cpu=a.cpu, dirs={"output": a.output_directory} if a.output_directory else None,
                 extra_model_paths=[p for p in (default_paths if os.path.exists(default_paths) else None,
                                                a.extra_model_paths_config) if p])
    graph = calibration_graph(a, prompts_text)
    prompt_id = uuid.uuid4().hex
    execution = comfy.execution
    ok, error, outputs, node_errors = comfy.loop.run_until_complete(execution.validate_prompt(prompt_id, graph, None))[:4]
    if not ok:
        raise SystemExit(f"invalid settings: {error.get('message')}: {json.dumps(node_errors, indent=1)}")
    executor = execution.PromptExecutor(comfy.server)
    comfy.loop.run_until_complete(executor.execute_async(graph, prompt_id, {}, outputs))
    if not executor.success:
        raise SystemExit("calibration failed; see the log above")
    print(executor.caches.outputs.get("cal")[1][0])


if __name__ == "__main__":
    main()

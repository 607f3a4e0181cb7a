"""The shipped workflows on the tiny test models: their API prompts with every model file swapped for a
tiny stand-in and small images, and (run as a script) a hash of every output of every node, to show a
change left the shipped workflows' results bit for bit as they were:

    COMFYUI_PATH=... python tests/support/tiny_workflows.py hashes.json [--compare before.json]
"""
import hashlib
import json
import os
import sys

import workflows as W
from tiny_models import (TINY_CONTROLNET_SD15, TINY_GUIDED_SD15_UNET, TINY_IMAGE_REWARD, TINY_LCM_LORA_SD15,
                         TINY_LCM_LORA_SDXL, TINY_SD15, TINY_SDXL, TINY_SDXL_REFINER)


def ckpt_for(name: str) -> str:
    """The tiny checkpoint standing in for a real one, by its file name."""
    n = name.lower()
    if "refiner" in n:
        return TINY_SDXL_REFINER
    if "xl" in n or "turbo" in n:
        return TINY_SDXL
    return TINY_SD15


def lora_for(name: str) -> str:
    return TINY_LCM_LORA_SDXL if "xl" in name.lower() else TINY_LCM_LORA_SD15


# Every workflow's substitutions: {"[Class.]input": value or f(class, input, old)}.
SUBSTITUTIONS = {
    "ckpt_name": lambda cls, name, old: ckpt_for(old),
    "lora_name": lambda cls, name, old: lora_for(old),
    "control_net_name": TINY_CONTROLNET_SD15,
    "unet_name": TINY_GUIDED_SD15_UNET,
    "oracle_file": TINY_IMAGE_REWARD,
    # small images: the tiny models are about wiring, not quality
    "EmptyLatentImage.width": 64,
    "EmptyLatentImage.height": 64,
    "StudentTeacherCalibrateThreshold.max_prompts": 2,
    "StudentTeacherCalibrateThreshold.width": 64,
    "StudentTeacherCalibrateThreshold.height": 64,
}


def tiny_prompt(path, schemas):
    return W.substitute(W.to_api(W.load(path), schemas), SUBSTITUTIONS)


def tiny_files(prompt):
    """The tiny model files a prompt loads (to build them first)."""
    return sorted({v for node in prompt.values() for v in node["inputs"].values()
                   if isinstance(v, str) and v.startswith("tiny_") and v.endswith(".safetensors")})


def digest(value) -> str:
    """sha256 of every tensor in a node's outputs (LATENT dicts: their tensors), in order."""
    import torch
    h = hashlib.sha256()

    def walk(v):
        if isinstance(v, torch.Tensor):
            h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
        elif isinstance(v, dict):
            for k in sorted(v):
                if isinstance(v[k], torch.Tensor):
                    walk(v[k])
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
    walk(value)
    return h.hexdigest()[:16]


def main(argv):
    from comfyui_harness import run_prompt, start
    host, schemas, out = start(), W.load_schemas(), {}
    for path in W.SHIPPED:
        prompt = tiny_prompt(path, schemas)
        for name in tiny_files(prompt):
            host.tiny(name)
        run = run_prompt(host, prompt, fresh=True)
        out[os.path.basename(path)] = {nid: digest(v) for nid, v in sorted(run.values.items()) if v is not None}
        host.free_memory()
    with open(argv[0], "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    if len(argv) > 2 and argv[1] == "--compare":
        with open(argv[2]) as f:
            before = json.load(f)
        differ = [f"{wf} #{nid}" for wf in before for nid in before[wf] if out.get(wf, {}).get(nid) != before[wf][nid]]
        print(f"{sum(map(len, out.values()))} node outputs of {len(out)} workflows; differ from {argv[2]}: "
              f"{differ or 'none'}")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

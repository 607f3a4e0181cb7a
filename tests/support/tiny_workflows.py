"""The shipped workflows on the tiny test models: their API prompts with every model file swapped for a
tiny stand-in and small images. As a script:

    COMFYUI_PATH=... python tests/support/tiny_workflows.py hashes OUT.json [--compare BEFORE.json]
        a hash of every output of every node of every shipped workflow (bit for bit the same before and
        after a change that must not change results?)
    python tests/support/tiny_workflows.py models TINY_DIR OUT_DIR
        OUT_DIR/<folder>/<real file name> linked to the tiny models in TINY_DIR, for
        ../shared/tools/frontend_check --models OUT_DIR (which substitutes inputs by class, not per node)
    python tests/support/tiny_workflows.py small OUT_DIR
        copies of the shipped workflows with the small sizes below (frontend_check substitutes only
        strings), to run in the real front end on the tiny models
"""
import argparse
import hashlib
import json
import os
import sys

import workflows as W
from tiny_models import (TINY_CLIP_G, TINY_CLIP_L, TINY_CONTROLNET_SD15, TINY_FLUX_DEV, TINY_FLUX_SCHNELL,
                         TINY_GUIDED_SD15_UNET, TINY_IMAGE_REWARD, TINY_LCM_LORA_SD15, TINY_LCM_LORA_SDXL, TINY_SD3,
                         TINY_SD15, TINY_SDXL, TINY_SDXL_REFINER, TINY_T5XXL, TINY_VAE_FLUX, TINY_VAE_SD3)


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


def unet_for(name: str) -> str:
    n = name.lower()
    if "flux" in n:
        return TINY_FLUX_SCHNELL if "schnell" in n else TINY_FLUX_DEV
    if "sd3" in n:
        return TINY_SD3
    return TINY_GUIDED_SD15_UNET


def vae_for(name: str) -> str:
    return TINY_VAE_SD3 if "sd3" in name.lower() else TINY_VAE_FLUX  # FLUX's is ae.safetensors


# Every workflow's substitutions: {"[Class.]input": value or f(class, input, old)}.
SUBSTITUTIONS = {
    "ckpt_name": lambda cls, name, old: ckpt_for(old),
    "lora_name": lambda cls, name, old: lora_for(old),
    "control_net_name": TINY_CONTROLNET_SD15,
    "unet_name": lambda cls, name, old: unet_for(old),
    "vae_name": lambda cls, name, old: vae_for(old),
    # FLUX's text encoders: T5-XXL has a fixed 4.7B-parameter size, so the CLIP-L alone stands in, read as
    # SD3's (4096-wide text, as FLUX takes)
    "DualCLIPLoader.clip_name1": TINY_CLIP_L,
    "DualCLIPLoader.clip_name2": TINY_CLIP_L,
    "DualCLIPLoader.type": "sd3",
    # SD3's three: T5-XXL at its fixed size (a CLIP in its place gives NaN text; ~10 GB while it runs)
    "TripleCLIPLoader.clip_name1": TINY_CLIP_L,
    "TripleCLIPLoader.clip_name2": TINY_CLIP_G,
    "TripleCLIPLoader.clip_name3": TINY_T5XXL,
    "oracle_file": TINY_IMAGE_REWARD,
    # small images: the tiny models are about wiring, not quality
    "EmptyLatentImage.width": 64,
    "EmptyLatentImage.height": 64,
    "EmptySD3LatentImage.width": 64,
    "EmptySD3LatentImage.height": 64,
    "StudentTeacherCalibrateThreshold.max_prompts": 2,
    "StudentTeacherCalibrateThreshold.width": 64,
    "StudentTeacherCalibrateThreshold.height": 64,
    "StudentTeacherMeasureStudentVsTeacher.max_prompts": 3,
    "StudentTeacherMeasureStudentVsTeacher.width": 64,
    "StudentTeacherMeasureStudentVsTeacher.height": 64,
    "StudentTeacherMeasureStudentVsTeacher.teacher_alone_steps": 2,
}


# the sizes of those copies (the refiner's conditioning sizes too, so the pictures look consistent)
SMALL = {**{name: value for name, value in SUBSTITUTIONS.items() if isinstance(value, int)},
         "CLIPTextEncodeSDXLRefiner.width": 64, "CLIPTextEncodeSDXLRefiner.height": 64}


def small_copies(out_dir):
    """The shipped workflow files with SMALL's numbers in their saved widget values."""
    schemas = W.load_schemas()
    os.makedirs(out_dir, exist_ok=True)
    for path in W.SHIPPED:
        workflow = W.load(path)
        for node in workflow["nodes"]:
            if node["type"] in W.FRONTEND_ONLY:
                continue
            saved = W.saved_widgets(schemas[node["type"]])
            for key, value in SMALL.items():
                cls, _, name = key.rpartition(".")
                if cls in ("", node["type"]) and name in saved:
                    node["widgets_values"][saved.index(name)] = value
        with open(os.path.join(out_dir, os.path.basename(path)), "w", encoding="utf-8") as f:
            json.dump(workflow, f, indent=1, ensure_ascii=False)
    print(f"wrote {len(W.SHIPPED)} small workflows to {out_dir}")
    return 0


def tiny_prompt(path, schemas):
    return W.substitute(W.to_api(W.load(path), schemas), SUBSTITUTIONS)


def tiny_files(prompt):
    """The tiny model files a prompt loads (to build them first)."""
    return sorted({v for node in prompt.values() for v in node["inputs"].values()
                   if isinstance(v, str) and v.startswith("tiny_") and v.endswith((".safetensors", ".pt"))})


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


def hashes(out_path, before_path=None):
    from comfyui_harness import run_prompt, start
    host, schemas, out = start(), W.load_schemas(), {}
    for path in W.SHIPPED:
        prompt = tiny_prompt(path, schemas)
        for name in tiny_files(prompt):
            host.tiny(name)
        run = run_prompt(host, prompt, fresh=True)
        out[os.path.basename(path)] = {nid: digest(v) for nid, v in sorted(run.values.items()) if v is not None}
        host.free_memory()
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    if before_path:
        with open(before_path) as f:
            before = json.load(f)
        differ = [f"{wf} #{nid}" for wf in before for nid in before[wf] if out.get(wf, {}).get(nid) != before[wf][nid]]
        print(f"{sum(map(len, out.values()))} node outputs of {len(out)} workflows; differ from {before_path}: "
              f"{differ or 'none'}")
        return 1 if differ else 0
    return 0


def _link(target, link):
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if not os.path.lexists(link):
        os.symlink(os.path.abspath(target), link)


def link_models(tiny_dir, out_dir):
    """Each model file the shipped workflows load, under its real name, linked to its tiny stand-in (files
    whose extension would make ComfyUI read them another way, .pt/.pth, are left to --substitute, which
    names the tiny file: those are linked under their own names too)."""
    schemas = W.load_schemas()
    folders = {"ckpt_name": "checkpoints", "lora_name": "loras", "unet_name": "diffusion_models", "vae_name": "vae",
               "clip_name1": "text_encoders", "clip_name2": "text_encoders", "clip_name3": "text_encoders"}
    for path in W.SHIPPED:
        real = W.to_api(W.load(path), schemas)
        tiny = tiny_prompt(path, schemas)
        for nid, node in real.items():
            for name, folder in folders.items():
                value = node["inputs"].get(name)
                if isinstance(value, str) and value.endswith(".safetensors") and \
                        tiny[nid]["inputs"][name].endswith(".safetensors"):
                    _link(os.path.join(tiny_dir, folder, tiny[nid]["inputs"][name]),
                          os.path.join(out_dir, folder, value))
    for folder in os.listdir(tiny_dir):  # and every tiny file under its own name, for --substitute
        if os.path.isdir(os.path.join(tiny_dir, folder)):
            for name in os.listdir(os.path.join(tiny_dir, folder)):
                _link(os.path.join(tiny_dir, folder, name), os.path.join(out_dir, folder, name))
    print(f"linked the shipped workflows' model files in {out_dir}")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    h = sub.add_parser("hashes")
    h.add_argument("out")
    h.add_argument("--compare")
    m = sub.add_parser("models")
    m.add_argument("tiny_dir")
    m.add_argument("out_dir")
    sub.add_parser("small").add_argument("out_dir")
    a = ap.parse_args(argv)
    if a.command == "hashes":
        return hashes(a.out, a.compare)
    return link_models(a.tiny_dir, a.out_dir) if a.command == "models" else small_copies(a.out_dir)


if __name__ == "__main__":
    sys.exit(main())

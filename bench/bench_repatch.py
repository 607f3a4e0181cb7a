#!/usr/bin/env python
"""What re-patching a LoRA student costs each queue, per family, when the student shares the teacher's
weights (no Separate Student Weights): ComfyUI merges the LoRA into the shared weights to load the student
(patch_model) and restores them to load the teacher (unpatch_model).

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_repatch.py [--device cpu] [--rank 64] [--repeats 3]

A big model cannot be built here, so each family's transformer is built at its REAL width with ComfyUI's
own classes and a few blocks, random weights; a rank-r LoRA on every linear layer of those blocks is
patched in and out. The time per patched parameter, measured in this run, times the family's parameter
count gives the per-queue estimate printed beside it (an extrapolation: the blocks are alike). Also printed:
the memory a separate copy of the weights would need (what Separate Student Weights trades for it).
"""
import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tools.comfyui_boot import boot  # noqa: E402

# family -> (supported model class, config of a slice at real width, the full model's parameter count)
FAMILIES = {
    "SD1.5 UNet": ("SD15", None, 0.86e9),
    "FLUX.1 (12B)": ("Flux", {"image_model": "flux", "in_channels": 16, "patch_size": 2, "out_channels": 16,
                              "vec_in_dim": 768, "context_in_dim": 4096, "hidden_size": 3072, "mlp_ratio": 4.0,
                              "num_heads": 24, "depth": 1, "depth_single_blocks": 2, "axes_dim": [16, 56, 56],
                              "theta": 10000, "qkv_bias": True, "guidance_embed": True}, 11.9e9),
    "Qwen-Image (20B)": ("QwenImage", {"image_model": "qwen_image", "in_channels": 64, "num_layers": 1}, 20.4e9),
}
SD15_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
             "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
             "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
             "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
             "context_dim": 768, "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
             "use_temporal_attention": False, "use_temporal_resblock": False}


def build(family, dtype):
    import torch
    import comfy.model_patcher
    import comfy.supported_models
    cls_name, cfg, _ = FAMILIES[family]
    config = getattr(comfy.supported_models, cls_name)(dict(cfg or SD15_UNET))
    config.set_inference_dtype(dtype, None)
    model = config.get_model({})
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def lora_for(patcher, rank, dtype):
    """A rank-r LoRA (generic key format) on every 2-D weight of the model: what a full LoRA touches."""
    import torch
    lora = {}
    for key, w in patcher.model.state_dict().items():
        if key.startswith("diffusion_model.") and key.endswith(".weight") and w.ndim == 2 and min(w.shape) > rank:
            name = key[:-len(".weight")]
            lora[f"{name}.lora_up.weight"] = torch.randn(w.shape[0], rank, dtype=dtype) * 0.01
            lora[f"{name}.lora_down.weight"] = torch.randn(rank, w.shape[1], dtype=dtype) * 0.01
    return lora


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="bf16", choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--families", default=",".join(FAMILIES))
    a = ap.parse_args(argv)
    if not a.comfyui:
        sys.exit("set COMFYUI_PATH (or --comfyui) to a ComfyUI checkout")
    boot(a.comfyui)
    import torch
    import comfy.sd
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[a.dtype]
    print(f"LoRA re-patch per queue, rank {a.rank}, {a.dtype}, {torch.get_num_threads()} CPU threads "
          f"(measured on a slice at real width, extrapolated by parameter count)\n")
    print("| family | slice params patched | patch + unpatch (slice) | s per 1B params | full model, per queue "
          "| a separate copy needs |")
    print("|---|---|---|---|---|---|")
    for family in a.families.split(","):
        patcher = build(family, dtype)
        student = comfy.sd.load_lora_for_models(patcher, None, lora_for(patcher, a.rank, dtype), 1.0, 0)[0]
        patched = sum(patcher.model.state_dict()[k].numel() for k in student.patches)
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            student.patch_model(device_to=torch.device("cpu"))
            student.unpatch_model(device_to=torch.device("cpu"))
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        per_billion = t / patched * 1e9
        full = FAMILIES[family][2]
        copy_gb = full * torch.finfo(dtype).bits / 8 / 1e9
        print(f"| {family} | {patched / 1e6:.0f} M | {t:.2f} s | {per_billion:.2f} s | {per_billion * full / 1e9:.1f} s "
              f"| {copy_gb:.0f} GB |")
        del patcher, student
    return 0


if __name__ == "__main__":
    sys.exit(main())

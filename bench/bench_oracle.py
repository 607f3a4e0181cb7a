"""Benchmark: each oracle's time per image vs batch size, and relative to one student step.

    python bench/bench_oracle.py                       # CPU, ImageReward, batches 1,2,4,8
    python bench/bench_oracle.py --oracles all --modes auto --batches 1,8
    python bench/bench_oracle.py --device cuda --dtype fp16 --oracles all
    python bench/bench_oracle.py --batches 1,2 --repeats 1 --no-unet   # quick

Models, all full size: ImageReward (random init by default; --standin uses the deterministic
stand-in weights of tests/support/imagereward_standin.py), and the CLIP-family oracles with the stand-in
weights of the parity tests (tests/support/clip_standin.py: OpenAI ViT-L/14 for the CLIP score, PickScore's
and HPSv2's ViT-H/14, OpenCLIP ViT-bigG/14), each read from its own key layout, and LAION's aesthetic predictor (Aesthetic: the stand-in MLP of
tests/support/aesthetic_standin.py over the ViT-L/14 stand-in, written to a temporary file as Load Oracle's
image_encoder would be). Inputs: ComfyUI-style IMAGE batches
[B, 512, 512, 3] float on the CPU (as a VAE decode leaves them), one prompt for all.
Student step: one forward of a full-size SD1.5 UNet (diffusers UNet2DConditionModel with the
SD1.5 config, random init, latent 64x64, batch B, cfg 1 -> one forward), same device/dtype.
Prints a table; --json writes the numbers too. Not a test.
"""
import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "support")]  # the stand-in weights

from oracle import ImageReward, ImageRewardConfig, ImageRewardOracle  # noqa: E402
from oracle.checkpoint import DTYPES, image_reward_from_state_dict  # noqa: E402
from oracle.aesthetic import KIND as AESTHETIC  # noqa: E402
from oracle.loading import oracle_from_state_dict  # noqa: E402
import aesthetic_standin  # noqa: E402
from oracle.preprocess import preprocess_exact, preprocess_fast  # noqa: E402
from clip_standin import MODELS as CLIP_MODELS  # noqa: E402
from clip_standin import standin_state_dict  # noqa: E402
from imagereward_standin import standin_state_dict as imagereward_standin  # noqa: E402
from pipeline_models import SD15_UNET  # noqa: E402  (bench/, the script's own folder)

ORACLES = ("ImageReward",) + tuple(CLIP_MODELS) + (AESTHETIC,)
PROMPT = "Astronaut in a jungle, cold color palette, muted colors, detailed, 8k"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, repeats, warmup):
    for _ in range(warmup):
        fn()
    sync(device)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def build_oracle_model(args, device, dtype):
    if args.standin:
        with open(os.path.join(ROOT, "tests", "data", "imagereward", "keys.json")) as f:
            return image_reward_from_state_dict(imagereward_standin(json.load(f), seed=0), "stand-in", device, dtype)
    torch.manual_seed(0)
    return ImageReward(ImageRewardConfig.full()).to(device=device, dtype=dtype).requires_grad_(False).eval()


def build_oracle(name, args, device, dtype, mode, batch):
    """(oracle, its model) for one of ORACLES."""
    if name == "ImageReward":
        model = build_oracle_model(args, device, dtype)
        return ImageRewardOracle(model, preprocess=mode, batch_size=batch), model
    if name == AESTHETIC:
        clip_sd = aesthetic_standin.clip_state_dict(os.path.join(ROOT, "tests", "data", "clip"))
        with tempfile.TemporaryDirectory() as tmp:  # the CLIP is read from a file, as the node reads it
            clip_file = os.path.join(tmp, "clip_vit_l14.safetensors")
            save_file({k: v.contiguous() for k, v in clip_sd.items()}, clip_file)
            oracle = oracle_from_state_dict(aesthetic_standin.aesthetic_state_dict(), "aesthetic.pth", kind=AESTHETIC,
                                            device=device, dtype=dtype, preprocess=mode, batch_size=batch,
                                            image_encoder=clip_file)
        return oracle, oracle.model
    spec = CLIP_MODELS[name]
    with open(os.path.join(ROOT, "tests", "data", "clip", name, "keys.json")) as f:
        raw = standin_state_dict(json.load(f), seed=spec["seed"])
    oracle = oracle_from_state_dict(raw, f"{name}.safetensors", kind=spec["kind"], device=device, dtype=dtype,
                                    preprocess=mode, batch_size=batch)
    return oracle, oracle.model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--oracles", default="ImageReward", help=f"comma-separated, of {', '.join(ORACLES)}; or all")
    ap.add_argument("--modes", default="exact,fast", help="preprocessing modes to time (auto, exact, fast)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1, help="warm-up runs (batch 1 only on CPU)")
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--no-unet", action="store_true")
    ap.add_argument("--standin", action="store_true", help="use the stand-in weights of the parity tests")
    ap.add_argument("--json", default="", help="also write results to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    batches = [int(b) for b in args.batches.split(",")]
    modes = args.modes.split(",")
    info = {"device": str(device), "dtype": args.dtype, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "image_size": args.image_size, "results": []}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    print(f"# {info}")

    names = ORACLES if args.oracles == "all" else args.oracles.split(",")
    g = torch.Generator().manual_seed(0)
    oracle_t = {}
    for name in names:
        t0 = time.perf_counter()
        orc, model = build_oracle(name, args, device, dtype, modes[0], batches[0])
        print(f"# {name} built in {time.perf_counter() - t0:.1f}s, "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params", flush=True)
        imgs = torch.rand(max(batches), args.image_size, args.image_size, 3, generator=g)
        for mode in ("exact", "fast"):
            prep = preprocess_exact if mode == "exact" else preprocess_fast
            t = timeit(lambda: prep(imgs, orc.image_size, crop=orc.crop).to(device), device, max(3, args.repeats), 1)
            info[f"{name}_preprocess_{mode}_ms_per_image"] = 1000 * t / len(imgs)
            print(f"{name} preprocess only, {mode:5s}: {1000 * t / len(imgs):7.1f} ms/image "
                  f"({args.image_size}px -> {orc.image_size}px)", flush=True)
        for mode in modes:
            for b in batches:
                orc.preprocess, orc.batch_size = mode, b
                imgs = torch.rand(b, args.image_size, args.image_size, 3, generator=g)
                warm = args.warmup if (device.type == "cuda" or b == batches[0]) else 0
                t = timeit(lambda: orc.score(imgs, PROMPT), device, args.repeats, warm)
                oracle_t[(name, mode, b)] = t
                print(f"{name} {mode:5s} batch {b}: {t:7.3f} s/batch  {t / b:7.3f} s/image", flush=True)
        orc = model = None  # free this oracle before building the next
        gc.collect()

    unet_t = {}
    if not args.no_unet:
        from diffusers import UNet2DConditionModel
        from diffusers.utils import logging as dlog
        dlog.set_verbosity_error()
        torch.manual_seed(0)
        t0 = time.perf_counter()
        unet = UNet2DConditionModel(**SD15_UNET).to(device=device, dtype=dtype).eval()
        unet.requires_grad_(False)
        print(f"# SD1.5 UNet built in {time.perf_counter() - t0:.1f}s, "
              f"{sum(p.numel() for p in unet.parameters()) / 1e6:.1f}M params")
        for b in batches:
            lat = torch.randn(b, 4, 64, 64, generator=g).to(device, dtype)
            ctx = torch.randn(b, 77, 768, generator=g).to(device, dtype)
            ts = torch.full((b,), 999, device=device)

            def step():
                with torch.inference_mode():
                    unet(lat, ts, encoder_hidden_states=ctx, return_dict=False)
            warm = args.warmup if (device.type == "cuda" or b == batches[0]) else 0
            unet_t[b] = timeit(step, device, args.repeats, warm)
            print(f"student step (SD1.5 UNet fwd) batch {b}: {unet_t[b]:7.3f} s", flush=True)
        del unet
        gc.collect()

    print("\n| oracle | preprocess | batch | oracle s/batch | oracle s/image | student step s | oracle / step |")
    print("|---|---|---|---|---|---|---|")
    for (name, mode, b), t in oracle_t.items():
        u = unet_t.get(b)
        ratio = f"{t / u:.2f}" if u else "-"
        ustr = f"{u:.3f}" if u else "-"
        print(f"| {name} | {mode} | {b} | {t:.3f} | {t / b:.3f} | {ustr} | {ratio} |")
        info["results"].append({"oracle": name, "mode": mode, "batch": b, "oracle_s": t, "oracle_s_per_image": t / b,
                                "student_step_s": u, "ratio": (t / u) if u else None})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)


if __name__ == "__main__":
    main()

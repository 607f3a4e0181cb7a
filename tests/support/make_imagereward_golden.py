#!/usr/bin/env python
"""Golden ImageReward scores from the ORIGINAL `image-reward` package, for the parity tests.

    python tests/support/make_imagereward_golden.py [--venv /tmp/imagereward-venv] [--seed 0]

Makes (or reuses) a side virtual environment with the original package and the versions it
works with, then runs it there, offline, on the stand-in weights of tests/support/imagereward_standin.py
and its golden images and prompts, and writes:

    tests/data/imagereward/keys.json    every key, shape and dtype of the original model's
                                        state dict (the checkpoint format ImageReward.pt has)
    tests/data/imagereward/golden.json  the original's scores [prompt][image] and token ids

Nothing of the original package is copied into this repository: only its outputs. CI never runs
this script (it needs PyPI); re-run it when the stand-in weights, images or prompts change.
Facts it relies on (checked 2026-11-22): image-reward 1.5 needs transformers < 4.56 and timm
0.6.13; fairscale builds only without build isolation; torchvision's CUDA wheel needs its two
fake-op registrations guarded beside a CPU torch; the BLIP tokenizer resolves
`bert-base-uncased` from a local Hugging Face cache holding the vocab the pack ships.
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
from side_env import make_venv as make_venv_with, offline_env, sh  # noqa: E402

OUT_DIR = os.path.join(REPO, "tests", "data", "imagereward")
VOCAB = os.path.join(REPO, "oracle", "bert-base-uncased-vocab.txt")
PINS = ["torch==2.13.0", "torchvision==0.28.0", "transformers==4.55.4", "timm==0.6.13",
        "numpy", "pillow", "safetensors"]
# BLIP's configs/med_config.json (BERT-base with cross-attention); the vision width is set in code
MED_CONFIG = {
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
    "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30524,
    "encoder_width": 768, "add_cross_attention": True,
}


def make_venv(venv, *more_pins):
    """The side environment for the original package (plus `more_pins`, e.g. diffusers for the benchmark)."""
    return make_venv_with(venv, PINS + list(more_pins), ["--no-build-isolation", "fairscale==0.4.13"],
                          ["--no-deps", "image-reward==1.5"])


def offline_hf_cache(root):
    """A Hugging Face hub cache holding bert-base-uncased's tokenizer files only."""
    snap = os.path.join(root, "hub", "models--bert-base-uncased", "snapshots", "0" * 40)
    os.makedirs(snap, exist_ok=True)
    os.makedirs(os.path.join(root, "hub", "models--bert-base-uncased", "refs"), exist_ok=True)
    with open(os.path.join(root, "hub", "models--bert-base-uncased", "refs", "main"), "w") as f:
        f.write("0" * 40)
    with open(VOCAB, "rb") as src, open(os.path.join(snap, "vocab.txt"), "wb") as dst:
        dst.write(src.read())
    with open(os.path.join(snap, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "model_max_length": 512}, f)


def import_original():
    """ImageReward.ImageReward without running the package __init__s, which import the training
    code (ReFL) and scorers with dependencies scoring does not need."""
    import importlib
    import importlib.util
    import types
    root = os.path.dirname(importlib.util.find_spec("ImageReward").origin)
    for name, sub in (("ImageReward", ""), ("ImageReward.models", "models"),
                      ("ImageReward.models.BLIP", os.path.join("models", "BLIP"))):
        pkg = types.ModuleType(name)
        pkg.__path__ = [os.path.join(root, sub)]
        sys.modules[name] = pkg
    return importlib.import_module("ImageReward.ImageReward")


def original_image_reward(device="cpu"):
    """The original package's ImageReward model (its own random init), built from BLIP's med_config."""
    original = import_original()
    with tempfile.TemporaryDirectory() as tmp:
        med = os.path.join(tmp, "med_config.json")
        with open(med, "w") as f:
            json.dump(MED_CONFIG, f)
        return original.ImageReward(med, device=device).eval()


def run_original(seed, out_dir):
    import numpy as np
    import torch
    import transformers
    from PIL import Image

    from imagereward_standin import GOLDEN_PROMPTS, golden_images, key_spec_of, standin_state_dict

    model = original_image_reward()
    spec = key_spec_of(model.state_dict())
    model.load_state_dict(standin_state_dict(spec, seed), strict=True)
    images = golden_images()
    pil = [Image.fromarray(a) for a in images]
    with torch.no_grad():
        scores = [[float(s) for s in model.inference_rank(p, pil)[1]] for p in GOLDEN_PROMPTS]
        token_ids = [model.blip.tokenizer(p, padding="max_length", truncation=True, max_length=35)["input_ids"]
                     for p in GOLDEN_PROMPTS]
    golden = {
        "source": f"image-reward 1.5 (original package, ImageReward.inference_rank), transformers "
                  f"{transformers.__version__}, torch {torch.__version__}",
        "made_by": "tests/support/make_imagereward_golden.py",
        "seed": seed,
        "prompts": GOLDEN_PROMPTS,
        "image_sizes": [list(a.shape) for a in images],
        "image_sha256": [hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for a in images],
        "scores": scores,
        "token_ids": token_ids,
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "keys.json"), "w") as f:
        json.dump(spec, f, indent=0, sort_keys=True)
    with open(os.path.join(out_dir, "golden.json"), "w", encoding="utf-8") as f:
        json.dump(golden, f, indent=1, ensure_ascii=False)
    print(f"wrote {len(spec)} keys and {len(scores)}x{len(scores[0])} scores to {out_dir}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", default=os.path.join(tempfile.gettempdir(), "imagereward-venv"),
                    help="side environment for the original package (made if missing)")
    ap.add_argument("--seed", type=int, default=0, help="stand-in weight seed")
    ap.add_argument("--out", default=OUT_DIR)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.inside:
        return run_original(a.seed, a.out)
    py = make_venv(a.venv)
    with tempfile.TemporaryDirectory() as hf:
        offline_hf_cache(hf)
        env = offline_env(HF_HOME=hf)
        sh(py, os.path.abspath(__file__), "--inside", "--seed", str(a.seed), "--out", a.out, env=env)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Golden CLIP-family scores from the reference implementations, for the parity tests.

    python tests/support/make_clip_golden.py [--venv /tmp/clip-venv] [--models hpsv2,pickscore]

Makes (or reuses) a side virtual environment with open_clip_torch, transformers and the hpsv2
package, then runs them there, offline, on the full-size stand-in weights of tests/support/clip_standin.py
and the golden images and prompts, and writes for each model of clip_standin.MODELS:

    tests/data/clip/<model>/keys.json    every key, shape and dtype of the reference's state dict
    tests/data/clip/<model>/golden.json  its token ids, a hash of its pixels, the cosine
                                         similarities and scores [prompt][image]

References: the hpsv2 package's score() for HPSv2 (its open_clip fork's model, preprocess_val and
tokenizer, built as its initialize_model does but without downloading weights; the fork's wheel
lacks its BPE vocabulary, copied from open_clip's, the same file); open_clip's create_model /
image_transform / get_tokenizer for OpenCLIP ViT-bigG-14; transformers' CLIPModel with the Pillow
CLIPImageProcessor and CLIPTokenizer (PickScore's scoring code: exp(logit_scale) * cosine; the CLIP
score: torchmetrics' formula 100 * max(cosine, 0), with the tokenizer's own truncation, which keeps
the end token). The transformers tokenizer is built from open_clip's own
vocabulary and merges, so nothing of the pack takes part in making the references. CI never runs
this script (it needs PyPI); re-run it when the stand-in weights, images or prompts change. About
25 minutes and 12 GB of RAM on 2 CPU cores, most of it ViT-bigG.
"""
import argparse
import gc
import hashlib
import json
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
from side_env import make_venv, offline_env, sh  # noqa: E402

OUT_DIR = os.path.join(REPO, "tests", "data", "clip")
PINS = ["torch==2.13.0", "torchvision==0.28.0", "open_clip_torch==3.3.0", "transformers==5.23.0", "ftfy==6.3.1",
        "numpy", "pillow", "safetensors", "clint", "requests"]  # clint, requests: imported by hpsv2
HPSV2 = "hpsv2==1.2.0"  # its other requirements (training, evaluation) are not needed to score


def sha256(array) -> str:
    import numpy as np
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def load_standins(model, seed):
    """Overwrite every tensor of the reference model with its stand-in, in place (no second copy of
    a 10 GB model). Returns the key spec."""
    import torch
    from clip_standin import standin_tensor
    from imagereward_standin import key_spec_of
    sd = model.state_dict()
    with torch.no_grad():
        for key, t in sd.items():
            t.copy_(standin_tensor(key, t.shape, seed))
    return key_spec_of(sd)


def open_clip_reference(spec, seed, images, prompts):
    """HPSv2 / OpenCLIP: -> (key spec, token ids, pixels, cosines [prompt][image])."""
    import open_clip
    import torch
    from PIL import Image
    model = open_clip.create_model(spec["open_clip_model"], pretrained=None).eval()
    keys = load_standins(model, seed)
    preprocess = open_clip.image_transform(model.visual.image_size, is_train=False)
    tokenizer = open_clip.get_tokenizer(spec["open_clip_model"])
    pixels = torch.stack([preprocess(Image.fromarray(a)) for a in images])
    tokens = tokenizer(prompts)
    with torch.no_grad():
        image = torch.cat([model.encode_image(pixels[i:i + 1], normalize=True) for i in range(len(images))])
        text = model.encode_text(tokens, normalize=True)
    return keys, tokens.tolist(), pixels, (text @ image.T), float(model.logit_scale.detach().exp())


def hpsv2_reference(spec, seed, images, prompts):
    """HPSv2 as hpsv2.img_score.score() computes it: -> (key spec, token ids, pixels, cosines)."""
    import importlib.util
    import shutil
    import open_clip
    import torch
    from PIL import Image
    fork = os.path.join(importlib.util.find_spec("hpsv2").submodule_search_locations[0], "src", "open_clip")
    shutil.copy(os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz"), fork)
    from hpsv2.src.open_clip import create_model_and_transforms, get_tokenizer
    model, _, preprocess_val = create_model_and_transforms(  # initialize_model's arguments, no download
        spec["open_clip_model"], None, precision="amp", device="cpu", jit=False, force_quick_gelu=False,
        force_custom_text=False, force_patch_dropout=False, force_image_size=None, pretrained_image=False,
        image_mean=None, image_std=None, light_augmentation=True, aug_cfg={}, output_dict=True,
        with_score_predictor=False, with_region_predictor=False)
    model.eval()
    keys = load_standins(model, seed)
    pixels = torch.stack([preprocess_val(Image.fromarray(a)) for a in images])
    tokens = get_tokenizer(spec["open_clip_model"])(prompts)
    with torch.no_grad():  # score()'s torch.cuda.amp.autocast does nothing on the CPU
        outputs = [model(pixels[i:i + 1], tokens) for i in range(len(images))]
    image = torch.cat([o["image_features"] for o in outputs])
    cosine = outputs[0]["text_features"] @ image.T
    return keys, tokens.tolist(), pixels, cosine, float(model.logit_scale.detach().exp())


def hf_tokenizer_from_open_clip(folder):
    """transformers' CLIPTokenizer from open_clip's vocabulary and merges (not the pack's)."""
    import open_clip
    from transformers import CLIPTokenizer
    simple = open_clip.tokenizer.SimpleTokenizer()
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}  # open_clip's -> OpenAI's
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({names.get(t, t): i for t, i in simple.encoder.items()}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in sorted(simple.bpe_ranks, key=simple.bpe_ranks.get)) + "\n")
    return CLIPTokenizer.from_pretrained(folder, pad_token="!")


def transformers_reference(spec, seed, images, prompts):
    """PickScore / Hugging Face CLIP: -> (key spec, token ids, pixels, cosines [prompt][image])."""
    import torch
    from PIL import Image
    from transformers import CLIPConfig, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    model = CLIPModel(CLIPConfig(**spec["hf_config"])).eval()
    keys = load_standins(model, seed)
    processor = CLIPImageProcessorPil()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = hf_tokenizer_from_open_clip(tmp)
        text_inputs = tokenizer(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
    pixels = processor(images=[Image.fromarray(a) for a in images], return_tensors="pt")["pixel_values"]

    def features(out):
        out = out if isinstance(out, torch.Tensor) else out.pooler_output
        return out / torch.norm(out, dim=-1, keepdim=True)

    with torch.no_grad():
        image = torch.cat([features(model.get_image_features(pixel_values=pixels[i:i + 1]))
                           for i in range(len(images))])
        text = features(model.get_text_features(**text_inputs))
    return keys, text_inputs["input_ids"].tolist(), pixels, (text @ image.T), float(model.logit_scale.detach().exp())


def run_references(names, out_dir):
    from importlib.metadata import version
    import open_clip
    import torch
    import transformers
    from clip_standin import GOLDEN_CLIP_PROMPTS, MODELS
    from imagereward_standin import golden_images

    images = golden_images()
    for name in names:
        spec = MODELS[name]
        seed = spec["seed"]
        if spec["kind"] == "HPSv2":
            reference, what = hpsv2_reference, f"the hpsv2 package's score(), hpsv2 {version('hpsv2')}"
        else:
            reference = open_clip_reference if spec["layout"] == "open_clip" else transformers_reference
            what = spec["reference"]
        keys, token_ids, pixels, cosine, scale = reference(spec, seed, images, GOLDEN_CLIP_PROMPTS)
        if spec["kind"] == "CLIP score":
            scores = 100.0 * cosine.clamp(min=0)
        elif spec["kind"] == "PickScore":
            scores = scale * cosine
        else:
            scores = cosine
        golden = {
            "source": f"{what}; open_clip {open_clip.__version__}, transformers {transformers.__version__}, "
                      f"torchvision {version('torchvision')}, torch {torch.__version__}",
            "made_by": "tests/support/make_clip_golden.py", "seed": seed, "kind": spec["kind"], "layout": spec["layout"],
            "prompts": GOLDEN_CLIP_PROMPTS,
            "image_sizes": [list(a.shape) for a in images],
            "image_sha256": [sha256(a) for a in images],
            "pixel_sha256": [sha256(p.numpy()) for p in pixels],
            "token_ids": token_ids,
            "cosine": cosine.tolist(), "scores": scores.tolist(),
        }
        folder = os.path.join(out_dir, name)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "keys.json"), "w") as f:
            json.dump(keys, f, indent=0, sort_keys=True)
        with open(os.path.join(folder, "golden.json"), "w", encoding="utf-8") as f:
            json.dump(golden, f, indent=1, ensure_ascii=False)
        print(f"{name}: {len(keys)} keys, {len(scores)}x{len(scores[0])} scores -> {folder}", flush=True)
        del keys, pixels, cosine
        gc.collect()


def main():
    from clip_standin import MODELS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", default=os.path.join(tempfile.gettempdir(), "clip-venv"),
                    help="side environment for the references (made if missing)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    ap.add_argument("--out", default=OUT_DIR)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    names = [n for n in a.models.split(",") if n]
    unknown = set(names) - set(MODELS)
    if unknown:
        ap.error(f"unknown model(s) {sorted(unknown)}; choose from {list(MODELS)}")
    if a.inside:
        return run_references(names, a.out)
    py = make_venv(a.venv, PINS, ["--no-deps", HPSV2])
    sh(py, os.path.abspath(__file__), "--inside", "--models", ",".join(names), "--out", a.out, env=offline_env())


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Golden aesthetic-predictor scores from the references, for the parity test.

    python tests/support/make_aesthetic_golden.py [--venv /tmp/aesthetic-venv]

Makes (or reuses) a side virtual environment with OpenAI's `clip` package (PyPI: openai-clip 1.0.1)
and torch 2.13.0 pinned, then runs there, offline, what the improved aesthetic predictor's
simple_inference.py does (github.com/christophschuhmann/improved-aesthetic-predictor, commit
6934dd8, the file read, nothing copied into the pack): `clip.load("ViT-L/14")` on the CPU without its
download -- `clip.model.build_model(state_dict)`, `.float()`, and the preprocess `clip.clip._transform`
-- then, per image, `encode_image`, the numpy L2 normalisation of its `normalized` helper and its
`MLP` (an nn.Sequential of Linear 768->1024, Dropout, 1024->128, Dropout, 128->64, Dropout, 64->16,
16->1, reconstructed here without the pytorch_lightning training methods) on a FloatTensor.
The weights are the stand-ins of tests/support/aesthetic_standin.py: the full-size ViT-L/14 of
clip_standin.py, fp16-exact, converted here with plain torch from the transformers layout the pack
reads to OpenAI's (attention q/k/v joined into in_proj, the projections transposed), and the MLP's.
The images are the golden images of imagereward_standin.py. Writes:

    tests/data/aesthetic/keys.json    every key, shape and dtype of the reference MLP(768)'s state dict
    tests/data/aesthetic/golden.json  pixel hashes, the raw embeddings' norms, the normalised
                                      embeddings [image][768] and the scores [image]

CI never runs this script (it needs PyPI); re-run it when the stand-in weights or images change.
About 3 minutes and 6 GB of RAM on 2 CPU cores, once the side environment exists.
"""
import argparse
import hashlib
import json
import os
import re
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
from side_env import make_venv, offline_env, sh  # noqa: E402

OUT_DIR = os.path.join(REPO, "tests", "data", "aesthetic")
CLIP_DATA = os.path.join(REPO, "tests", "data", "clip")
# setuptools < 81: clip/clip.py imports pkg_resources
PINS = ["torch==2.13.0", "torchvision==0.28.0", "openai-clip==1.0.1", "setuptools<81", "numpy", "pillow"]
PREDICTOR = "improved-aesthetic-predictor simple_inference.py (commit 6934dd8)"


def sha256(array) -> str:
    import numpy as np
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def openai_layout(hf):
    """transformers CLIPModel keys -> OpenAI CLIP's (what build_model reads)."""
    import torch
    top = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
           "text_model.embeddings.position_embedding.weight": "positional_embedding",
           "text_model.final_layer_norm.weight": "ln_final.weight", "text_model.final_layer_norm.bias": "ln_final.bias",
           "vision_model.embeddings.class_embedding": "visual.class_embedding",
           "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
           "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
           "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
           "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
           "vision_model.post_layernorm.weight": "visual.ln_post.weight",
           "vision_model.post_layernorm.bias": "visual.ln_post.bias", "logit_scale": "logit_scale"}
    parts = {"layer_norm1.": "ln_1.", "layer_norm2.": "ln_2.", "mlp.fc1.": "mlp.c_fc.", "mlp.fc2.": "mlp.c_proj.",
             "self_attn.out_proj.": "attn.out_proj."}
    block = re.compile(r"^(text|vision)_model\.encoder\.layers\.(\d+)\.(.+)$")
    out = {"text_projection": hf["text_projection.weight"].t().contiguous(),
           "visual.proj": hf["visual_projection.weight"].t().contiguous()}
    for key, t in hf.items():
        m = block.match(key)
        if key in top:
            out[top[key]] = t
        elif m:
            prefix = ("visual." if m.group(1) == "vision" else "") + f"transformer.resblocks.{m.group(2)}."
            rest = m.group(3)
            if rest.startswith("self_attn.q_proj."):
                kind = rest.rsplit(".", 1)[-1]
                qkv = [hf[key.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
                out[f"{prefix}attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
            elif not rest.startswith(("self_attn.k_proj.", "self_attn.v_proj.")):
                old = next(p for p in parts if rest.startswith(p))
                out[prefix + parts[old] + rest[len(old):]] = t
        elif key not in ("text_projection.weight", "visual_projection.weight"):
            raise KeyError(f"no OpenAI CLIP key for {key}")
    return out


def normalized(a, axis=-1, order=2):
    """The reference's L2 normalisation (numpy; a zero norm divides by 1)."""
    import numpy as np
    l2 = np.atleast_1d(np.linalg.norm(a, order, axis))
    l2[l2 == 0] = 1
    return a / np.expand_dims(l2, axis)


def reference_mlp(input_size):
    """The reference's MLP: the same nn.Sequential, so the same state-dict keys (layers.0/2/4/6/7)."""
    import torch.nn as nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_size = input_size
            self.layers = nn.Sequential(nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128),
                                        nn.Dropout(0.2), nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16),
                                        nn.Linear(16, 1))

        def forward(self, x):
            return self.layers(x)

    return MLP()


def run_reference(out_dir):
    from importlib.metadata import version
    import numpy as np
    import torch
    from PIL import Image
    from clip.clip import _transform
    from clip.model import build_model
    from aesthetic_standin import CLIP_MODEL, SEED, aesthetic_state_dict, clip_state_dict
    from clip_standin import MODELS
    from imagereward_standin import golden_images, key_spec_of

    sd = openai_layout(clip_state_dict(CLIP_DATA))
    model = build_model(sd).to("cpu")  # clip.load's steps on the CPU, without the download
    model.float()
    held = model.state_dict()
    assert all(torch.equal(held[k], v) for k, v in sd.items()), "the reference does not hold the stand-in's numbers"
    del sd, held
    preprocess = _transform(model.visual.input_resolution)
    width = model.visual.proj.shape[1]
    mlp = reference_mlp(width)
    mlp.load_state_dict(aesthetic_state_dict(width))
    mlp.eval()

    images = golden_images()
    pixels, norms, embeddings, scores = [], [], [], []
    for a in images:
        image = preprocess(Image.fromarray(a)).unsqueeze(0)
        with torch.no_grad():
            features = model.encode_image(image)
            emb = normalized(features.cpu().detach().numpy())
            prediction = mlp(torch.from_numpy(emb).type(torch.FloatTensor))
        pixels.append(sha256(image[0].numpy()))
        norms.append(float(np.linalg.norm(features.numpy())))
        embeddings.append([float(f"{x:.9g}") for x in emb[0]])  # 9 digits: float32 exactly
        scores.append(float(prediction[0, 0]))
    golden = {
        "source": f"{PREDICTOR}: OpenAI clip (openai-clip {version('openai-clip')}: clip.model.build_model, "
                  f"clip.clip._transform), its normalized() and MLP; torch {torch.__version__}, torchvision "
                  f"{version('torchvision')}, Pillow {version('pillow')}, numpy {np.__version__}",
        "made_by": "tests/support/make_aesthetic_golden.py", "clip_model": CLIP_MODEL,
        "clip_seed": MODELS[CLIP_MODEL]["seed"], "mlp_seed": SEED, "width": int(width),
        "image_sizes": [list(a.shape) for a in images], "image_sha256": [sha256(a) for a in images],
        "pixel_sha256": pixels, "embedding_norm": norms, "embeddings": embeddings, "scores": scores,
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "keys.json"), "w") as f:
        json.dump(key_spec_of(mlp.state_dict()), f, indent=0, sort_keys=True)
    text = json.dumps(golden, indent=1)  # then each list of numbers on one line
    text = re.sub(r"\[\s+([-+0-9.e,\s]+?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
    with open(os.path.join(out_dir, "golden.json"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(f"scores {[round(s, 4) for s in scores]} -> {out_dir}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", default=os.path.join(tempfile.gettempdir(), "aesthetic-venv"),
                    help="side environment for the reference (made if missing)")
    ap.add_argument("--out", default=OUT_DIR)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.inside:
        return run_reference(a.out)
    py = make_venv(a.venv, PINS)
    sh(py, os.path.abspath(__file__), "--inside", "--out", a.out, env=offline_env())


if __name__ == "__main__":
    main()

"""Golden parity with the ORIGINAL image-reward 1.5 package (the one full-size test).

tests/data/imagereward/golden.json holds the scores the original package itself computed
(tests/support/make_imagereward_golden.py, in a side environment) for the stand-in weights of
tests/support/imagereward_standin.py (seed 0) on its golden images and prompts. Those weights are written to
a temporary .safetensors file and loaded through the same strict path as user files; the 30 golden
scores (rows = 5 prompts, columns = 6 images, two of them adversarial for resizing) must be
reproduced within 1e-4 with `exact` preprocessing (see README, "Preprocessing", for the measured drifts).
"""
import gc
import hashlib
import json
import os

import pytest
import torch

from student_teacher.oracle import ImageRewardConfig, ImageRewardOracle, load_image_reward
from student_teacher.oracle.checkpoint import validate_state_dict
from student_teacher.oracle.preprocess import preprocess_exact, preprocess_fast
from imagereward_standin import GOLDEN_PROMPTS, golden_images, standin_state_dict

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "imagereward")

EXACT_TOL = 1e-4
BF16_TOL = 0.05    # measured max 0.0149 over the 30 golden pairs (CPU bf16)


def read(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def golden():
    g = read("golden.json")
    assert g["prompts"] == GOLDEN_PROMPTS
    images = golden_images()
    assert [list(s) for s in g["image_sizes"]] == [list(a.shape) for a in images]
    assert g["image_sha256"] == [hashlib.sha256(a.tobytes()).hexdigest() for a in images]
    return g


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from safetensors.torch import save_file
    sd = standin_state_dict(read("keys.json"), seed=0)
    assert len(sd) == 625
    scoring, cfg = validate_state_dict(sd, "stand-in state dict")  # in-memory strict check
    assert cfg == ImageRewardConfig.full() and len(scoring) == 620
    del scoring
    path = tmp_path_factory.mktemp("ir") / "ImageReward.safetensors"
    save_file(sd, str(path))  # with the optional keys, like the public file
    del sd
    gc.collect()
    yield path
    os.unlink(path)


@pytest.fixture(scope="module")
def oracle_fp32(checkpoint):
    model = load_image_reward(checkpoint)
    yield ImageRewardOracle(model, batch_size=4)
    del model
    gc.collect()


def images_as_comfy():
    """Golden uint8 images as ComfyUI IMAGE floats (x / 255), one [1,H,W,3] each."""
    return [torch.from_numpy(a).float().div(255.0) for a in golden_images()]


def score_grid(orc, pixels):
    """[prompt, image] scores with each image encoded once (the ViT dominates the cost); the
    text encoder + head run per pair exactly as in ImageRewardOracle.score."""
    model = orc.model
    p = next(model.parameters())
    with torch.inference_mode():
        emb = model.encode_image(pixels.to(p.device, p.dtype))
        rows = []
        for prompt in GOLDEN_PROMPTS:
            ids, mask = orc.tokenizer([prompt] * len(pixels))
            feats = model.text_features(ids, mask, emb)
            raw = model.mlp(feats)[:, 0]
            rows.append((raw - model.config.reward_mean) / model.config.reward_std)
    return torch.stack(rows).float().cpu()


def test_golden_token_ids(oracle_fp32, golden):
    ids, mask = oracle_fp32.tokenizer(GOLDEN_PROMPTS)
    assert ids.tolist() == golden["token_ids"]


def test_golden_scores_exact(oracle_fp32, golden, record_property):
    want = torch.tensor(golden["scores"])
    imgs = images_as_comfy()
    # the public path, end to end, for one prompt x 4 images
    row0 = oracle_fp32.score(imgs, GOLDEN_PROMPTS[0])
    # all 20 pairs
    got = score_grid(oracle_fp32, preprocess_exact(imgs, 224))
    assert torch.allclose(row0, got[0], atol=1e-5)
    diff = max((got - want).abs().max().item(), (row0 - want[0]).abs().max().item())
    record_property("max_abs_diff", diff)
    print(f"\nImageReward golden parity (fp32, exact): max |diff| = {diff:.3g}")
    assert diff <= EXACT_TOL, (got, want)


def test_fast_preprocess_drift(oracle_fp32, golden):
    fast = ImageRewardOracle(oracle_fp32.model, preprocess="fast", batch_size=4)
    imgs = images_as_comfy()
    got = score_grid(fast, preprocess_fast(imgs, 224))
    assert torch.allclose(fast.score(imgs[:1], GOLDEN_PROMPTS[1]), got[1, :1], atol=1e-5)
    drift = (got - torch.tensor(golden["scores"])).abs().max().item()
    print(f"\nfast preprocessing drift vs exact golden: max |diff| = {drift:.3g}")
    assert drift <= EXACT_TOL  # fast resamples as PIL does: the same pixels as exact


def test_bf16_close_to_fp32(checkpoint, golden):
    model = load_image_reward(checkpoint, dtype=torch.bfloat16)
    try:
        got = score_grid(ImageRewardOracle(model), preprocess_exact(images_as_comfy(), 224))
    finally:
        del model
        gc.collect()
    assert got.dtype == torch.float32
    drift = (got - torch.tensor(golden["scores"])).abs().max().item()
    print(f"\nbf16 (CPU) vs fp32 golden: max |diff| = {drift:.3g}")
    assert drift <= BF16_TOL

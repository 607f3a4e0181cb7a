"""Golden parity of the aesthetic oracle with the improved aesthetic predictor's own inference, at full size.

tests/data/aesthetic/golden.json holds what OpenAI's `clip` package (build_model, its preprocess) and the
predictor's MLP and `normalized` computed (tests/support/make_aesthetic_golden.py, in a side environment)
for the stand-in weights of tests/support/aesthetic_standin.py (a full-size CLIP ViT-L/14 and the MLP) on
the golden images. The pack reads the same tensors from files -- the CLIP as openai/clip-vit-large-patch14's
model.safetensors, the MLP as a torch.save .pth -- through load_oracle, as a user's files, and must
reproduce the pixels bit for bit, the normalised embeddings within 1e-5 and every score within 1e-4.
The last test shows the check can fail: no normalisation, a perturbed weight, or transformers' crop.
"""
import gc
import hashlib
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from student_teacher.oracle.aesthetic import AestheticOracle, expected_shapes, normalized
from student_teacher.oracle.loading import load_oracle
from student_teacher.oracle.preprocess import preprocess_exact, preprocess_fast
from aesthetic_standin import aesthetic_state_dict, clip_state_dict
from imagereward_standin import golden_images

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
TOL = 1e-4


def read(file):
    with open(os.path.join(DATA, "aesthetic", file), encoding="utf-8") as f:
        return json.load(f)


def sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(np.ascontiguousarray(t.numpy()).tobytes()).hexdigest()


def comfy_images():
    return [torch.from_numpy(a).float().div(255.0) for a in golden_images()]


@pytest.fixture(scope="module")
def golden():
    return read("golden.json")


@pytest.fixture(scope="module")
def oracle(tmp_path_factory, golden):
    root = tmp_path_factory.mktemp("aesthetic")
    clip = root / "clip-vit-large-patch14" / "model.safetensors"
    clip.parent.mkdir()
    save_file({k: v.contiguous() for k, v in clip_state_dict(os.path.join(DATA, "clip")).items()}, str(clip))
    gc.collect()
    mlp = root / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(aesthetic_state_dict(golden["width"], golden["mlp_seed"]), str(mlp))
    yield load_oracle(mlp, image_encoder=clip, batch_size=2)
    gc.collect()


@pytest.fixture(scope="module")
def embeddings(oracle):
    """(raw projected image embeddings, float32) of the golden images through the pack's CLIP tower."""
    pixels = preprocess_exact(comfy_images(), 224, crop=oracle.crop)
    with torch.inference_mode():
        pooled = oracle.model.clip.vision_model(pixel_values=pixels).pooler_output
        return oracle.model.clip.visual_projection(pooled).float()


def test_golden_is_the_reference_on_these_images(golden):
    assert golden["source"].startswith("improved-aesthetic-predictor") and "openai-clip" in golden["source"]
    assert golden["image_sha256"] == [hashlib.sha256(a.tobytes()).hexdigest() for a in golden_images()]
    keys = {k: tuple(v["shape"]) for k, v in read("keys.json").items()}
    assert keys == expected_shapes(golden["width"])  # the reference MLP's own keys and shapes


def test_recognised_from_its_keys(oracle):
    assert isinstance(oracle, AestheticOracle)
    assert (oracle.kind, oracle.name, oracle.image_size) == ("Aesthetic", "sac+logos+ava1-l14-linearMSE.pth", 224)


def test_pixels_match_bit_for_bit(oracle, golden):
    images = comfy_images()
    exact = preprocess_exact(images, 224, crop=oracle.crop)
    assert [sha256(p) for p in exact] == golden["pixel_sha256"]
    assert torch.equal(exact, preprocess_fast(images, 224, crop=oracle.crop))


def test_embeddings_match(embeddings, golden):
    assert embeddings.norm(dim=-1).tolist() == pytest.approx(golden["embedding_norm"], rel=1e-5)
    diff = (normalized(embeddings) - torch.tensor(golden["embeddings"])).abs().max().item()
    assert diff <= TOL / 10


def test_scores_and_ranking_match_through_the_oracle_call(oracle, golden):
    images = comfy_images()
    got = oracle.score(images, ["a photo of a cat"] * len(images))
    want = torch.tensor(golden["scores"])
    assert (got - want).abs().max().item() <= TOL
    assert torch.argsort(got).tolist() == torch.argsort(want).tolist()
    assert 1.0 < want.min() and want.max() < 10.0 and want.max() - want.min() > 1.0  # O(1..10), and they differ


def test_prompts_are_ignored(oracle):
    images = comfy_images()[:3]
    a = oracle.score(images, ["a cat", "", "a very different prompt"])
    assert torch.equal(a, oracle.score(images, "a dog")) and torch.equal(a, oracle.score(images, None))


def test_the_check_can_fail(oracle, embeddings, golden):
    """What a subtly wrong oracle would give is outside the tolerance."""
    want = torch.tensor(golden["scores"])
    with torch.inference_mode():
        assert (oracle.model.mlp(embeddings) - want).abs().max() > 1.0  # no L2 normalisation
        layer = oracle.model.mlp.layers[0]
        saved = layer.weight.clone()
        layer.weight.mul_(1 + 1e-3 * torch.randn(saved.shape, generator=torch.Generator().manual_seed(0)))
        try:  # the first layer's weights each off by ~0.1 %
            perturbed = (oracle.model.mlp(normalized(embeddings)) - want).abs().max().item()
        finally:
            layer.weight.copy_(saved)
        wide = comfy_images()[2:3]  # 427 x 640: crop offset 55.5 px, rounded by torchvision, floored by transformers
        floor = abs(float(oracle.model(preprocess_exact(wide, 224, crop="floor"))[0]) - golden["scores"][2])
    print(f"max |diff| with the first layer perturbed: {perturbed:.2e}; with transformers' crop: {floor:.2e}")
    assert perturbed > 5 * TOL and floor > 100 * TOL

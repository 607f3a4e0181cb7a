"""Golden parity of the CLIP-family oracles with their reference implementations, at full size.

tests/data/clip/<model>/golden.json holds what the hpsv2 package's score() (HPSv2's ViT-H-14), open_clip
(OpenCLIP ViT-bigG-14) and transformers (PickScore's CLIP-H, OpenAI's ViT-L/14) computed themselves
(tests/support/make_clip_golden.py, in a side environment) for the stand-in weights of
tests/support/clip_standin.py on the golden images (two of them adversarial for resizing) and prompts
(curly quotes, an HTML entity, full-width letters, one over 77 tokens). The pack reads the same
tensors in the reference's own key layout, through the same strict path as a user's file, and must
reproduce: the token ids, the pixels bit for bit (exact and fast preprocessing), every score within
1e-4, and every prompt's ranking of the images.
"""
import gc
import hashlib
import json
import os

import numpy as np
import pytest
import torch

from student_teacher.oracle.clip_scorer import ClipOracle
from student_teacher.oracle.loading import oracle_from_state_dict
from student_teacher.oracle.preprocess import preprocess_exact, preprocess_fast
from clip_standin import GOLDEN_CLIP_PROMPTS, MODELS, standin_state_dict
from imagereward_standin import golden_images

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "clip")
TOL = 1e-4


def read(name, file):
    with open(os.path.join(DATA, name, file), encoding="utf-8") as f:
        return json.load(f)


def sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(np.ascontiguousarray(t.numpy()).tobytes()).hexdigest()


def comfy_images():
    return [torch.from_numpy(a).float().div(255.0) for a in golden_images()]


def until_first_end(ids, end=49407):
    return ids[:ids.index(end) + 1]


@pytest.fixture(scope="module", params=list(MODELS))
def case(request):
    name = request.param
    golden = read(name, "golden.json")
    assert golden["prompts"] == GOLDEN_CLIP_PROMPTS and golden["kind"] == MODELS[name]["kind"]
    assert golden["image_sha256"] == [hashlib.sha256(a.tobytes()).hexdigest() for a in golden_images()]
    raw = standin_state_dict(read(name, "keys.json"), seed=golden["seed"])
    oracle = oracle_from_state_dict(raw, f"{name}.safetensors", kind=golden["kind"], batch_size=2)
    del raw
    yield name, golden, oracle
    del oracle
    gc.collect()


def test_hpsv2_golden_is_the_hpsv2_package_on_tall_wide_and_square_images():
    golden = read("hpsv2", "golden.json")
    assert golden["source"].startswith("the hpsv2 package's score()")
    assert {(h > w) - (h < w) for h, w, _ in golden["image_sizes"]} == {-1, 0, 1}


def test_recognised_as_the_reference(case):
    name, golden, oracle = case
    assert isinstance(oracle, ClipOracle)
    assert (oracle.kind, oracle.layout) == (golden["kind"], golden["layout"])


def test_token_ids_match(case):
    _, golden, oracle = case
    ours = oracle.tokenizer(golden["prompts"]).tolist()
    # the text tower is causal and pools the first end token: what follows it (padding) is unread
    assert [until_first_end(r) for r in ours] == [until_first_end(r) for r in golden["token_ids"]]


def test_pixels_match_bit_for_bit(case):
    _, golden, oracle = case
    images = comfy_images()
    exact = preprocess_exact(images, 224, crop=oracle.crop)
    fast = preprocess_fast(images, 224, crop=oracle.crop)
    assert [sha256(p) for p in exact] == golden["pixel_sha256"]
    assert torch.equal(exact, fast)


def test_scores_and_rankings_match(case):
    _, golden, oracle = case
    pixels = preprocess_exact(comfy_images(), 224, crop=oracle.crop)
    with torch.inference_mode():
        image = torch.cat([oracle.image_features(pixels[i:i + 2]) for i in range(0, len(pixels), 2)])
        text = oracle.text_features(golden["prompts"], pixels.device)
        cosine = text @ image.T
        scores = oracle.reading(cosine)
    want = torch.tensor(golden["scores"])
    assert (scores - want).abs().max().item() <= TOL
    assert (cosine - torch.tensor(golden["cosine"])).abs().max().item() <= TOL / 100
    ties = (want[:, :, None] - want[:, None, :]).abs() < 2 * TOL
    same_order = torch.sign(scores[:, :, None] - scores[:, None, :]) == torch.sign(want[:, :, None] - want[:, None, :])
    assert bool((same_order | ties).all())


def test_score_is_the_same_through_the_oracle_call(case):
    """The batched public path (pairs, chunks of 2, prompts encoded once) gives the golden scores."""
    _, golden, oracle = case
    images = comfy_images()
    prompts = golden["prompts"][:len(images)]
    got = oracle.score(images, prompts)
    want = torch.tensor([golden["scores"][i][i] for i in range(len(images))])
    assert (got - want).abs().max().item() <= TOL

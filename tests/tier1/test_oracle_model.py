"""ImageReward model: config inference, key layout, forward semantics, dtypes, the Oracle."""
import json
import os
import subprocess
import sys

import pytest
import torch

from student_teacher.oracle import (ImageReward, ImageRewardConfig, ImageRewardOracle, Oracle)
from student_teacher.oracle.checkpoint import OPTIONAL_KEYS
from student_teacher.oracle.image_reward import heads_for_width

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEYS = os.path.join(ROOT, "tests", "data", "imagereward", "keys.json")


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return ImageReward(ImageRewardConfig.tiny())


def rand_images(n, h=40, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, h, w, 3, generator=g)


def test_tiny_config_roundtrips_through_state_dict():
    m = tiny_model()
    assert ImageRewardConfig.from_state_dict(m.state_dict()) == ImageRewardConfig.tiny()


def test_full_layout_matches_keys_json():
    with open(KEYS) as f:
        spec = json.load(f)
    assert len(spec) == 625
    meta = {k: torch.empty(v["shape"], device="meta",
                           dtype=torch.int64 if v["dtype"] == "int64" else torch.float32)
            for k, v in spec.items()}
    assert ImageRewardConfig.from_state_dict(meta) == ImageRewardConfig.full()
    with torch.device("meta"):
        expected = ImageReward(ImageRewardConfig.full()).expected_keys()
    want = {k: tuple(v["shape"]) for k, v in spec.items() if k not in OPTIONAL_KEYS}
    assert expected == want
    assert set(spec) - set(expected) == set(OPTIONAL_KEYS)


def test_heads_rule():
    assert heads_for_width(1024) == 16 and heads_for_width(768) == 12
    assert heads_for_width(32) == 1 and heads_for_width(64) == 1
    full = ImageRewardConfig.full()
    assert (full.vision_heads, full.text_heads) == (16, 12)


def test_forward_shape_dtype_and_batch_independence():
    m = tiny_model()
    cfg = m.config
    px = torch.randn(3, 3, cfg.image_size, cfg.image_size)
    ids = torch.randint(1000, 2000, (3, cfg.max_length))
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    ids[1, 10:] = 0
    with torch.no_grad():
        r = m(px, ids, mask)
        r1 = m(px[1:2], ids[1:2], mask[1:2])
    assert r.shape == (3,) and r.dtype == torch.float32
    assert torch.allclose(r[1:2], r1, atol=1e-5)


def test_padding_tokens_are_masked():
    """Changing the ids under padding must not change the score (mask semantics)."""
    m = tiny_model()
    cfg = m.config
    px = torch.randn(1, 3, cfg.image_size, cfg.image_size)
    ids = torch.zeros(1, cfg.max_length, dtype=torch.long)
    ids[0, :4] = torch.tensor([101, 1037, 4937, 102])
    mask = (ids != 0).long()
    ids2 = ids.clone()
    ids2[0, 4:] = 2000
    with torch.no_grad():
        assert torch.allclose(m(px, ids, mask), m(px, ids2, mask), atol=1e-6)


def test_normalisation_constants():
    cfg = ImageRewardConfig.full()
    assert cfg.reward_mean == 0.16717362830052426
    assert cfg.reward_std == 1.0333394966054072
    m = tiny_model()
    px = torch.randn(2, 3, 32, 32)
    ids = torch.full((2, 35), 0)
    ids[:, 0], ids[:, 1] = 101, 102
    mask = (ids != 0).long()
    with torch.no_grad():
        raw = m.raw_reward(px, ids, mask)
        assert torch.allclose(m(px, ids, mask), (raw - cfg.reward_mean) / cfg.reward_std)


def test_oracle_protocol_and_prompt_handling():
    orc = ImageRewardOracle(tiny_model(), batch_size=2)
    assert isinstance(orc, Oracle) and orc.name == "ImageReward"
    imgs = rand_images(5)
    s = orc.score(imgs, "a cat")
    assert s.shape == (5,) and s.dtype == torch.float32 and s.device.type == "cpu"
    s2 = orc.score(imgs, ["a cat"] * 5)
    assert torch.equal(s, s2)
    with pytest.raises(ValueError, match="5 images but 2 prompts"):
        orc.score(imgs, ["a", "b"])
    with pytest.raises(ValueError, match="preprocess"):
        ImageRewardOracle(tiny_model(), preprocess="bilinear")


def test_oracle_chunking_does_not_change_scores():
    m = tiny_model()
    imgs = rand_images(5)
    prompts = ["a cat", "a dog", "", "a red car on a road", "x"]
    a = ImageRewardOracle(m, batch_size=1).score(imgs, prompts)
    b = ImageRewardOracle(m, batch_size=8).score(imgs, prompts)
    assert torch.allclose(a, b, atol=1e-5)


def test_oracle_follows_model_dtype_changes():
    """Someone else (ComfyUI's model manager) may cast/move the model between calls."""
    m = tiny_model()
    orc = ImageRewardOracle(m, preprocess="fast")
    imgs = rand_images(2)
    s32 = orc.score(imgs, "a cat")
    m.to(torch.bfloat16)
    sbf = orc.score(imgs, "a cat")
    assert sbf.dtype == torch.float32
    assert torch.allclose(s32, sbf, atol=0.1)
    m.to(torch.float16)  # fp16 runs on CPU in this torch; the head stays fp32
    s16 = orc.score(imgs, "a cat")
    assert torch.isfinite(s16).all() and torch.allclose(s32, s16, atol=0.1)


def test_head_runs_in_fp32():
    m = tiny_model().to(torch.bfloat16)
    feats = torch.randn(2, m.config.text_hidden, dtype=torch.bfloat16) * 1e3
    out = m.mlp(feats)
    assert out.dtype == torch.float32


def test_accepts_list_of_differently_sized_images_and_uint8():
    orc = ImageRewardOracle(tiny_model())
    imgs = [rand_images(1, 40, 60)[0], rand_images(1, 70, 30, seed=1)[0]]
    s = orc.score(imgs, ["a", "b"])
    u8 = [(255 * im).to(torch.uint8) for im in imgs]
    assert s.shape == (2,)
    s_u8 = orc.score(u8, ["a", "b"])
    f = [x.float() / 255 for x in u8]
    assert torch.allclose(s_u8, orc.score(f, ["a", "b"]), atol=1e-6)


def test_package_imports_no_host_or_heavy_deps():
    code = ("import sys, oracle\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('comfy', 'transformers', 'timm', 'torchvision', 'ImageReward', 'diffusers')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)

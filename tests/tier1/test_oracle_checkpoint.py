"""Strict, safe checkpoint loading (tiny config) and the .pt -> .safetensors converter."""
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from student_teacher.oracle import ImageReward, ImageRewardConfig, OracleLoadError, load_image_reward
from student_teacher.oracle.checkpoint import OPTIONAL_KEYS, validate_state_dict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEYS = os.path.join(ROOT, "tests", "data", "imagereward", "keys.json")


def tiny_sd(optional=True):
    torch.manual_seed(0)
    m = ImageReward(ImageRewardConfig.tiny())
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    if optional:  # what the public ImageReward.pt carries beside the scoring weights
        h, w = m.config.text_hidden, m.config.vision_width
        sd["blip.vision_proj.weight"] = torch.randn(256, w)
        sd["blip.vision_proj.bias"] = torch.randn(256)
        sd["blip.text_proj.weight"] = torch.randn(256, h)
        sd["blip.text_proj.bias"] = torch.randn(256)
        sd["blip.text_encoder.embeddings.position_ids"] = torch.arange(m.config.max_positions)[None]
    return sd


def score(model):
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    px = torch.randn(2, 3, cfg.image_size, cfg.image_size, generator=g)
    ids = torch.tensor([[101, 1037, 4937, 102] + [0] * 31] * 2)
    with torch.no_grad():
        return model(px, ids, (ids != 0).long())


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    m = ImageReward(ImageRewardConfig.tiny())
    return score(m)


@pytest.mark.parametrize("optional", [True, False])
@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_loads_with_or_without_optional_keys(tmp_path, reference, fmt, optional):
    sd = tiny_sd(optional)
    p = tmp_path / f"ir.{fmt}"
    if fmt == "pt":
        torch.save(sd, p)
    else:
        save_file(sd, str(p))
    m = load_image_reward(p)
    assert m.config == ImageRewardConfig.tiny()
    assert m.checkpoint_path == str(p)
    assert not m.training and not any(q.requires_grad for q in m.parameters())
    assert torch.equal(score(m), reference)


def test_extension_does_not_matter(tmp_path, reference):
    p = tmp_path / "weights.bin"
    torch.save(tiny_sd(), p)
    assert torch.equal(score(load_image_reward(p)), reference)


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_state_dict(tmp_path, reference, wrapper):
    p = tmp_path / "ir.pth"
    torch.save({wrapper: tiny_sd(), "epoch": 3}, p)
    assert torch.equal(score(load_image_reward(p)), reference)


def test_dtype_and_device(tmp_path):
    p = tmp_path / "ir.safetensors"
    save_file(tiny_sd(), str(p))
    m = load_image_reward(p, device="cpu", dtype=torch.bfloat16)
    assert all(q.dtype == torch.bfloat16 for q in m.parameters())
    assert score(m).dtype == torch.float32


def expect_error(path, *patterns):
    with pytest.raises(OracleLoadError) as ei:
        load_image_reward(path)
    msg = str(ei.value)
    # the file's name, not its folders; one "what", one "fix"
    assert msg.startswith(os.path.basename(str(path)) + ": ") and str(os.path.dirname(str(path))) not in msg, msg
    assert msg.count(". Fix: ") == 1 and ei.value.fix in msg, msg
    for pat in patterns:
        assert pat in msg, (pat, msg)
    return msg


def test_missing_key(tmp_path):
    sd = tiny_sd()
    del sd["blip.text_encoder.encoder.layer.1.output.dense.bias"]
    del sd["mlp.layers.7.bias"]
    p = tmp_path / "ir.safetensors"
    save_file(sd, str(p))
    expect_error(p, "2 missing key(s)", "blip.text_encoder.encoder.layer.1.output.dense.bias",
                 "mlp.layers.7.bias", "huggingface.co/THUDM/ImageReward")


def test_missing_key_needed_for_sizes(tmp_path):
    sd = tiny_sd()
    del sd["blip.visual_encoder.pos_embed"]
    p = tmp_path / "ir.pt"
    torch.save(sd, p)
    expect_error(p, "missing key blip.visual_encoder.pos_embed")


def test_unexpected_key(tmp_path):
    sd = tiny_sd()
    sd["blip.text_encoder.pooler.dense.weight"] = torch.zeros(4, 4)
    p = tmp_path / "ir.pt"
    torch.save(sd, p)
    expect_error(p, "1 unexpected key(s)", "blip.text_encoder.pooler.dense.weight")


def test_wrong_shape(tmp_path):
    sd = tiny_sd()
    sd["blip.visual_encoder.blocks.1.attn.proj.weight"] = torch.zeros(64, 63)
    p = tmp_path / "ir.safetensors"
    save_file(sd, str(p))
    expect_error(p, "wrong shape", "blip.visual_encoder.blocks.1.attn.proj.weight expected "
                                   "[64, 64], found [64, 63]")


def test_real_size_file_with_missing_last_layers_is_refused():
    """Inferring depth from keys must not silently accept a real-size file that lost layers."""
    with open(KEYS) as f:
        spec = json.load(f)
    sd = {k: torch.empty(v["shape"], device="meta") for k, v in spec.items()
          if not k.startswith("blip.visual_encoder.blocks.23.")}
    with pytest.raises(OracleLoadError, match=r"12 missing key\(s\): blip.visual_encoder.blocks.23"):
        validate_state_dict(sd, "ImageReward.pt")
    full = {k: torch.empty(v["shape"], device="meta",
                           dtype=torch.int64 if v["dtype"] == "int64" else torch.float32)
            for k, v in spec.items()}
    sd, cfg = validate_state_dict(full, "ImageReward.pt")
    assert cfg == ImageRewardConfig.full() and len(sd) == 620


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_truncated_file(tmp_path, fmt):
    p = tmp_path / f"ir.{fmt}"
    sd = tiny_sd()
    torch.save(sd, p) if fmt == "pt" else save_file(sd, str(p))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    expect_error(p, "truncated or corrupt")


def test_truncated_safetensors_header(tmp_path):
    p = tmp_path / "ir.safetensors"
    save_file(tiny_sd(), str(p))
    p.write_bytes(p.read_bytes()[:100])
    expect_error(p, "truncated or corrupt")


def test_not_a_checkpoint(tmp_path):
    t = tmp_path / "notes.txt"
    t.write_text("this is not a model\n")
    expect_error(t, "not a model checkpoint")
    j = tmp_path / "med_config.json"
    j.write_text(json.dumps({"hidden_size": 768, "num_hidden_layers": 12}))
    expect_error(j, "not a model checkpoint", "JSON")
    e = tmp_path / "empty.pt"
    e.write_bytes(b"")
    expect_error(e, "empty")
    expect_error(tmp_path / "nope.pt", "does not exist")


def test_other_model_is_refused(tmp_path):
    p = tmp_path / "other.safetensors"
    save_file({"model.diffusion_model.x": torch.zeros(2)}, str(p))
    expect_error(p, "not an ImageReward checkpoint")
    q = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], q)
    expect_error(q, "not a state dict")
    r = tmp_path / "strings.pt"
    torch.save({"blip.visual_encoder.cls_token": "hello"}, r)
    expect_error(r, "not tensors")


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_malicious_pickle_never_runs(tmp_path, how):
    marker = tmp_path / "PWNED"
    p = tmp_path / "ImageReward.pt"
    payload = {"blip.visual_encoder.cls_token": torch.zeros(1), "evil": Evil(str(marker))}
    if how == "torch.save":
        torch.save(payload, p)
    else:
        p.write_bytes(pickle.dumps(payload, protocol=2))
    assert not marker.exists()
    msg = expect_error(p, "NOT run")
    assert "malicious" in msg and "GLOBAL" in msg
    assert "add_safe_globals" not in msg  # no advice to allow-list the payload
    assert not marker.exists()
    # and the pickle really is armed: an unsafe load would have created the marker
    if how == "pickle":
        pickle.loads(p.read_bytes())
        assert marker.exists()


# ---- converter -------------------------------------------------------------------------

def run_convert(*args):
    return subprocess.run([sys.executable, "-m", "oracle.convert", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


def test_convert_roundtrip_and_overwrite_guard(tmp_path, reference):
    src = tmp_path / "ImageReward.pt"
    torch.save(tiny_sd(), src)
    dst = tmp_path / "ImageReward.safetensors"
    r = run_convert(src, dst)
    assert r.returncode == 0, r.stderr
    assert "checked strictly" in r.stdout
    out = load_file(str(dst))
    assert not set(out) & OPTIONAL_KEYS  # unused keys dropped
    assert torch.equal(score(load_image_reward(dst)), reference)

    before = dst.read_bytes()
    r = run_convert(src, dst)
    assert r.returncode == 1 and "--force" in r.stderr and "already exists" in r.stderr
    assert dst.read_bytes() == before
    r = run_convert(src, dst, "--force", "--dtype", "fp16")
    assert r.returncode == 0, r.stderr
    assert all(v.dtype == torch.float16 for v in load_file(str(dst)).values())
    m = load_image_reward(dst)
    assert torch.allclose(score(m), reference, atol=0.05)


def test_convert_refuses_bad_input(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("hello")
    dst = tmp_path / "out.safetensors"
    r = run_convert(bad, dst)
    assert r.returncode == 1 and "not a model checkpoint" in r.stderr
    assert not dst.exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".convert-")]
    src = tmp_path / "ir.pt"
    torch.save(tiny_sd(), src)
    r = run_convert(src, tmp_path / "out.pt")
    assert r.returncode == 1 and ".safetensors" in r.stderr

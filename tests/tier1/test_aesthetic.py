"""The aesthetic oracle on tiny models: loading the predictor with its CLIP, the fingerprint of both files,
and every refusal (no CLIP, not a CLIP, another embedding width, the ReLU variant, a kind mismatch).
Full-size parity with the reference is tests/tier1/test_aesthetic_parity.py."""
import os

import pytest
import torch
from safetensors.torch import save_file

from student_teacher.oracle.checkpoint import OracleLoadError
from student_teacher.oracle.clip_model import from_open_clip
from student_teacher.oracle.loading import ImageEncoderError, KindMismatch, load_oracle, recognise
from aesthetic_standin import aesthetic_state_dict
from clip_standin import tiny_clip_state_dict

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "clip")
WIDTH = 64  # the tiny CLIPs' projection


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("aesthetic_tiny")
    paths = {"mlp": root / "aesthetic.pth", "clip": root / "clip.safetensors", "open_clip": root / "oc.safetensors"}
    torch.save(aesthetic_state_dict(WIDTH, seed=5, gain=10.0), paths["mlp"])
    save_file({k: v.contiguous() for k, v in tiny_clip_state_dict("transformers", DATA, 9).items()}, str(paths["clip"]))
    save_file({k: v.contiguous() for k, v in tiny_clip_state_dict("open_clip", DATA, 9).items()},
              str(paths["open_clip"]))
    return {k: str(v) for k, v in paths.items()}


def images(n=3, seed=0):
    return torch.rand(n, 40, 56, 3, generator=torch.Generator().manual_seed(seed))


def test_loads_with_its_clip_and_scores_images_only(files):
    oracle = load_oracle(files["mlp"], image_encoder=files["clip"])
    assert (oracle.kind, oracle.name, oracle.crop) == ("Aesthetic", "aesthetic.pth", "round")
    s = oracle.score(images(), ["a red fox", "a cat", "a car"])
    assert s.shape == (3,) and s.dtype == torch.float32 and s.unique().numel() == 3
    assert torch.equal(s, oracle.score(images(), "anything"))  # the prompt is not read
    one_by_one = load_oracle(files["mlp"], kind="Aesthetic", image_encoder=files["clip"], batch_size=1)
    assert torch.allclose(one_by_one.score(list(images()), None), s, atol=1e-6)


def test_the_mlp_runs_in_float32_whatever_the_dtype(files):
    oracle = load_oracle(files["mlp"], image_encoder=files["clip"], dtype=torch.bfloat16)
    assert oracle.device_dtype()[1] == torch.bfloat16 and oracle.model.mlp.layers[0].weight.dtype == torch.float32
    assert torch.isfinite(oracle.score(images(), "")).all()


def test_an_open_clip_layout_clip_is_read_too(files):
    oracle = load_oracle(files["mlp"], image_encoder=files["open_clip"])
    assert oracle.crop == "round" and torch.isfinite(oracle.score(images(), "")).all()


def test_the_fingerprint_covers_both_files(files, tmp_path):
    base = load_oracle(files["mlp"], image_encoder=files["clip"]).fingerprint
    assert load_oracle(files["mlp"], image_encoder=files["clip"]).fingerprint == base
    other_mlp = tmp_path / "other.pth"
    torch.save(aesthetic_state_dict(WIDTH, seed=6, gain=10.0), other_mlp)
    other_clip = tmp_path / "other_clip.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_clip_state_dict("transformers", DATA, 10).items()}, str(other_clip))
    assert load_oracle(other_mlp, image_encoder=files["clip"]).fingerprint != base
    assert load_oracle(files["mlp"], image_encoder=str(other_clip)).fingerprint != base


def test_without_a_clip_it_says_which_file_to_get(files):
    with pytest.raises(ImageEncoderError, match="no CLIP file was given") as e:
        load_oracle(files["mlp"])
    assert "openai/clip-vit-large-patch14's model.safetensors" in e.value.fix and "models/oracles/" in e.value.fix
    with pytest.raises(ImageEncoderError, match="does not exist"):
        load_oracle(files["mlp"], image_encoder=files["clip"] + ".missing")


def test_an_image_encoder_that_is_not_a_clip_is_refused(files):
    with pytest.raises(ImageEncoderError, match="aesthetic predictor .*not a CLIP model"):
        load_oracle(files["mlp"], image_encoder=files["mlp"])


def test_another_embedding_width_is_refused(files, tmp_path):
    wide = tmp_path / "wide.pth"
    torch.save(aesthetic_state_dict(768), wide)
    with pytest.raises(ImageEncoderError, match="clip.safetensors's image embeddings have 64 dimensions, but "
                                                "wide.pth reads 768"):
        load_oracle(wide, image_encoder=files["clip"])


def test_the_relu_variant_and_broken_files_are_refused(files, tmp_path):
    sd = aesthetic_state_dict(WIDTH)
    relu = {k.replace(f"layers.{a}.", f"layers.{b}."): v for k, v in sd.items()
            for a, b in zip((0, 2, 4, 6, 7), (0, 3, 6, 9, 11)) if k.startswith(f"layers.{a}.")}
    torch.save(relu, tmp_path / "relu.pth")
    with pytest.raises(OracleLoadError, match=r"sit at \[0, 3, 6, 9, 11\].*ReLU variant"):
        load_oracle(tmp_path / "relu.pth", image_encoder=files["clip"])
    short = dict(sd, **{"layers.6.weight": torch.zeros(16, 32)})
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(OracleLoadError, match=r"layers.6.weight expected \[16, 64\], found \[16, 32\]") as e:
        load_oracle(tmp_path / "short.pth", image_encoder=files["clip"])
    assert "sac+logos+ava1-l14-linearMSE.pth" in e.value.fix


def test_kind_mismatches_name_the_right_file(files):
    clip = tiny_clip_state_dict("transformers", DATA)
    with pytest.raises(KindMismatch, match="is a CLIP-family model .*not Aesthetic") as e:
        recognise(clip, "model.safetensors", "Aesthetic")
    assert "image_encoder" in e.value.fix
    mlp = aesthetic_state_dict(WIDTH)
    assert recognise(mlp, "x.pth") == "Aesthetic"
    with pytest.raises(KindMismatch, match="is an aesthetic predictor .*not CLIP score"):
        recognise(mlp, "x.pth", "CLIP score")
    assert recognise(from_open_clip(tiny_clip_state_dict("open_clip", DATA), "x", ""), "m.bin") == "CLIP score"

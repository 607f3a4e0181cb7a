"""The CLIP-family oracles and the oracle loader on tiny models, the ensemble, and calibrations that
keep their raw scores (any k, merges, which oracle made them). Full-size parity with the
references is tests/tier1/test_clip_parity.py."""
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from student_teacher.oracle.base import weights_fingerprint
from student_teacher.oracle.calibration import (CalibrationError, Percentiles, ShardRefused, calibration_data, check_made_by,
                                merge_calibrations, percentile_thresholds, prompt_id, read_calibration,
                                write_calibration)
from student_teacher.oracle.checkpoint import OracleLoadError
from student_teacher.oracle.clip_model import FAMILIES, from_open_clip
from student_teacher.oracle.clip_tokenizer import ClipTokenizer
from student_teacher.oracle.ensemble import EnsembleOracle, Member, member_from_calibration
from student_teacher.oracle.loading import KindMismatch, kind_from_name, load_oracle, recognise
from clip_standin import tiny_clip_state_dict

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "clip")


@pytest.fixture(scope="module")
def tiny():
    return {layout: tiny_clip_state_dict(layout, DATA) for layout in ("transformers", "open_clip")}


def save(sd, path):
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return str(path)


def images(n=3, size=40, seed=0):
    return torch.rand(n, size, size + 8, 3, generator=torch.Generator().manual_seed(seed))


# --- tokenizer -------------------------------------------------------------------------------

def test_clip_tokenizer_known_ids():
    for cleaning in ("hf", "open_clip"):
        ids = ClipTokenizer(cleaning)(["a photo of a cat"])
        assert ids.shape == (1, 77)
        assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
        assert not ids[0, 7:].any()


def test_clip_tokenizer_truncates_keeping_end_token():
    ids = ClipTokenizer("hf")(["word " * 200])[0]
    assert ids[0] == 49406 and ids[-1] == 49407 and (ids == 49407).sum() == 1


# --- loading: recognised by keys, strict ----------------------------------------------------

@pytest.mark.parametrize("layout", ["transformers", "open_clip"])
def test_tiny_clip_loads_and_scores(tiny, tmp_path, layout):
    path = save(tiny[layout], tmp_path / "my_hps_v2.safetensors")
    oracle = load_oracle(path)
    assert (oracle.kind, oracle.layout, oracle.name) == ("HPSv2", layout, "my_hps_v2.safetensors")
    s = oracle.score(images(), ["a red fox", "a red fox", "a blue car"])
    assert s.shape == (3,) and s.dtype == torch.float32 and torch.isfinite(s).all()
    assert (s.abs() <= 1).all()  # HPSv2 reads the cosine itself
    # one prompt for all, a list of differently sized images, and batching do not change a score
    again = load_oracle(path, batch_size=1)
    mixed = [images()[0], images()[1], images()[2]]
    assert torch.allclose(again.score(mixed, ["a red fox", "a red fox", "a blue car"]), s, atol=1e-6)


def test_both_layouts_are_the_same_model(tiny, tmp_path):
    """open_clip's keys, converted on load, give the transformers model of the same numbers: the
    tiny open_clip file and a transformers file holding the converted tensors score identically."""
    converted = from_open_clip(tiny["open_clip"], "x", "")
    a = load_oracle(save(tiny["open_clip"], tmp_path / "a_clip.safetensors"))
    b = load_oracle(save(converted, tmp_path / "b_clip.safetensors"))
    assert a.fingerprint == b.fingerprint
    assert a.crop == "round" and b.crop == "floor"  # each layout prepares pixels like its reference
    x = images(2, size=64)[:, :, :64]  # square: both crops agree
    assert torch.allclose(a.score(x, "a cat"), b.score(x, "a cat"), atol=1e-5)


def test_kind_from_name_and_explicit_kind(tiny, tmp_path):
    assert kind_from_name("PickScore_v1.safetensors") == "PickScore"
    assert kind_from_name("HPS_v2.1_compressed.pt") == "HPSv2"
    assert kind_from_name("open_clip_pytorch_model.bin") == "CLIP score"
    assert kind_from_name("/models/oracles/PickScore_v1/model.safetensors") == "PickScore"
    assert kind_from_name("/home/hps/models/oracles/model.safetensors") == "CLIP score"  # only the file's folder
    # the Hugging Face cache: models--<owner>--<name>/snapshots/<hash>/<file>
    hub = "/root/.cache/huggingface/hub/models--{}/snapshots/0123abcd/{}"
    assert kind_from_name(hub.format("yuvalkirstain--PickScore_v1", "model.safetensors")) == "PickScore"
    assert kind_from_name(hub.format("xswu--HPSv2", "HPS_v2.1_compressed.pt")) == "HPSv2"
    assert kind_from_name(hub.format("openai--clip-vit-large-patch14", "model.safetensors")) == "CLIP score"
    assert kind_from_name(hub.format("laion--CLIP-ViT-bigG-14-laion2B-39B-b160k", "open_clip_pytorch_model.bin")) \
        == "CLIP score"
    sd = tiny["transformers"]
    assert recognise(sd, "model.safetensors") == "CLIP score"
    assert recognise(sd, "model.safetensors", "PickScore") == "PickScore"
    with pytest.raises(KindMismatch, match="not ImageReward") as e:
        recognise(sd, "model.safetensors", "ImageReward")
    assert "kind" in e.value.fix


def test_readings_of_one_cosine(tiny, tmp_path):
    path = save(tiny["transformers"], tmp_path / "m.safetensors")
    x = images()
    clip = load_oracle(path, kind="CLIP score")
    with torch.inference_mode():
        cos = clip.cosine(clip.pixels(x, torch.device("cpu"), torch.float32), ["a cat"] * len(x))
    assert torch.allclose(clip.score(x, "a cat"), 100 * cos.clamp(min=0), atol=1e-4)
    hps = load_oracle(path, kind="HPSv2")  # the cosine itself, of images padded as hpsv2's score() pads them
    assert hps.crop == "pad" and torch.equal(hps.reading(cos), cos)
    scale = float(tiny["transformers"]["logit_scale"].exp())
    assert torch.allclose(load_oracle(path, kind="PickScore").score(x, "a cat"), scale * cos, atol=1e-4)


def test_unknown_files_are_refused_with_the_folder(tiny, tmp_path):
    with pytest.raises(OracleLoadError, match="models/oracles"):
        load_oracle(save({"foo.weight": torch.zeros(2)}, tmp_path / "x.safetensors"))
    bad = dict(tiny["open_clip"], **{"visual.attnpool.weight": torch.zeros(2)})
    with pytest.raises(OracleLoadError, match="visual.attnpool.weight"):
        load_oracle(save(bad, tmp_path / "y.safetensors"))
    short = {k: v for k, v in tiny["transformers"].items() if k != "visual_projection.weight"}
    with pytest.raises(OracleLoadError, match="visual_projection.weight"):
        load_oracle(save(short, tmp_path / "z.safetensors"))
    with pytest.raises(OracleLoadError, match="models/oracles"):
        load_oracle(tmp_path / "missing.safetensors")


def test_module_prefix_and_sidecar_config(tiny, tmp_path):
    prefixed = {"module." + k: v for k, v in tiny["open_clip"].items()}
    path = save(prefixed, tmp_path / "hps.safetensors")
    plain = load_oracle(path)
    assert plain.model.config.vision_config.hidden_act == "gelu"  # width 64: not a known family
    with open(tmp_path / "hps.json", "w") as f:
        json.dump({"vision_config": {"hidden_act": "quick_gelu"}, "text_config": {"hidden_act": "quick_gelu"}}, f)
    side = load_oracle(path)
    assert side.model.config.vision_config.hidden_act == "quick_gelu"
    assert not torch.allclose(plain.score(images(), "a cat"), side.score(images(), "a cat"))
    # a Hugging Face download: model.safetensors beside its config.json (a non-CLIP config.json is ignored)
    folder = tmp_path / "PickScore_v1"
    folder.mkdir()
    hf = save(tiny["transformers"], folder / "model.safetensors")
    with open(folder / "config.json", "w") as f:
        json.dump({"model_type": "bert"}, f)
    assert load_oracle(hf).model.config.vision_config.hidden_act == "gelu"
    with open(folder / "config.json", "w") as f:
        json.dump({"vision_config": {"hidden_act": "quick_gelu"}}, f)
    oracle = load_oracle(hf)
    assert oracle.kind == "PickScore" and oracle.model.config.vision_config.hidden_act == "quick_gelu"


def own_config(sd, tmp_path, **vision):
    """The tiny model's own full CLIPConfig dict (what save_pretrained writes), vision changed."""
    cfg = load_oracle(save(sd, tmp_path / "probe.safetensors")).model.config.to_dict()
    cfg["vision_config"].update(vision)
    return cfg


def test_folder_config_json_is_only_read_for_its_own_weights(tiny, tmp_path, caplog):
    """A config.json in models/oracles/ (say PickScore's) is not applied to another file beside it."""
    sd = tiny["transformers"]
    path = save(sd, tmp_path / "clip_l.safetensors")
    config = own_config(sd, tmp_path, hidden_act="quick_gelu", num_attention_heads=2)
    with open(tmp_path / "config.json", "w") as f:
        json.dump(config, f)
    with caplog.at_level("WARNING", logger="oracle.clip_model"):
        oracle = load_oracle(path)
    config = oracle.model.config.vision_config
    assert (config.hidden_act, config.num_attention_heads) == ("gelu", 1)  # the family's defaults
    assert "clip_l.safetensors" in caplog.text and "config.json" in caplog.text
    assert oracle.fingerprint == weights_fingerprint(sd)
    # the same config.json is the file's own when the file keeps its Hugging Face name
    own = load_oracle(save(sd, tmp_path / "model.safetensors"))
    assert (own.model.config.vision_config.hidden_act, own.model.config.vision_config.num_attention_heads) == \
        ("quick_gelu", 2)


def test_sidecar_configs_must_agree_with_the_shapes(tiny, tmp_path):
    from clip_standin import HF_VIT_H14
    sd = tiny["transformers"]
    folder = tmp_path / "oracles"
    folder.mkdir()
    path = save(sd, folder / "model.safetensors")
    with open(folder / "config.json", "w") as f:
        json.dump(HF_VIT_H14, f)  # PickScore's config beside a model of other sizes
    with pytest.raises(OracleLoadError, match=r"config.json: .*another model than model.safetensors.*hidden_size 1280"):
        load_oracle(path)
    explicit = save(sd, tmp_path / "mine.safetensors")
    with open(tmp_path / "mine.json", "w") as f:
        json.dump({"vision_config": {"hidden_act": "quick_gelu"}, "text_config": {"num_hidden_layers": 12}}, f)
    with pytest.raises(OracleLoadError, match=r"mine.json: .*mine.safetensors.*num_hidden_layers 12, the weights' 2"):
        load_oracle(explicit)
    with open(tmp_path / "mine.json", "w") as f:
        json.dump({"vision_config": {"num_attention_heads": 3}}, f)
    with pytest.raises(OracleLoadError, match="num_attention_heads 3 does not divide the width 64"):
        load_oracle(explicit)


def test_fingerprint_follows_the_config_a_sidecar_sets(tiny, tmp_path):
    """Calibrations of a file read without a sidecar config stay valid; one that changes what the
    shapes cannot show (heads, activation) makes another model, with another fingerprint."""
    sd = tiny["transformers"]
    path = save(sd, tmp_path / "m.safetensors")
    plain = load_oracle(path).fingerprint
    assert plain == weights_fingerprint(sd)
    fingerprints = []
    for vision in ({}, {"hidden_act": "quick_gelu"}, {"num_attention_heads": 2}):  # first: the defaults spelled out
        config = own_config(sd, tmp_path, **vision)
        with open(tmp_path / "m.json", "w") as f:
            json.dump(config, f)
        fingerprints.append(load_oracle(path).fingerprint)
    assert fingerprints[0] == plain and len({plain, *fingerprints}) == 3


def test_families_follow_the_reference_activations():
    assert FAMILIES[1024][1] == "quick_gelu"   # OpenAI ViT-L/14
    assert FAMILIES[1280][1] == "gelu"         # LAION ViT-H/14 (PickScore, HPSv2)
    assert FAMILIES[1664][1] == "gelu"         # ViT-bigG/14


def test_fingerprint_ignores_dtype_but_not_weights(tiny):
    sd = tiny["transformers"]
    half = {k: v.half() for k, v in sd.items()}
    assert weights_fingerprint(sd) == weights_fingerprint(half)
    other = dict(sd, **{"logit_scale": sd["logit_scale"] + 1})
    assert weights_fingerprint(sd) != weights_fingerprint(other)


# --- calibrations keep their raw scores -----------------------------------------------------

def scores(n, seed=0):
    return np.random.RandomState(seed).randn(n) * 0.8 + 0.2


def shard(indices, s, meta):
    prompts = [f"prompt {i}" for i in indices]
    return calibration_data([s[i] for i in indices], metadata=meta, prompt_indices=list(indices),
                            prompt_ids=[prompt_id(p) for p in prompts])


def test_any_k_is_exact_from_raw_scores(tmp_path):
    s = scores(200)
    write_calibration(tmp_path / "c.json", s, metadata={"steps": 4}, prompt_indices=list(range(200)),
                      prompt_ids=[prompt_id(str(i)) for i in range(200)])
    taus, meta = read_calibration(tmp_path / "c.json")
    assert isinstance(taus, Percentiles)
    for k in (0, 7, 33.5, 50, 100):
        assert taus[k] == pytest.approx(float(np.percentile(s, k)), abs=0)
    with open(tmp_path / "c.json") as f:
        official = {k: v for k, v in json.load(f).items() if k != "metadata"}
    assert official == percentile_thresholds(s)  # still the official {"10": tau, ...} format


def test_edited_calibration_is_refused(tmp_path):
    s = scores(50)
    data = calibration_data(s, prompt_indices=list(range(50)), prompt_ids=["x"] * 50)
    data["50"] += 0.5
    with open(tmp_path / "c.json", "w") as f:
        json.dump(data, f)
    with pytest.raises(CalibrationError, match="edited"):
        read_calibration(tmp_path / "c.json")


def test_shards_merge_into_the_file_one_run_makes():
    s = scores(30)
    meta = {"steps": 4, "oracle": {"kind": "PickScore", "name": "p", "fingerprint": "f"}}
    whole = shard(range(30), s, dict(meta, created="monday", prompt_count=30))
    renamed = dict(meta, oracle=dict(meta["oracle"], name="p renamed"), created="tuesday")  # same weights
    parts = [("a.json", shard([0, 5, 29, 7], s, renamed)),
             ("b.json", shard([i for i in range(30) if i not in (0, 5, 29, 7)], s, dict(meta, created="friday")))]
    merged = merge_calibrations(parts[::-1])
    assert merged["metadata"].pop("merged_from") == ["b.json", "a.json"]
    whole["metadata"].pop("created")
    assert json.dumps(merged, sort_keys=True) == json.dumps(whole, sort_keys=True)


def test_merge_refuses_mixed_settings_duplicates_and_official_files():
    s = scores(10)
    a = shard(range(5), s, {"steps": 4})
    with pytest.raises(CalibrationError, match="steps"):
        merge_calibrations([("a", a), ("b", shard(range(5, 10), s, {"steps": 8}))])
    other = {"steps": 4, "oracle": {"kind": "HPSv2", "name": "p", "fingerprint": "f"}}
    with pytest.raises(CalibrationError, match="oracle"):
        merge_calibrations([("a", a), ("b", shard(range(5, 10), s, other))])
    with pytest.raises(CalibrationError, match="prompt 4"):
        merge_calibrations([("a", a), ("b", shard(range(4, 10), s, {"steps": 4}))])
    with pytest.raises(ShardRefused, match="no raw scores") as e:
        merge_calibrations([("a", a), ("official", percentile_thresholds(s))])
    assert e.value.shard == 1  # the node names the input of the shard at fault


def test_a_calibration_of_another_oracle_is_refused():
    meta = {"oracle": {"kind": "PickScore", "name": "PickScore_v1.safetensors", "fingerprint": "abc"}}
    check_made_by(meta, "PickScore", "renamed.safetensors", "abc", "c.json")
    with pytest.raises(CalibrationError, match="made with PickScore"):
        check_made_by(meta, "HPSv2", "hps.pt", "abc", "c.json")
    with pytest.raises(CalibrationError, match="other PickScore weights"):
        check_made_by(meta, "PickScore", "other.safetensors", "def", "c.json")
    check_made_by({}, "ImageReward", "ImageReward.pt", "x", "IR_percentiles.json")  # official files: ImageReward
    with pytest.raises(CalibrationError):
        check_made_by({}, "CLIP score", "clip.safetensors", "x", "IR_percentiles.json")


# --- ensemble -------------------------------------------------------------------------------

class Fixed:
    def __init__(self, kind, values, fingerprint="f"):
        self.kind, self.name, self.fingerprint, self.values = kind, kind.lower(), fingerprint, values

    def score(self, images, prompts):
        return torch.tensor(self.values[:len(images)], dtype=torch.float32)


def test_ensemble_is_the_weighted_mean_of_z_scores():
    ir, pick = Fixed("ImageReward", [1.0, -1.0, 0.0]), Fixed("PickScore", [22.0, 20.0, 21.0])
    e = EnsembleOracle([Member(ir, 0.0, 1.0, 1.0), Member(pick, 21.0, 0.5, 3.0)])
    z = torch.tensor([[1.0, -1.0, 0.0], [2.0, -2.0, 0.0]])
    expect = (1 * z[0] + 3 * z[1]) / 4
    assert torch.allclose(e.score(images(), "x"), expect)
    assert e.kind == "Ensemble" and e.name == "imagereward + pickscore"
    assert EnsembleOracle([Member(ir, 0.0, 1.0, 1.0), Member(pick, 21.0, 0.5, 2.0)]).fingerprint != e.fingerprint


def test_ensemble_members_need_their_own_calibration():
    s = scores(40)
    data = calibration_data(s, metadata={"oracle": {"kind": "PickScore", "name": "p", "fingerprint": "f"}},
                            prompt_indices=list(range(40)), prompt_ids=["x"] * 40)
    m = member_from_calibration(Fixed("PickScore", []), data["metadata"], "pick.json", 2.0)
    assert (m.mean, m.std, m.weight) == pytest.approx((s.mean(), s.std(), 2.0))
    with pytest.raises(CalibrationError, match="made with PickScore"):
        member_from_calibration(Fixed("ImageReward", []), data["metadata"], "pick.json")
    assert EnsembleOracle([m]).score(images(), "x").shape == (0,)  # Fixed([]) scores no image
    with pytest.raises(ValueError, match="at least one oracle"):
        EnsembleOracle([])
    with pytest.raises(ValueError, match="> 0"):
        EnsembleOracle([Member(m.oracle, 0.0, 1.0, 0.0)])

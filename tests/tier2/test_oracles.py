"""Tier 2: every oracle kind loaded from its model folder in real ComfyUI and gating a batch (the aesthetic
predictor with its CLIP as image_encoder); calibrations keep their raw scores, shards merge into the file
one run makes, a calibration of another oracle is refused, and an ensemble gates like any oracle (tiny
models, CPU)."""
import json
import os

import numpy as np
import pytest

from comfyui_harness import run_prompt
from tiny_models import TINY_AESTHETIC, TINY_CLIP, TINY_HPS, TINY_IMAGE_REWARD, TINY_PICKSCORE, TINY_SD15

P = "StudentTeacher"
PROMPT = "a red cube on a table"
PROMPTS = ["a red cube", "a castle at dusk", "two cats on a sofa", "a bowl of ramen", "a foggy harbour",
           "a yellow bicycle"]
ORACLES = {TINY_IMAGE_REWARD: "ImageReward", TINY_PICKSCORE: "PickScore", TINY_HPS: "HPSv2", TINY_CLIP: "CLIP score"}


@pytest.fixture(scope="module")
def host(comfy):
    for name in (TINY_SD15, TINY_AESTHETIC, *ORACLES):
        comfy.tiny(name)
    comfy.folder_paths.filename_list_cache.clear()
    return comfy


def loader(file, kind="auto"):
    return {"class_type": P + "LoadImageRewardOracle",
            "inputs": {"oracle_file": file, "device": "cpu", "dtype": "fp32", "preprocess": "auto", "batch_size": 3,
                       "kind": kind}}


def gated(oracle_node, tau=0.0, threshold_mode="tau", calibration="none", k=50, batch=4, extra=None):
    """Student batch (1-4) -> oracle (o, plus `extra` nodes) -> gate (g) -> preview (v)."""
    g = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD15}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": PROMPT}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch}},
        "4": {"class_type": P + "ConsistencySampler",
              "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["3", 0],
                         "seed": 5, "steps": 2, "cfg": 1.0, "schedule": "lcm", "denoise": 1.0}},
        "o": oracle_node,
        "g": {"class_type": P + "OracleGate",
              "inputs": {"latent": ["4", 0], "vae": ["1", 2], "oracle": ["o", 0], "prompt": PROMPT,
                         "threshold_mode": threshold_mode, "tau": tau, "k": k, "calibration": calibration,
                         "budget": 10.0, "student_steps": 0, "teacher_steps": 3}},
        "v": {"class_type": "PreviewImage", "inputs": {"images": ["g", 0]}},
    }
    g.update(extra or {})
    return g


def calibrate(oracle_node, filename, first_prompt=0, max_prompts=0):
    g = gated(oracle_node)
    del g["g"], g["v"], g["3"], g["4"]
    g["c"] = {"class_type": P + "CalibrateThreshold",
              "inputs": {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "oracle": ["o", 0],
                         "prompts": "\n".join(PROMPTS), "prompts_file": "none", "max_prompts": max_prompts,
                         "negative_prompt": "", "width": 64, "height": 64, "steps": 2, "cfg": 1.0,
                         "schedule": "lcm", "seed": 3, "batch_size": 2, "filename": filename,
                         "first_prompt": first_prompt}}
    return g


def saved(run, node="c"):
    """The calibration file a Calibrate / Merge node wrote (its summary's first line names it)."""
    path = run.output(node, 1).splitlines()[0].removeprefix("saved ").split(" (")[0]
    with open(path, encoding="utf-8") as f:
        return os.path.basename(path), json.load(f)


@pytest.mark.parametrize("file", list(ORACLES))
def test_each_oracle_loads_from_its_folder_and_gates_a_batch(host, file):
    folder = "image_reward" if file == TINY_IMAGE_REWARD else "oracles"
    assert host.folder_paths.get_full_path(folder, file)
    run = run_prompt(host, gated(loader(file), tau=-100.0), fresh=True)
    oracle, decision = run.output("o"), run.output("g", 1)
    assert oracle.kind == ORACLES[file] and oracle.name == file
    assert decision.accepted.all() and decision.scores.unique().numel() == 4  # the samples differ to the oracle
    assert run.output("g", 2).splitlines()[0] == f"oracle: {ORACLES[file]} ({file})"
    middle = float(decision.scores.sort().values[1:3].mean())
    split = run_prompt(host, gated(loader(file), tau=middle)).output("g", 1)
    assert split.accepted.tolist() == (decision.scores >= middle).tolist() and int(split.accepted.sum()) == 2


def test_the_aesthetic_predictor_reads_its_clip_and_gates_on_the_image_alone(host):
    assert host.folder_paths.get_full_path("oracles", TINY_AESTHETIC)
    node = loader(TINY_AESTHETIC)
    node["inputs"]["image_encoder"] = TINY_CLIP
    run = run_prompt(host, gated(node, tau=-100.0), fresh=True)
    oracle, decision = run.output("o"), run.output("g", 1)
    assert (oracle.kind, oracle.name) == ("Aesthetic", TINY_AESTHETIC)
    assert decision.accepted.all() and decision.scores.unique().numel() == 4
    assert run.output("g", 2).splitlines()[0] == f"oracle: Aesthetic ({TINY_AESTHETIC})"
    assert oracle.score(decision.images, "another prompt").tolist() == decision.scores.tolist()  # image only
    middle = float(decision.scores.sort().values[1:3].mean())
    split = run_prompt(host, gated(node, tau=middle))
    kept = split.output("g", 1)
    assert kept.accepted.tolist() == (decision.scores >= middle).tolist() and int(kept.accepted.sum()) == 2
    assert kept.rejected == [i for i in range(4) if decision.scores[i] < middle]


@pytest.mark.parametrize("encoder, problem", [
    ("none", "tiny_aesthetic.pth is an aesthetic predictor: it scores the image embeddings of a CLIP model"),
    (TINY_IMAGE_REWARD, f"{TINY_IMAGE_REWARD}: it is an ImageReward checkpoint, not a CLIP model"),
])
def test_the_aesthetic_predictor_without_a_usable_clip_names_image_encoder(host, encoder, problem):
    node = loader(TINY_AESTHETIC)
    node["inputs"]["image_encoder"] = encoder
    run = run_prompt(host, gated(node), fresh=True, check=False)
    assert not run.success and f"image_encoder: {problem}" in run.error
    assert "ComfyUI/models/oracles/" in run.error and "openai/clip-vit-large-patch14's model.safetensors" in run.error


def test_a_wrong_kind_names_the_kind_input(host):
    run = run_prompt(host, gated(loader(TINY_PICKSCORE, kind="ImageReward")), fresh=True, check=False)
    assert not run.success and "kind: tiny_pickscore.safetensors is a CLIP-family model" in run.error


def test_shards_merge_into_one_run_and_a_foreign_calibration_is_refused(host):
    pick = loader(TINY_PICKSCORE)
    whole_name, whole = saved(run_prompt(host, calibrate(pick, "t2_whole"), fresh=True))
    a_name, a = saved(run_prompt(host, calibrate(pick, "t2_part", max_prompts=4)))
    b_name, b = saved(run_prompt(host, calibrate(pick, "t2_part", first_prompt=4)))
    assert a["metadata"]["samples"]["prompt_index"] == [0, 1, 2, 3] and b_name != a_name  # never overwritten
    assert whole["metadata"]["oracle"]["kind"] == "PickScore" and len(whole["metadata"]["samples"]["score"]) == 6

    merge = {"m": {"class_type": P + "MergeCalibrations",
                   "inputs": {"calibration": a_name, "calibration_2": b_name, "filename": "t2_merged"}}}
    host.folder_paths.filename_list_cache.clear()
    _, merged = saved(run_prompt(host, merge), "m")
    assert merged["metadata"].pop("merged_from") == [a_name, b_name]
    for data in (merged, whole):
        data["metadata"].pop("created")
    assert json.dumps(merged, sort_keys=True) == json.dumps(whole, sort_keys=True)  # the one run's samples, bit for bit

    # the PickScore calibration gates a PickScore batch by percentile, and nothing else
    ok = run_prompt(host, gated(pick, threshold_mode="percentile", calibration=whole_name, k=50)).output("g", 1)
    assert ok.threshold.tau == pytest.approx(float(np.percentile(whole["metadata"]["samples"]["score"], 50)))
    for other in (TINY_HPS, TINY_IMAGE_REWARD):
        run = run_prompt(host, gated(loader(other), threshold_mode="percentile", calibration=whole_name),
                         check=False)
        assert not run.success and f"calibration: {whole_name} was made with PickScore" in run.error


def test_an_ensemble_gates_on_calibrated_z_scores(host):
    hps, ir = loader(TINY_HPS), loader(TINY_IMAGE_REWARD)
    hps_file, hps_cal = saved(run_prompt(host, calibrate(hps, "t2_ens_hps"), fresh=True))
    g = calibrate(ir, "t2_ens_ir")
    ir_file, ir_cal = saved(run_prompt(host, g))
    host.folder_paths.filename_list_cache.clear()
    extra = {"h": hps, "e": {"class_type": P + "EnsembleOracles",
                             "inputs": {"oracle_1": ["o", 0], "calibration_1": ir_file, "weight_1": 1.0,
                                        "oracle_2": ["h", 0], "calibration_2": hps_file, "weight_2": 3.0}}}
    g = gated(ir, tau=-100.0, extra=extra)
    g["g"]["inputs"]["oracle"] = ["e", 0]
    run = run_prompt(host, g)
    ensemble, decision = run.output("e"), run.output("g", 1)
    assert ensemble.kind == "Ensemble"
    z = ensemble.z_scores(decision.images, PROMPT)
    assert decision.scores.tolist() == pytest.approx(((z[0] + 3 * z[1]) / 4).tolist(), abs=1e-5)
    assert run.output("g", 2).splitlines()[0].startswith("oracle: Ensemble (tiny_image_reward.safetensors + ")

    g["e"]["inputs"]["calibration_2"] = ir_file  # oracle 2 is HPSv2: the ImageReward calibration is refused
    run = run_prompt(host, g, check=False)
    assert not run.success and f"calibration_2: {ir_file} was made with ImageReward" in run.error

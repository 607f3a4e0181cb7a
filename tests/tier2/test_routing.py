"""Tier 2: prompt lists and several students in real ComfyUI.

Each sample of a prompt batch equals its prompt run alone; the gate scores sample i against prompt i;
a router over 3 students samples each student's sub-batch in one call and merges in batch order;
students without prompts are never loaded; per-student calibrations; ControlNet hints follow their
samples through routing and gating; best-of pays for every student; per-student calibration files."""
import json
import os
import sys

import pytest
import torch

from comfyui_harness import run_prompt
from tiny_models import TINY_CONTROLNET_SD15, TINY_IMAGE_REWARD, TINY_LCM_LORA_SD15, TINY_SD15, TINY_SDXL

P = "StudentTeacher"
PROMPTS = ["a red cube on a table", "a cat", "an anime girl with blue hair" + ", very detailed" * 40,
           "a city at night"]


@pytest.fixture(scope="module")
def host(comfy):
    for name in (TINY_SD15, TINY_SDXL, TINY_LCM_LORA_SD15, TINY_CONTROLNET_SD15, TINY_IMAGE_REWARD):
        comfy.tiny(name)
    return comfy


def pack(host, module):
    return sys.modules[f"{host.pack_module.__name__}.{module}"]


def checkpoint(name=TINY_SD15):
    import nodes
    return nodes.CheckpointLoaderSimple().load_checkpoint(name)[:3]


def encode_list(host, clip, prompts):
    return host.pack_nodes[P + "EncodePrompts"]().encode(clip, "\n".join(prompts), "none", 0)[0]


def empty_text(clip):
    import nodes
    return nodes.CLIPTextEncode().encode(clip, "")[0]


def latent(n, index=None):
    return {"samples": torch.zeros(n, 4, 8, 8), "batch_index": index if index is not None else list(range(n))}


@pytest.mark.parametrize("ckpt", [TINY_SD15, TINY_SDXL])
def test_a_prompt_list_is_one_conditioning_row_per_prompt(host, ckpt):
    import nodes
    _, clip, _ = checkpoint(ckpt)
    cond = encode_list(host, clip, PROMPTS)
    [(rows, extra)] = cond
    assert rows.shape[0] == 4 and rows.shape[1] % 77 == 0 and extra["student_teacher_prompts"] == tuple(PROMPTS)
    if ckpt == TINY_SDXL:
        assert extra["pooled_output"].shape[0] == 4
    alone = nodes.CLIPTextEncode().encode(clip, PROMPTS[2])[0][0][0]
    assert alone.shape[1] > 77 and torch.equal(rows[2][:alone.shape[1]], alone[0])  # the long prompt, whole
    short = nodes.CLIPTextEncode().encode(clip, PROMPTS[1])[0][0][0]
    assert torch.equal(rows[1][:77], short[0]) and torch.equal(rows[1][77:154], short[0])  # repeated, not padded


def test_each_sample_of_a_prompt_batch_equals_its_prompt_alone(host):
    model, clip, _ = checkpoint()
    neg = empty_text(clip)
    student = pack(host, "nodes.student").student_sample
    batch = student(model, encode_list(host, clip, PROMPTS), neg, latent(4), 3, 2, 1.0)
    assert [r.prompt for r in pack(host, "schedulers.record").records_of(batch)] == PROMPTS
    for i, prompt in enumerate(PROMPTS):
        alone = student(model, encode_list(host, clip, [prompt]), neg, latent(1, [i]), 3, 2, 1.0)
        torch.testing.assert_close(alone["samples"][0], batch["samples"][i], rtol=1e-4, atol=1e-3)


class RecordingOracle:
    """An IR_ORACLE stand-in that remembers which prompt it got for which image."""
    name, kind, fingerprint = "recording", "ImageReward", "recording"

    def __init__(self):
        self.calls = []

    def score(self, images, prompts):
        self.calls.append(list(prompts))
        return torch.arange(len(prompts), dtype=torch.float32)


def test_the_gate_scores_each_sample_against_its_own_prompt(host):
    model, clip, vae = checkpoint()
    batch = pack(host, "nodes.student").student_sample(model, encode_list(host, clip, PROMPTS),
                                                       empty_text(clip), latent(4), 3, 2, 1.0)
    gate = pack(host, "nodes.gate").gate
    oracle = RecordingOracle()
    gate(batch, vae, oracle, "")
    assert oracle.calls == [PROMPTS]
    gate(batch, vae, oracle, "an override")
    assert oracle.calls[-1] == ["an override"] * 4
    # the real (tiny) oracle: sample i's score is image i against prompt i
    tiny = pack(host, "nodes.oracle_nodes").load_oracle(TINY_IMAGE_REWARD, "cpu", "fp32")
    decision = gate(batch, vae, tiny, "")
    for i, prompt in enumerate(PROMPTS):
        want = tiny.score(decision.images[i:i + 1], [prompt])[0]
        torch.testing.assert_close(decision.scores[i], want, rtol=0, atol=1e-5)


def counting(model, calls, label):
    """A clone that records the batch size of every UNet call."""
    m = model.clone()
    m.set_model_unet_function_wrapper(lambda apply, a: calls.append((label, a["input"].shape[0])) or
                                      apply(a["input"], a["timestep"], **a["c"]))
    return m


def three_students():
    import nodes
    model = checkpoint()[0]
    lora = nodes.LoraLoaderModelOnly().load_lora_model_only(model, TINY_LCM_LORA_SD15, 1.0)[0]
    half = nodes.LoraLoaderModelOnly().load_lora_model_only(model, TINY_LCM_LORA_SD15, 0.5)[0]
    return [model, lora, half]


KEYWORDS = "2: anime|cartoon\n3: city|street\n1: cube"


def test_a_router_samples_each_students_sub_batch_in_one_call_and_merges_in_order(host):
    _, clip, _ = checkpoint()
    prompts = PROMPTS + ["a cartoon dog", "a street in the rain"]
    pos, neg = encode_list(host, clip, prompts), empty_text(clip)
    calls = []
    students = [counting(m, calls, s) for s, m in enumerate(three_students())]
    router = host.pack_nodes[P + "RouteStudents"]()
    inputs = dict(student_1=students[0], student_2=students[1], student_3=students[2], rules=KEYWORDS)
    out = router.run(pos, neg, latent(6), 3, 2, 1.0, "lcm", "keywords", 1, **inputs)["result"][0]
    records = pack(host, "schedulers.record").records_of(out)
    assert [r.student for r in records] == [1, 1, 2, 3, 2, 3]
    assert calls == [(0, 2), (0, 2), (1, 2), (1, 2), (2, 2), (2, 2)]  # one 2-step call each, 2 prompts each
    student = pack(host, "nodes.student").student_sample
    for i, s in enumerate([0, 0, 1, 2, 1, 2]):
        alone = student(students[s], encode_list(host, clip, [prompts[i]]), neg, latent(1, [i]), 3, 2, 1.0)
        torch.testing.assert_close(out["samples"][i], alone["samples"][0], rtol=1e-4, atol=1e-3)


RULES = {"keywords": "2: anime\n1: cube|cat", "embedding": "1: a red ball\n2: an anime boy\n3: a busy city street"}


def router_graph(route="keywords", **extra):
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD15}},
        "s2": {"class_type": "LoraLoaderModelOnly",
               "inputs": {"model": ["ckpt", 0], "lora_name": TINY_LCM_LORA_SD15, "strength_model": 1.0}},
        "s3": {"class_type": "LoraLoaderModelOnly",
               "inputs": {"model": ["ckpt", 0], "lora_name": TINY_LCM_LORA_SD15, "strength_model": 0.3}},
        "pos": {"class_type": P + "EncodePrompts", "inputs": {"clip": ["ckpt", 1], "prompts": "\n".join(PROMPTS),
                                                             "prompts_file": "none", "max_prompts": 0}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": ["pos", 1]}},
        "route": {"class_type": P + "RouteStudents",
                  "inputs": {"student_1": ["ckpt", 0], "student_2": ["s2", 0], "student_3": ["s3", 0],
                             "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0], "seed": 1,
                             "steps": 2, "cfg": 1.0, "schedule": "lcm", "route": route,
                             "rules": RULES[route],
                             "default_student": 1, "clip": ["ckpt", 1], **extra}},
        "out": {"class_type": "PreviewAny", "inputs": {"source": ["route", 1]}},
    }


def test_a_student_without_prompts_is_never_loaded(host):
    run = run_prompt(host, router_graph(), fresh=True)  # keywords: no prompt goes to student 3
    assert not run.ran("s3") and run.ran("s2")
    assert "#3 -> student 1: a city at night" in run.output("route", 1)
    run = run_prompt(host, router_graph(route="embedding"), fresh=True)
    assert run.output("route", 1).splitlines()[3].startswith("#3 -> student 3")  # nearest prototype: the street


def test_each_student_is_gated_with_its_own_calibration(host):
    cal_dir = host.folder_paths.get_folder_paths("image_reward_calibration")[0]
    for name, tau in (("s1.json", -100.0), ("s2.json", 100.0)):
        with open(os.path.join(cal_dir, name), "w") as f:
            json.dump({"50": tau, "metadata": {"steps": 2}}, f)
    host.folder_paths.filename_list_cache.pop("image_reward_calibration", None)
    g = router_graph()
    g["oracle"] = {"class_type": P + "LoadImageRewardOracle",
                   "inputs": {"oracle_file": TINY_IMAGE_REWARD, "device": "cpu", "dtype": "fp32", "preprocess": "exact",
                              "batch_size": 8}}
    g["gate"] = {"class_type": P + "OracleGate",
                 "inputs": {"latent": ["route", 0], "vae": ["ckpt", 2], "oracle": ["oracle", 0], "prompt": "",
                            "threshold_mode": "percentile", "tau": 0.0, "k": 50, "calibration": "s1.json",
                            "budget": 10.0, "student_steps": 0, "teacher_steps": 2, "calibration_2": "s2.json"}}
    g["out"] = {"class_type": "PreviewAny", "inputs": {"source": ["gate", 2]}}
    decision = run_prompt(host, g).output("gate", 1)
    students = [r.student for r in decision.records]
    assert decision.accepted.tolist() == [s == 1 for s in students] and 2 in students
    report = run_prompt(host, g).output("gate", 2)
    assert "student 1: tau = -100.0000" in report and "student 2: tau = 100.0000" in report
    assert "student 2: 1 samples, kept 0/1, average steps 2" in report
    g["teacher"] = {"class_type": P + "Improve",
                    "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0],
                               "latent": ["route", 0], "gate": ["gate", 1], "strategy": "refine",
                               "rollback_mode": "strength", "rollback": 0.5, "steps": 3, "sampler_name": "euler",
                               "scheduler": "normal", "cfg": 1.0, "seed": 0, "vae": ["ckpt", 2]}}
    g["out"] = {"class_type": "PreviewAny", "inputs": {"source": ["teacher", 2]}}
    report = run_prompt(host, g).output("teacher", 2)  # steps actually spent, student by student
    assert "student 1: 3 samples, kept 3/3, average steps 2" in report
    assert "student 2: 1 samples, kept 0/1, average steps 5" in report


def test_controlnet_hints_follow_their_samples_through_routing_and_gating(host):
    import nodes
    model, clip, vae = checkpoint()
    students = three_students()[:2]
    cnet = nodes.ControlNetLoader().load_controlnet(TINY_CONTROLNET_SD15)[0]
    hints = torch.rand(4, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    neg = empty_text(clip)

    def controlled(prompts, hint):
        return nodes.ControlNetApplyAdvanced().apply_controlnet(encode_list(host, clip, prompts), neg, cnet, hint,
                                                                1.0, 0.0, 1.0)

    pos, cneg = controlled(PROMPTS, hints)
    out = host.pack_nodes[P + "RouteStudents"]().run(pos, cneg, latent(4), 3, 2, 1.0, "lcm", "keywords", 1,
                                                     student_1=students[0], student_2=students[1],
                                                     rules="2: cat|anime")["result"][0]
    student = pack(host, "nodes.student").student_sample
    for i, s in enumerate([0, 1, 1, 0]):
        p, n = controlled([PROMPTS[i]], hints[i:i + 1])
        alone = student(students[s], p, n, latent(1, [i]), 3, 2, 1.0)
        torch.testing.assert_close(out["samples"][i], alone["samples"][0], rtol=1e-4, atol=1e-3)
    # and on into the teacher: only the rejected sample 2 is improved, with hint 2
    gating, record = pack(host, "schedulers.gating"), pack(host, "schedulers.record")
    decision = gating.decide(torch.tensor([1.0, 1.0, -1.0, 1.0]), gating.Threshold(0.0, None, "test"),
                             record.records_of(out))
    improve = host.pack_nodes[P + "Improve"]()
    args = dict(strategy="refine", rollback_mode="strength", rollback=0.5, steps=2, sampler_name="euler",
                scheduler="normal", cfg=1.0, seed=3, vae=vae)
    both = improve.run(model, pos, cneg, out, gate=decision, **args)["result"][0]
    p, n = controlled([PROMPTS[2]], hints[2:3])
    one = {"samples": out["samples"][2:3], "batch_index": [2]}
    torch.testing.assert_close(both["samples"][2], improve.run(model, p, n, one, **args)["result"][0]["samples"][0],
                               rtol=1e-4, atol=1e-4)
    assert torch.equal(both["samples"][0], out["samples"][0])


def test_best_of_keeps_the_oracles_favourite_and_pays_for_every_student(host):
    model, clip, vae = checkpoint()
    students = three_students()[:2]
    oracle = pack(host, "nodes.oracle_nodes").load_oracle(TINY_IMAGE_REWARD, "cpu", "fp32")
    pos, neg = encode_list(host, clip, PROMPTS), empty_text(clip)
    out = host.pack_nodes[P + "RouteStudents"]().run(pos, neg, latent(4), 3, 2, 1.0, "lcm", "best_of", 1,
                                                     student_1=students[0], student_2=students[1], vae=vae,
                                                     oracle=oracle)["result"][0]
    records = pack(host, "schedulers.record").records_of(out)
    for r in records:
        stage = r.last("best_of")
        scores = [stage.settings["student 1"], stage.settings["student 2"]]
        assert r.student == 1 + scores.index(max(scores)) and r.cost == 4  # 2 + the other's 2 steps


def test_calibrate_writes_one_file_per_student_from_the_same_prompts(host):
    g = router_graph()
    g["oracle"] = {"class_type": P + "LoadImageRewardOracle",
                   "inputs": {"oracle_file": TINY_IMAGE_REWARD, "device": "cpu", "dtype": "fp32", "preprocess": "exact",
                              "batch_size": 8}}
    g["cal"] = {"class_type": P + "CalibrateThreshold",
                "inputs": {"model": ["ckpt", 0], "student_2": ["s2", 0], "clip": ["ckpt", 1], "vae": ["ckpt", 2],
                           "oracle": ["oracle", 0], "prompts": "\n".join(PROMPTS), "prompts_file": "none",
                           "max_prompts": 0, "negative_prompt": "", "width": 64, "height": 64, "steps": 2, "cfg": 1.0,
                           "schedule": "lcm", "seed": 0, "batch_size": 4, "filename": "routed"}}
    g = {k: v for k, v in g.items() if k not in ("route", "out")}
    run = run_prompt(host, g)
    assert run.output("cal").shape[0] == 2  # a histogram per student
    cal_dir = host.folder_paths.get_folder_paths("image_reward_calibration")[0]
    metas = [json.load(open(os.path.join(cal_dir, f"routed_student{i}.json")))["metadata"] for i in (1, 2)]
    assert [m["student"] for m in metas] == ["student 1", "student 2"] and all(m["prompt_count"] == 4 for m in metas)


def test_split_prompts_writes_the_centroid_file_the_router_follows(host, tmp_path):
    """tools/split_prompts.py (its own ComfyUI process): K-means groups -> centroids -> route = centroids."""
    import subprocess
    root = host.models_root
    (tmp_path / "paths.yaml").write_text(f"tiny:\n    checkpoints: {root}/checkpoints\n")
    prompts = ["a cat on a sofa", "a kitten sleeping", "a cat in the sun", "a city at night", "a street in the rain",
               "skyscrapers at dusk"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    out = tmp_path / "routing"

    def split(name, *extra):
        return subprocess.run([sys.executable, os.path.join(host.pack_root, "tools", "split_prompts.py"), "--comfyui",
                               host.path, "--extra-model-paths-config", str(tmp_path / "paths.yaml"), "--checkpoint",
                               TINY_SD15, "--prompts", str(tmp_path / "prompts.txt"), "--k", "2", "--name", name,
                               "--out-dir", str(out), *extra], capture_output=True, text=True, timeout=600)

    def groups_of(name):
        return [(out / f"{name}_group{g}.txt").read_text().split("\n")[:-1] for g in (1, 2)]

    done = split("balanced", "--balanced")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(len(g) for g in groups_of("balanced")) == [3, 3]
    again = split("balanced", "--balanced")
    assert again.returncode != 0 and "balanced.json exists already" in (again.stderr + again.stdout)
    assert split("groups").returncode == 0
    groups = groups_of("groups")
    assert sorted(sum(groups, [])) == sorted(prompts)

    _, clip, _ = checkpoint()
    paths, exts = host.folder_paths.folder_names_and_paths["student_teacher_routing"]
    host.folder_paths.folder_names_and_paths["student_teacher_routing"] = ([str(out)] + list(paths), exts)
    host.folder_paths.filename_list_cache.pop("student_teacher_routing", None)
    students = three_students()[:2]
    routed = host.pack_nodes[P + "RouteStudents"]().run(
        encode_list(host, clip, prompts), empty_text(clip), latent(6), 0, 1, 1.0, "lcm", "centroids", 1,
        student_1=students[0], student_2=students[1], clip=clip, centroids="groups.json")["result"][0]
    served = [r.student for r in pack(host, "schedulers.record").records_of(routed)]
    assert [prompts[i] for i, s in enumerate(served) if s == 1] == groups[0]  # as the groups were split

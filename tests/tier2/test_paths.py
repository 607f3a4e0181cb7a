"""Tier 2: core ComfyUI nodes between the pack's nodes, and the paths less travelled.

A core node that changes the samples (KSampler, LatentUpscale, SamplerCustom after Rollback Noise)
leaves the records naming the samples but no score or decoded image: the next gate scores again. A
node between the gate and an improver is honoured (a noise mask) or refused (other samples). Two
refines of one sample draw different rollback noise. ddim runs, per sample. A router decides again
each queue and numbers its students without gaps; a calibration never hides another file's name."""
import os
import sys

import pytest
import torch

from comfyui_harness import run_prompt
from tiny_models import TINY_GUIDED_SD15_UNET, TINY_IMAGE_REWARD, TINY_SD15, TINY_SDXL

P = "StudentTeacher"


@pytest.fixture(scope="module")
def host(comfy):
    for name in (TINY_SD15, TINY_SDXL, TINY_IMAGE_REWARD, TINY_GUIDED_SD15_UNET):
        comfy.tiny(name)
    return comfy


def pack(host, module):
    return sys.modules[f"{host.pack_module.__name__}.{module}"]


class Brightness:
    """Scores each image by its mean brightness; counts the images it scores."""
    name, kind, fingerprint = "brightness", "ImageReward", "brightness"

    def __init__(self):
        self.images = 0

    def score(self, images, prompts):
        self.images += images.shape[0]
        return images.float().mean(dim=(1, 2, 3)).cpu()


def setup(host, n=4):
    import nodes
    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(TINY_SD15)[:3]
    pos = nodes.CLIPTextEncode().encode(clip, "a red cube")[0]
    neg = nodes.CLIPTextEncode().encode(clip, "")[0]
    student = pack(host, "nodes.student").student_sample(model, pos, neg, {"samples": torch.zeros(n, 4, 8, 8)}, 1, 2,
                                                         1.0)
    return model, pos, neg, vae, student


def test_samples_changed_by_core_nodes_are_scored_again(host):
    import comfy_extras.nodes_custom_sampler as custom
    import nodes
    model, pos, neg, vae, student = setup(host)
    gate, record = pack(host, "nodes.gate").gate, pack(host, "schedulers.record")
    first = gate(student, vae, Brightness(), "a red cube", tau=100.0)
    # the documented core-sampler path: Rollback Noise -> SamplerCustom (add_noise off) -> a second gate
    noised, sigmas = pack(host, "nodes.rollback").add_rollback_noise(model, first.latent, "strength", 0.5, 2, "euler",
                                                                     "normal", 1)
    sampler = custom.KSamplerSelect().get_sampler("euler")[0]
    refined = custom.SamplerCustom().sample(model, False, 0, 1.0, pos, neg, sampler, sigmas, noised)[0]
    oracle = Brightness()
    second = gate(refined, vae, oracle, "a red cube", tau=100.0)
    assert oracle.images == 4
    again = Brightness().score(vae.decode(refined["samples"]), [""] * 4)
    torch.testing.assert_close(second.scores, again)
    assert [s.kind for s in second.records[0].stages] == ["student", "gate", "outside", "gate"]
    assert "not counted" in record.cost_line(second.records)
    # a core node that changes the size: every sample decoded again at the new size, no stale image
    bigger = nodes.LatentUpscale().upscale(first.latent, "nearest-exact", 128, 128, "disabled")[0]
    third = gate(bigger, vae, Brightness(), "a red cube", tau=100.0)
    assert third.images.shape[1:3] == (128, 128)
    # a mask keeps the samples: the first gate's images and scores still hold
    masked = nodes.SetLatentNoiseMask().set_mask(first.latent, torch.ones(1, 8, 8))[0]
    oracle = Brightness()
    assert torch.equal(gate(masked, vae, oracle, "a red cube", tau=100.0).scores, first.scores) and oracle.images == 0


def test_a_score_against_another_prompt_is_not_reused(host):
    _, _, _, vae, student = setup(host, n=2)
    gate = pack(host, "nodes.gate").gate
    first = gate(student, vae, Brightness(), "a red cube", tau=100.0)
    oracle = Brightness()
    gate(first.latent, vae, oracle, "a blue ball", tau=100.0)
    assert oracle.images == 2


def test_an_improver_takes_the_noise_mask_put_after_the_gate_and_refuses_other_samples(host):
    import nodes
    model, pos, neg, vae, student = setup(host)
    gate, improve = pack(host, "nodes.gate").gate, pack(host, "nodes.teacher").improve
    decision = gate(student, vae, Brightness(), "a red cube", tau=100.0)
    nothing = nodes.SetLatentNoiseMask().set_mask(decision.latent, torch.zeros(1, 8, 8))[0]  # repaint nothing
    out, todo = improve(model, pos, neg, nothing, "refine", "strength", 0.5, 2, "euler", "normal", 1.0, 1, vae,
                        decision)
    assert todo == [0, 1, 2, 3]
    torch.testing.assert_close(out["samples"], student["samples"], rtol=0, atol=1e-5)
    other = {**decision.latent, "samples": decision.latent["samples"] + 1}
    with pytest.raises(ValueError, match="latent: holds other samples than the gate decided on"):
        improve(model, pos, neg, other, "refine", "strength", 0.5, 2, "euler", "normal", 1.0, 1, vae, decision)


def test_a_student_retry_repaints_only_the_masked_area(host):
    import nodes
    model, pos, neg, vae, _ = setup(host)
    gate, retry = pack(host, "nodes.gate").gate, pack(host, "nodes.retry").retry_rejected
    mask = torch.zeros(1, 8, 8)
    mask[:, :, :4] = 1.0
    image = nodes.SetLatentNoiseMask().set_mask({"samples": torch.randn(4, 4, 8, 8, generator=torch.Generator()
                                                                        .manual_seed(0))}, mask)[0]  # "encoded"
    student = pack(host, "nodes.student").student_sample(model, pos, neg, image, 1, 2, 1.0)
    decision = gate(student, vae, Brightness(), "a red cube", tau=100.0)
    out, todo = retry(model, pos, neg, decision.latent, 1, 2, 1.0, "lcm", 1, vae, decision, image)
    assert todo == [0, 1, 2, 3]
    torch.testing.assert_close(out["samples"][..., 4:], image["samples"][..., 4:], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out["samples"][..., :4], student["samples"][..., :4], atol=1e-3)
    with pytest.raises(ValueError, match="source_latent: shape"):
        retry(model, pos, neg, decision.latent, 1, 2, 1.0, "lcm", 1, vae, decision,
              {"samples": torch.zeros(1, 4, 16, 16)})


def test_keep_better_restores_the_earlier_versions_w(host):
    import nodes
    _, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(TINY_SD15)[:3]
    pos, neg = (nodes.CLIPTextEncode().encode(clip, t)[0] for t in ("a red cube", ""))
    guided = host.pack_nodes[P + "LoadGuidedStudent"]().load(TINY_GUIDED_SD15_UNET, 8.0, "diffusers")[0]
    student = pack(host, "nodes.student").student_sample(guided, pos, neg, {"samples": torch.zeros(2, 4, 8, 8)}, 1, 1,
                                                         1.0, w="3")
    gate, retry = pack(host, "nodes.gate").gate, pack(host, "nodes.retry").retry_rejected
    first = gate(student, vae, Brightness(), "a red cube", tau=100.0)
    retried, _ = retry(guided, pos, neg, first.latent, 1, 1, 1.0, "lcm", 1, vae, first, w="7")
    worse = Brightness()
    worse.score = lambda images, prompts: first.scores - 1.0  # every retry scores lower: both go back
    second = gate(retried, vae, worse, "a red cube", tau=-100.0, keep_better=True)
    assert torch.equal(second.latent["samples"], student["samples"]) and [r.w for r in second.records] == [3.0, 3.0]


def test_a_second_refine_of_a_sample_draws_other_noise_than_the_first(host):
    model, pos, neg, vae, student = setup(host, n=2)
    gate, improve = pack(host, "nodes.gate").gate, pack(host, "nodes.teacher").improve
    glue, record = pack(host, "nodes.noise"), pack(host, "schedulers.record")
    first = gate(student, vae, Brightness(), "a red cube", tau=100.0)
    once, _ = improve(model, pos, neg, first.latent, "refine", "strength", 0.5, 2, "euler", "normal", 1.0, 0, vae,
                      first)
    second = gate(once, vae, Brightness(), "a red cube", tau=100.0)
    assert [r.noise_round for r in first.records] == [0, 0] and [r.noise_round for r in second.records] == [1, 1]
    # Rollback Noise draws what the second refine draws: the sample's next round, not the first one's Z
    noised, sigmas = pack(host, "nodes.rollback").add_rollback_noise(model, second.latent, "strength", 0.5, 2,
                                                                     "euler", "normal", 0)
    z = glue.rollback_noise(0, [0, 1], (4, 8, 8), [1, 1])
    expected = glue.noised_latent(model, second.latent["samples"], z, sigmas[0])
    torch.testing.assert_close(noised["samples"], expected)
    assert not torch.equal(z, glue.rollback_noise(0, [0, 1], (4, 8, 8)))
    assert record.records_of(second.latent)[0].last("teacher") is not None


def test_ddim_refines_each_sample_as_if_alone_with_a_mask(host):
    """ComfyUI's ddim draws its inpainting noise for the whole batch from the seed; here it is per sample."""
    import nodes
    model, pos, neg, vae, student = setup(host)
    improve, record = pack(host, "nodes.teacher").improve, pack(host, "schedulers.record")
    mask = torch.zeros(1, 8, 8)
    mask[:, :, :4] = 1.0
    masked = nodes.SetLatentNoiseMask().set_mask(student, mask)[0]
    batch, _ = improve(model, pos, neg, masked, "refine", "strength", 0.6, 2, "ddim", "normal", 2.0, 5, vae)
    one = record.with_records({"samples": student["samples"][2:3], "noise_mask": mask},
                              record.records_of(student)[2:3])
    alone, _ = improve(model, pos, neg, one, "refine", "strength", 0.6, 2, "ddim", "normal", 2.0, 5, vae)
    torch.testing.assert_close(alone["samples"][0], batch["samples"][2], rtol=1e-4, atol=1e-4)


def route_graph(rules, slots=(1, 2)):
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD15}},
        "pos": {"class_type": P + "EncodePrompts",
                "inputs": {"clip": ["ckpt", 1], "prompts": "a red cube\na cat", "prompts_file": "none",
                           "max_prompts": 0}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "route": {"class_type": P + "RouteStudents",
                  "inputs": {"positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
                             "seed": 0, "steps": 1, "cfg": 1.0, "schedule": "lcm", "route": "keywords",
                             "default_student": 1, "rules": rules,
                             **{f"student_{i}": ["ckpt", 0] for i in slots}}},
        "out": {"class_type": "PreviewAny", "inputs": {"source": ["route", 1]}},
    }
    return g


def test_a_router_decides_again_on_every_queue(host):
    assert run_prompt(host, route_graph("2: cat")).output("route", 1).count("student 2") == 1
    run = run_prompt(host, route_graph("cat"), check=False)  # no student number: refused, not last queue's routing
    assert not run.success and "rules: line 'cat' does not start with a student number" in run.error, run.error


def test_a_router_refuses_a_gap_between_its_students(host):
    run = run_prompt(host, route_graph("3: cat", slots=(1, 2, 4)), check=False)
    assert not run.success and "student_3: is not connected but student_4 is" in run.error, run.error


def test_a_routed_student_that_cannot_sample_is_named_by_its_input(host):
    g = route_graph("2: cat")
    g["x0"] = {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["ckpt", 0], "sampling": "x0",
                                                                 "zsnr": False}}
    g["route"]["inputs"]["student_2"] = ["x0", 0]
    run = run_prompt(host, g, check=False)
    assert not run.success and "student_2: schedule lcm needs an eps- or v-prediction student" in run.error, run.error


def test_a_student_of_another_family_is_named_in_the_message_too(host):
    g = route_graph("2: cat")
    g["xl"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SDXL}}
    g["route"]["inputs"]["student_2"] = ["xl", 0]
    run = run_prompt(host, g, check=False)
    assert not run.success and "student_2: is a SDXL model but student_1 is SD15" in run.error, run.error


def test_a_retry_model_of_another_family_is_refused(host):
    import nodes
    _, _, _, vae, student = setup(host, n=2)
    xl, xl_clip = nodes.CheckpointLoaderSimple().load_checkpoint(TINY_SDXL)[:2]
    pos, neg = (nodes.CLIPTextEncode().encode(xl_clip, t)[0] for t in ("a red cube", ""))
    decision = pack(host, "nodes.gate").gate(student, vae, Brightness(), "a red cube", tau=100.0)
    with pytest.raises(ValueError, match="model: is a SDXL model but the samples were made in the SD15"):
        pack(host, "nodes.retry").retry_rejected(xl, pos, neg, decision.latent, 1, 1, 1.0, "lcm", 1, vae, decision)


def calibrate(filename, seed=0):
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD15}},
        "oracle": {"class_type": P + "LoadImageRewardOracle",
                   "inputs": {"oracle_file": TINY_IMAGE_REWARD, "device": "cpu", "dtype": "fp32",
                              "preprocess": "exact", "batch_size": 8}},
        "node": {"class_type": P + "CalibrateThreshold",
                 "inputs": {"model": ["ckpt", 0], "clip": ["ckpt", 1], "vae": ["ckpt", 2], "oracle": ["oracle", 0],
                            "prompts": "a red cube\na blue ball", "prompts_file": "none", "max_prompts": 0,
                            "negative_prompt": "", "width": 64, "height": 64, "steps": 1, "cfg": 1.0,
                            "schedule": "lcm", "seed": seed, "batch_size": 2, "filename": filename}},
        "out": {"class_type": "PreviewAny", "inputs": {"source": ["node", 1]}},
    }


def test_a_calibration_never_takes_the_name_of_a_preset(host):
    preset = "lcm_sdxl_4steps_paper.json"
    assert preset in host.folder_paths.get_filename_list("image_reward_calibration")
    cal_dir = host.folder_paths.get_folder_paths("image_reward_calibration")[0]  # the session's (the harness's)
    summary = run_prompt(host, calibrate("lcm_sdxl_4steps_paper")).output("node", 1)
    assert "lcm_sdxl_4steps_paper_2.json" in summary and not os.path.exists(os.path.join(cal_dir, preset))
    found = host.folder_paths.get_full_path("image_reward_calibration", preset)  # what the gate reads
    assert os.path.dirname(found) != cal_dir


@pytest.mark.parametrize("name", ["a\x00b", "..", "x" * 300])
def test_a_file_name_no_system_takes_is_refused_by_name(host, name):
    run = run_prompt(host, calibrate(name), check=False)
    assert not run.success and "filename: " in run.error and "Fix: give a plain name" in run.error, run.error


def test_the_all_in_one_node_names_its_own_inputs(host):
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD15}},
        "xl": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SDXL}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a red cube"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "oracle": {"class_type": P + "LoadImageRewardOracle",
                   "inputs": {"oracle_file": TINY_IMAGE_REWARD, "device": "cpu", "dtype": "fp32",
                              "preprocess": "exact", "batch_size": 8}},
        "node": {"class_type": P + "AdaptiveSampler",
                 "inputs": {"student": ["ckpt", 0], "teacher": ["xl", 0], "positive": ["pos", 0],
                            "negative": ["neg", 0], "latent_image": ["empty", 0], "vae": ["ckpt", 2],
                            "oracle": ["oracle", 0], "prompt": "a red cube", "seed": 0, "student_steps": 1,
                            "student_cfg": 1.0, "schedule": "lcm", "threshold_mode": "tau", "tau": 100.0, "k": 50,
                            "calibration": "none", "budget": 10.0, "strategy": "refine", "rollback_mode": "strength",
                            "rollback": 0.5, "teacher_steps": 1, "sampler_name": "euler", "scheduler": "normal",
                            "teacher_cfg": 1.0}},
        "out": {"class_type": "PreviewAny", "inputs": {"source": ["node", 2]}},
    }
    for tau in (100.0, -100.0):  # refused whether or not a sample is sent to the teacher
        g["node"]["inputs"]["tau"] = tau
        run = run_prompt(host, g, check=False)
        assert not run.success and "teacher: is a SDXL model but the samples were made in the SD15" in run.error, \
            run.error

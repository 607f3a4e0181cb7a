"""Tier 2: each sample keeps its own conditioning extras, noise and w on every path (issue 18).

Per-sample masks and inpaint latents follow their samples into the teacher's sub-batch; chained
retries draw fresh noise and keep each sample's w; Separate Student Weights copies a guided student's
w embedding with its weights; best_of names each student's own input."""
import sys

import pytest
import torch

from tiny_models import TINY_GUIDED_SD15_UNET, TINY_IMAGE_REWARD, TINY_LCM_LORA_SD15, TINY_SD15, TINY_SDXL

P = "StudentTeacher"


@pytest.fixture(scope="module")
def host(comfy):
    for name in (TINY_SD15, TINY_SDXL, TINY_GUIDED_SD15_UNET, TINY_LCM_LORA_SD15, TINY_IMAGE_REWARD):
        comfy.tiny(name)
    return comfy


def pack(host, module):
    return sys.modules[f"{host.pack_module.__name__}.{module}"]


def checkpoint(name=TINY_SD15):
    import nodes
    return nodes.CheckpointLoaderSimple().load_checkpoint(name)[:3]


def text(clip, prompt):
    import nodes
    return nodes.CLIPTextEncode().encode(clip, prompt)[0]


class RejectOnly:
    """Scores every sample 1 except the batch rows in `rejected` (-1): a gate at tau 0 sends only those on."""
    name, kind, fingerprint = "reject-only", "ImageReward", "reject-only"

    def __init__(self, rejected):
        self.rejected = set(rejected)

    def score(self, images, prompts):
        return torch.tensor([-1.0 if i in self.rejected else 1.0 for i in range(images.shape[0])])


def masks_per_sample(n, changed=None):
    masks = torch.zeros(n, 64, 64)
    for i in range(n):
        masks[i, :, : 8 * (i + 1)] = 1.0
    if changed is not None:
        masks[changed] = 1.0 - masks[changed]
    return masks


def test_per_sample_masks_follow_their_samples_into_the_teacher(host):
    import nodes
    model, clip, vae = checkpoint()
    neg = text(clip, "")
    student = pack(host, "nodes.student").student_sample(model, text(clip, "a red cube"), neg,
                                                         {"samples": torch.zeros(4, 4, 8, 8)}, 1, 2, 1.0)
    decision = pack(host, "nodes.gate").gate(student, vae, RejectOnly([2]), "a red cube", tau=0.0)
    improve = pack(host, "nodes.teacher").improve

    def refined(masks):
        pos = nodes.ConditioningSetMask().append(text(clip, "a red cube"), masks, "default", 1.0)[0]
        out, todo = improve(model, pos, neg, decision.latent, "refine", "strength", 0.6, 2, "euler", "normal", 3.0,
                            5, vae, decision)
        assert todo == [2]
        return out["samples"][2]

    base = refined(masks_per_sample(4))
    assert torch.equal(refined(masks_per_sample(4, changed=0)), base)  # another sample's mask: no effect
    assert not torch.equal(refined(masks_per_sample(4, changed=2)), base)  # its own mask: used


def test_inpaint_conditioning_follows_its_samples(host):
    import nodes
    _, clip, vae = checkpoint()
    pixels = torch.rand(3, 64, 64, 3)
    masks = masks_per_sample(3)
    pos, _neg, _latent = nodes.InpaintModelConditioning().encode(text(clip, "a cat"), text(clip, ""), pixels, vae,
                                                                  masks, True)
    [(_, extra)] = pack(host, "nodes.conditioning").subset_conditioning(pos, [2], 3)
    [(_, whole)] = pos
    assert torch.equal(extra["concat_latent_image"], whole["concat_latent_image"][[2]])
    assert torch.equal(extra["concat_mask"], whole["concat_mask"][[2]])


def guided_student(host, w=8.0):
    return host.pack_nodes[P + "LoadGuidedStudent"]().load(TINY_GUIDED_SD15_UNET, w, "diffusers")[0]


def test_chained_retries_at_the_default_number_draw_fresh_noise_and_keep_each_samples_w(host):
    _, clip, vae = checkpoint()
    pos, neg = text(clip, "a red cube"), text(clip, "")
    guided = guided_student(host)
    student = pack(host, "nodes.student").student_sample(guided, pos, neg, {"samples": torch.zeros(2, 4, 8, 8)}, 1, 2,
                                                         1.0, w="3, 5")
    gate, retry = pack(host, "nodes.gate").gate, pack(host, "nodes.retry").retry_rejected
    first = gate(student, vae, RejectOnly([0, 1]), "a red cube", tau=0.0)
    once, _ = retry(guided, pos, neg, first.latent, 1, 2, 1.0, "lcm", 1, vae, first)
    second = gate(once, vae, RejectOnly([0, 1]), "a red cube", tau=0.0)
    twice, _ = retry(guided, pos, neg, second.latent, 1, 2, 1.0, "lcm", 1, vae, second)
    assert not torch.equal(once["samples"][0], twice["samples"][0])  # the second retry is not the first again
    records = pack(host, "schedulers.record").records_of(twice)
    assert [r.w for r in records] == [3.0, 5.0]  # an empty w box keeps each sample's w, not the loader's 8


def test_separate_student_weights_copies_a_guided_students_w_embedding(host):
    guided = guided_student(host)
    own = pack(host, "nodes.weights").with_own_weights(guided)
    assert own is not guided
    embed = own.get_model_object("diffusion_model.time_embed")
    copied = {id(p) for p in own.model.parameters()}
    shared = {id(p) for p in guided.model.parameters()}
    assert all(id(p) not in shared for p in embed.parameters())  # the patch wraps the copy's modules
    assert all(id(p) in copied for p in embed[0].parameters())


def test_the_guided_loader_refuses_truncated_and_unsafe_files_in_its_own_words(host, tmp_path):
    read_cond_proj = pack(host, "nodes.guidance").read_cond_proj
    errors = pack(host, "schedulers.errors")
    good = host.model_path("diffusion_models", TINY_GUIDED_SD15_UNET)
    data = open(good, "rb").read()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:len(data) // 2])
    header = tmp_path / "header.safetensors"
    header.write_bytes(data[:40])

    class Payload:
        def __reduce__(self):
            return (print, ("the payload ran",))

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"time_embedding.cond_proj.weight": Payload()}, unsafe)
    for path, words in ((cut, "truncated or corrupt"), (header, "truncated or corrupt"), (unsafe, "refused")):
        with pytest.raises(errors.InputError, match=f"unet_name: {path.name}: .*{words}") as e:
            read_cond_proj(str(path), "unet_name")
        assert "weights_only" not in str(e.value) and "deserializing" not in str(e.value)


def test_prompt_files_are_read_as_utf8_with_or_without_a_bom(host, tmp_path):
    prompts, errors = pack(host, "nodes.prompts"), pack(host, "schedulers.errors")
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffa café\nsecond".encode("utf-8"))
    assert prompts.read_prompt_file(str(bom)).splitlines() == ["a café", "second"]
    assert prompts.prompt_list("\ufeffa cat\nb", "none") == ["a cat", "b"]
    latin = tmp_path / "latin.txt"
    latin.write_bytes("un café".encode("latin-1"))
    with pytest.raises(errors.InputError, match=r"prompts_file: latin.txt is not UTF-8 text \(byte 6 is 0xe9\)"):
        prompts.read_prompt_file(str(latin))


def test_a_long_prompt_list_can_be_cancelled(host):
    import comfy.model_management as mm
    _, clip, _ = checkpoint()
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            host.pack_nodes[P + "EncodePrompts"]().encode(clip, "\n".join(["a cat"] * 50), "none", 0)
    finally:
        mm.interrupt_current_processing(False)


def test_best_of_names_each_students_own_input_and_refuses_mixed_families(host):
    model, clip, vae = checkpoint()
    sdxl = checkpoint(TINY_SDXL)[0]
    errors = pack(host, "schedulers.errors")
    pos = host.pack_nodes[P + "EncodePrompts"]().encode(clip, "a cat\na dog", "none", 0)[0]
    router = host.pack_nodes[P + "RouteStudents"]()
    latent = {"samples": torch.zeros(2, 4, 8, 8)}
    with pytest.raises(errors.InputError, match="student_2: is a SDXL model but student_1 is SD15"):
        router.run(pos, text(clip, ""), latent, 1, 2, 1.0, "lcm", "best_of", 1, student_1=model, student_2=sdxl,
                   vae=vae, oracle=RejectOnly([]))
    best_of = pack(host, "nodes.routing").best_of_students
    with pytest.raises(errors.InputError, match="student_2 \\(SDXL\\)"):  # the input at fault, by its own name
        best_of([model, sdxl], pos, text(clip, ""), latent, dict(seed=1, steps=2, cfg=1.0, schedule="lcm"), vae,
                RejectOnly([]))


ROUTED = ["a red cube on a table", "a cat", "an anime girl with blue hair", "a city at night"]


def test_routed_students_are_calibrated_on_their_own_share_and_the_gate_checks_whose_file(host):
    import json
    import os
    import nodes
    model, clip, vae = checkpoint()
    lora = nodes.LoraLoaderModelOnly().load_lora_model_only(model, TINY_LCM_LORA_SD15, 1.0)[0]
    oracle = pack(host, "nodes.oracle_nodes").load_oracle(TINY_IMAGE_REWARD, "cpu", "fp32")
    calibrate = host.pack_nodes[P + "CalibrateThreshold"]()
    summary = calibrate.run(model, clip, vae, oracle, "\n".join(ROUTED), "none", 0, "", 64, 64, 2, 1.0, "lcm", 0, 4,
                            "round3_routed", student_2=lora, route="keywords", rules="2: cat|anime")["result"][1]
    assert "student 2 (routed: 2 of 4 prompts)" in summary
    cal_dir = host.folder_paths.get_folder_paths("image_reward_calibration")[0]
    host.folder_paths.filename_list_cache.pop("image_reward_calibration", None)
    metas = [json.load(open(os.path.join(cal_dir, f"round3_routed_student{i}.json")))["metadata"] for i in (1, 2)]
    assert [m["prompt_count"] for m in metas] == [2, 2]
    assert [m["samples"]["prompt_index"] for m in metas] == [[0, 3], [1, 2]]
    # student 2's score of prompt 1 is the score of the sample the router makes for it (batch index 1)
    routed = host.pack_nodes[P + "RouteStudents"]().run(
        host.pack_nodes[P + "EncodePrompts"]().encode(clip, "\n".join(ROUTED), "none", 0)[0], text(clip, ""),
        {"samples": torch.zeros(4, 4, 8, 8)}, 0, 2, 1.0, "lcm", "keywords", 1, student_1=model, student_2=lora,
        rules="2: cat|anime")["result"][0]
    gate = pack(host, "nodes.gate").gate
    decision = gate(routed, vae, oracle, "", "percentile", k=50, calibration="round3_routed_student1.json",
                    student_calibrations=["round3_routed_student2.json"])
    scores = dict(zip(metas[1]["samples"]["prompt_index"], metas[1]["samples"]["score"]))
    assert abs(decision.scores[1].item() - scores[1]) < 1e-4
    errors = pack(host, "schedulers.errors")
    with pytest.raises(errors.InputError, match="calibration: round3_routed_student2.json was calibrated for "
                                                "student 2 .* but the samples come from student 1"):
        gate(routed, vae, oracle, "", "percentile", k=50, calibration="round3_routed_student2.json",
             student_calibrations=["round3_routed_student2.json"])


class CountingVAE:
    """Another VAE (the same weights behind it): counts the samples it decodes."""

    def __init__(self, vae):
        self.vae, self.decoded, self.latent_channels = vae, 0, vae.latent_channels

    def decode(self, samples):
        self.decoded += samples.shape[0]
        return self.vae.decode(samples)


def test_a_stage_with_another_vae_decodes_again_and_a_single_prompt_teacher_warns(host):
    from comfyui_harness import capture_logs
    model, clip, vae = checkpoint()
    prompts = host.pack_nodes[P + "EncodePrompts"]().encode(clip, "a cat\na dog\na car", "none", 0)[0]
    student = pack(host, "nodes.student").student_sample(model, prompts, text(clip, ""),
                                                         {"samples": torch.zeros(3, 4, 8, 8)}, 1, 2, 1.0)
    gate = pack(host, "nodes.gate").gate
    first = gate(student, vae, RejectOnly([1, 2]), "", tau=0.0)
    other = CountingVAE(vae)
    again = gate(first.latent, other, RejectOnly([]), "", tau=0.0)
    assert other.decoded == 3  # the first gate's images are its VAE's, not this one's
    assert gate(again.latent, other, RejectOnly([]), "", tau=0.0) and other.decoded == 3  # its own: reused
    improve = pack(host, "nodes.teacher").improve
    teacher_vae = CountingVAE(vae)
    with capture_logs() as logs:
        improve(model, text(clip, "one prompt"), text(clip, ""), first.latent, "refine", "strength", 0.5, 2, "euler",
                "normal", 1.0, 5, teacher_vae, first)
    assert teacher_vae.decoded == 3  # the 2 improved and the kept one, whose gate image is another VAE's
    assert any("made from 2 different prompts" in line for line in logs)

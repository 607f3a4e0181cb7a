"""Tier 2: every model family, every few-step student (issue "every model family").

Students run with ComfyUI's own samplers (schedule 'sampler') and keep the pack's guarantees (a sample
never changes when others join its batch, also with stochastic samplers); refine and regenerate with
flow teachers (FLUX, SD3, Qwen-Image) roll back to the same noise level as in the VE frame; Rollback
Noise + SamplerCustom equals refine in every family; a teacher of another family works through pixels;
wrong pairings are refused with the pack's message."""
import pytest
import torch

from student_teacher.schedulers.errors import InputError
from student_teacher.schedulers.record import records_of
from student_teacher.schedulers.rollback import vp_sigma
from tiny_models import (TINY_FLUX_DEV, TINY_FLUX_SCHNELL, TINY_QWEN_IMAGE, TINY_SD3, TINY_SD15, TINY_SDXL,
                         TINY_VAE_FLUX, TINY_VAE_QWEN_IMAGE, TINY_VAE_SD3)


@pytest.fixture(scope="module")
def host(comfy):
    for name in (TINY_SD15, TINY_SDXL):
        comfy.tiny(name)
    return comfy


# the pack's nodes import ComfyUI: only once the host has started
def student_sample(*args, **kwargs):
    from student_teacher.nodes.student import student_sample
    return student_sample(*args, **kwargs)


def improve(*args, **kwargs):
    from student_teacher.nodes.teacher import improve
    return improve(*args, **kwargs)


def add_rollback_noise(*args, **kwargs):
    from student_teacher.nodes.rollback import add_rollback_noise
    return add_rollback_noise(*args, **kwargs)


def checkpoint(name, prompt="a red cube on a table"):
    import nodes as comfy_nodes
    model, clip, vae = comfy_nodes.CheckpointLoaderSimple().load_checkpoint(name)[:3]
    encode = comfy_nodes.CLIPTextEncode().encode
    return model, vae, encode(clip, prompt)[0], encode(clip, "blurry")[0]


def empty(batch, channels=4, size=8):
    return {"samples": torch.zeros(batch, channels, size, size), "batch_index": list(range(batch))}


def alone(latent, i):
    return {"samples": latent["samples"][i:i + 1], "batch_index": [latent["batch_index"][i]]}


# --- any few-step student, with ComfyUI's samplers --------------------------------------------------

@pytest.mark.parametrize("sampler,scheduler", [("euler", "sgm_uniform"), ("euler_ancestral", "simple"),
                                               ("lcm", "sgm_uniform"), ("dpmpp_2m_sde", "karras")])
def test_sampler_student_sample_is_independent_of_its_batch(host, sampler, scheduler):
    model, _, pos, neg = checkpoint(TINY_SD15)
    latent = empty(3)
    batch = student_sample(model, pos, neg, latent, 5, 4, 1.0, "sampler", sampler_name=sampler, scheduler=scheduler)
    for i in (0, 2):
        one = student_sample(model, pos, neg, alone(latent, i), 5, 4, 1.0, "sampler", sampler_name=sampler,
                             scheduler=scheduler)
        torch.testing.assert_close(one["samples"][0], batch["samples"][i], rtol=1e-4, atol=1e-4)
    record = records_of(batch)[0]
    assert record.cost == 4
    assert record.last("student").settings["sampler"] == sampler
    assert record.last("student").settings["scheduler"] == scheduler


def test_stochastic_sampler_student_draws_from_its_own_stream(host):
    """Another seed changes the re-noise; the same seed repeats it exactly."""
    model, _, pos, neg = checkpoint(TINY_SD15)
    run = lambda seed: student_sample(model, pos, neg, empty(2), seed, 4, 1.0, "sampler",
                                      sampler_name="euler_ancestral")["samples"]
    assert torch.equal(run(3), run(3))
    assert not torch.allclose(run(3), run(4))


def test_x0_prediction_student(host):
    """SDXL-Lightning's 1-step UNet predicts x0: core ModelSamplingDiscrete x0, then schedule 'sampler'."""
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete
    model, _, pos, neg = checkpoint(TINY_SDXL)
    x0_model = ModelSamplingDiscrete().patch(model, "x0", False)[0]
    out = student_sample(x0_model, pos, neg, empty(2), 1, 1, 1.0, "sampler", sampler_name="euler",
                         scheduler="sgm_uniform")["samples"]
    assert torch.isfinite(out).all()
    eps = student_sample(model, pos, neg, empty(2), 1, 1, 1.0, "sampler", sampler_name="euler",
                         scheduler="sgm_uniform")["samples"]
    assert not torch.allclose(out, eps)


# --- a teacher of another family, through pixels ------------------------------------------------------

def test_teacher_of_another_family_improves_through_pixels(host):
    """SD1.5 student, SDXL teacher: rejected rows are encoded with the teacher's VAE, improved at the
    student's pixel size and decoded with it; the LATENT stays SD1.5 (re-encoded); kept rows untouched."""
    student, vae, pos, neg = checkpoint(TINY_SD15)
    teacher, teacher_vae, tpos, tneg = checkpoint(TINY_SDXL)
    latent = student_sample(student, pos, neg, empty(3), 2, 2, 1.0, "lcm")
    with pytest.raises(InputError, match="teacher_vae: the teacher is a SDXL model, the samples are SD15"):
        improve(teacher, tpos, tneg, latent, "refine", "vp", 0.5, 2, "euler", "normal", 2.0, 7, vae)
    with pytest.raises(InputError, match="positive: is 768 wide but model .SDXL. expects 2048"):
        improve(teacher, pos, neg, latent, "refine", "vp", 0.5, 2, "euler", "normal", 2.0, 7, vae,
                teacher_vae=teacher_vae)
    out, todo = improve(teacher, tpos, tneg, latent, "refine", "vp", 0.5, 2, "euler", "normal", 2.0, 7, vae,
                        teacher_vae=teacher_vae)
    assert todo == [0, 1, 2]
    assert out["samples"].shape == latent["samples"].shape  # SD1.5 latents, SD1.5 size
    records = records_of(out)
    assert {r.latent_format for r in records} == {"SD15"}
    assert records[0].last("teacher").settings["teacher_family"] == "SDXL"
    # each improved row is its own: equal alone and in the batch
    one, _ = improve(teacher, tpos, tneg, _rows(latent, [1]), "refine", "vp", 0.5, 2, "euler", "normal", 2.0, 7,
                     vae, teacher_vae=teacher_vae)
    torch.testing.assert_close(one["samples"][0], out["samples"][1], rtol=1e-3, atol=1e-3)


def _rows(latent, rows):
    """The sub-LATENT of `rows` with their records (as a node downstream of LatentFromBatch sees it)."""
    from student_teacher.schedulers.record import with_records
    sub = {"samples": latent["samples"][rows], "batch_index": [latent["batch_index"][i] for i in rows]}
    return with_records(sub, [records_of(latent)[i] for i in rows])


# --- the same rollback noise level in every frame ------------------------------------------------------

@pytest.mark.parametrize("s", [0.3, 0.6])
def test_vp_rollback_on_a_ve_teacher_starts_at_the_ve_sigma(host, s):
    teacher, _, _, _ = checkpoint(TINY_SD15)
    latent = {"samples": torch.randn(1, 4, 8, 8), "batch_index": [0]}
    _, sigmas = add_rollback_noise(teacher, latent, "vp", s, 4, "euler", "normal", 0)
    assert float(sigmas[0]) == pytest.approx(vp_sigma(s, "ve"), rel=1e-5)


# --- flow families: FLUX.1 (schnell student, dev teacher), SD3, Qwen-Image -----------------------------
# The tiny transformers have their family's real width (ComfyUI's detection fixes it) and one or two blocks;
# their conditioning is made here at the width each expects (tests/support/tiny_models.py says why).

FLOW = {  # family -> (student file, teacher file, VAE file, conditioning width, pooled width, latent shape)
    "flux": (TINY_FLUX_SCHNELL, TINY_FLUX_DEV, TINY_VAE_FLUX, 4096, 768, (16, 8, 8)),
    "sd3": (TINY_SD3, TINY_SD3, TINY_VAE_SD3, 4096, 2048, (16, 8, 8)),
    "qwen_image": (TINY_QWEN_IMAGE, TINY_QWEN_IMAGE, TINY_VAE_QWEN_IMAGE, 3584, None, (16, 1, 8, 8)),
}


@pytest.fixture(scope="module")
def flow_host(host):
    for student, teacher, vae, *_ in FLOW.values():
        for name in (student, teacher, vae):
            host.tiny(name)
    return host


def unet(name):
    import nodes as comfy_nodes
    return comfy_nodes.UNETLoader().load_unet(name, "default")[0]


def conditioning(family, seed, guidance=None):
    """[[cond, extras]] of the family's widths: one row per prompt (a prompt is a seed here)."""
    *_, width, pooled, _shape = FLOW[family]
    g = torch.Generator().manual_seed(seed)
    extras = {}
    if pooled:
        extras["pooled_output"] = torch.randn(1, pooled, generator=g)
    if guidance is not None:
        extras["guidance"] = guidance
    return [[torch.randn(1, 12, width, generator=g), extras]]


def flow_latent(family, batch):
    return {"samples": torch.zeros((batch,) + FLOW[family][5]), "batch_index": list(range(batch))}


def flow_pair(family):
    """(student, teacher, student conditioning, teacher conditioning): the teacher of FLUX is FLUX.1-dev with
    FluxGuidance 3.5 in its conditioning, the others run real cfg."""
    student_file, teacher_file, *_ = FLOW[family]
    guidance = 3.5 if family == "flux" else None
    return (unet(student_file), unet(teacher_file), (conditioning(family, 1), conditioning(family, 2)),
            (conditioning(family, 1, guidance), conditioning(family, 2, guidance)))


@pytest.mark.parametrize("family", list(FLOW))
@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral"])
def test_flow_student_sample_is_independent_of_its_batch(flow_host, family, sampler):
    student, _, (pos, neg), _ = flow_pair(family)
    latent = flow_latent(family, 3)
    batch = student_sample(student, pos, neg, latent, 4, 2, 1.0, "sampler", sampler_name=sampler, scheduler="simple")
    one = student_sample(student, pos, neg, alone(latent, 2), 4, 2, 1.0, "sampler", sampler_name=sampler,
                         scheduler="simple")
    assert torch.isfinite(batch["samples"]).all()
    torch.testing.assert_close(one["samples"][0], batch["samples"][2], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(batch["samples"][0], batch["samples"][1])


@pytest.mark.parametrize("family", list(FLOW))
def test_flow_student_refuses_the_consistency_schedules(flow_host, family):
    student, _, (pos, neg), _ = flow_pair(family)
    with pytest.raises(InputError, match="model: schedule lcm needs a discrete-time .* Fix: set schedule to sampler"):
        student_sample(student, pos, neg, flow_latent(family, 1), 1, 2, 1.0, "lcm")


@pytest.mark.parametrize("family", list(FLOW))
@pytest.mark.parametrize("strategy", ["refine", "regenerate"])
def test_flow_teacher_refines_and_regenerates_each_sample_on_its_own(flow_host, family, strategy):
    student, teacher, (pos, neg), (tpos, tneg) = flow_pair(family)
    latent = student_sample(student, pos, neg, flow_latent(family, 2), 4, 2, 1.0, "sampler")
    cfg = 1.0 if family == "flux" else 3.0
    import nodes as comfy_nodes
    vae = comfy_nodes.VAELoader().load_vae(FLOW[family][2])[0]
    source = flow_latent(family, 2)
    out, todo = improve(teacher, tpos, tneg, latent, strategy, "vp", 0.5, 2, "euler", "simple", cfg, 9, vae,
                        source_latent=source)
    assert todo == [0, 1] and torch.isfinite(out["samples"]).all()
    assert not torch.allclose(out["samples"], latent["samples"])
    one, _ = improve(teacher, tpos, tneg, _rows(latent, [1]), strategy, "vp", 0.5, 2, "euler", "simple", cfg, 9,
                     vae, source_latent=alone(source, 1))
    torch.testing.assert_close(one["samples"][0], out["samples"][1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", list(FLOW))
@pytest.mark.parametrize("mode,amount", [("vp", 0.5), ("strength", 0.5)])
def test_flow_rollback_noise_with_core_sampler_custom_equals_refine(flow_host, family, mode, amount):
    """Rollback Noise -> SamplerCustom (add_noise off) is refine; vp starts at the flow frame's t."""
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import SamplerCustom
    _, teacher, _, (tpos, tneg) = flow_pair(family)
    g = torch.Generator().manual_seed(1)
    latent = {"samples": torch.randn((2,) + FLOW[family][5], generator=g), "batch_index": [0, 1]}
    noised, sigmas = add_rollback_noise(teacher, latent, mode, amount, 3, "euler", "simple", 5)
    if mode == "vp":
        assert float(sigmas[0]) == pytest.approx(vp_sigma(amount, "flow"), rel=1e-5)  # 0.5, not 1.0 (pure noise)
    cfg = 1.0 if family == "flux" else 3.0
    core = SamplerCustom().sample(teacher, False, 0, cfg, tpos, tneg, comfy.samplers.sampler_object("euler"),
                                  sigmas, noised)[0]["samples"]
    refined, _ = improve(teacher, tpos, tneg, latent, "refine", mode, amount, 3, "euler", "simple", cfg, 5,
                         _FakeVae())
    torch.testing.assert_close(core, refined["samples"], rtol=1e-4, atol=1e-4)


class _FakeVae:
    """Decodes to grey (the test compares latents only)."""
    def decode(self, samples):
        return torch.full((samples.shape[0], 8, 8, 3), 0.5)


def test_flow_noise_is_diffusers_scale_noise_at_the_vp_level(flow_host):
    """In ComfyUI, the pack's rollback state on a flow teacher is diffusers' scale_noise at t = vp_sigma(s)."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from student_teacher.nodes.noise import noised_latent, rollback_noise
    _, teacher, _, _ = flow_pair("sd3")
    g = torch.Generator().manual_seed(2)
    latent = {"samples": torch.randn(2, 16, 8, 8, generator=g), "batch_index": [0, 1]}
    s = 0.6
    _, sigmas = add_rollback_noise(teacher, latent, "vp", s, 3, "euler", "simple", 5)
    t = vp_sigma(s, "flow")
    assert float(sigmas[0]) == pytest.approx(t, rel=1e-6)
    z = rollback_noise(5, [0, 1], (16, 8, 8))
    noised = {"samples": noised_latent(teacher, latent["samples"], z, sigmas[0])}  # what refine samples from
    process_in = teacher.get_model_object("process_latent_in")
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    sched.set_timesteps(sigmas=[t, t / 2])
    reference = sched.scale_noise(process_in(latent["samples"]), sched.timesteps[:1].repeat(2), z)
    torch.testing.assert_close(process_in(noised["samples"]), reference, rtol=1e-5, atol=1e-5)


def test_flow_wrong_pairings_are_refused(flow_host):
    flux, _, (pos, neg), _ = flow_pair("flux")
    qwen_pos = conditioning("qwen_image", 1)
    with pytest.raises(InputError, match="positive: is 3584 wide but model .Flux. expects 4096"):
        student_sample(flux, qwen_pos, neg, flow_latent("flux", 1), 1, 2, 1.0, "sampler")
    with pytest.raises(InputError, match="latent_image: has 4 channels, model .Flux. works in 16"):
        student_sample(flux, pos, neg, {"samples": torch.randn(1, 4, 8, 8)}, 1, 2, 1.0, "sampler")
    # an SD3 teacher on FLUX samples: both 16 channels, other latent spaces
    sd3, _, _, (tpos, tneg) = flow_pair("sd3")
    latent = student_sample(flux, pos, neg, flow_latent("flux", 1), 1, 2, 1.0, "sampler")
    with pytest.raises(InputError, match="teacher_vae: the teacher is a SD3 model, the samples are Flux latents"):
        improve(sd3, tpos, tneg, latent, "refine", "vp", 0.5, 2, "euler", "simple", 3.0, 1, _FakeVae())


def test_sdxl_student_flux_dev_teacher_through_pixels(flow_host):
    """The issue's cross-family example: an SDXL(-Lightning) student, a FLUX.1-dev teacher."""
    import nodes as comfy_nodes
    student, vae, pos, neg = checkpoint(TINY_SDXL)
    _, teacher, _, (tpos, tneg) = flow_pair("flux")
    flux_vae = comfy_nodes.VAELoader().load_vae(TINY_VAE_FLUX)[0]
    latent = student_sample(student, pos, neg, empty(2), 3, 2, 1.0, "sampler", scheduler="sgm_uniform")
    out, todo = improve(teacher, tpos, tneg, latent, "refine", "vp", 0.5, 2, "euler", "simple", 1.0, 4, vae,
                        teacher_vae=flux_vae)
    assert todo == [0, 1] and out["samples"].shape == latent["samples"].shape
    assert records_of(out)[1].last("teacher").settings["teacher_family"] == "Flux"

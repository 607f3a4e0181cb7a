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
from tiny_models import TINY_SD15, TINY_SDXL


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

"""Rollback maths on a synthetic scheduler; tier 2 checks them against ComfyUI's KSampler."""
import math

import pytest
import torch

from student_teacher.schedulers.errors import InputError
from student_teacher.schedulers.rollback import rollback_sigmas, strength_sigmas, vp_sigma, vp_sigmas

SIGMA_MAX, SIGMA_MIN = 14.6146, 0.0292


def karras_like(n):
    """A descending schedule from SIGMA_MAX to SIGMA_MIN, then 0 (log-linear)."""
    s = torch.exp(torch.linspace(math.log(SIGMA_MAX), math.log(SIGMA_MIN), n))
    return torch.cat([s, torch.zeros(1)])


@pytest.mark.parametrize("s,sigma", [(0.5, 1.0), (0.7, 1.5275), (0.2, 0.5)])
def test_vp_sigma(s, sigma):
    assert vp_sigma(s) == pytest.approx(sigma, rel=1e-4)


def test_vp_sigma_inverse_relation():
    # x = sqrt(1-s) x0 + sqrt(s) z, divided by sqrt(1-s), is x0 + sigma z
    for s in (0.1, 0.4, 0.85):
        sig = vp_sigma(s)
        assert math.sqrt(s) / math.sqrt(1 - s) == pytest.approx(sig)


def test_strength_is_ksampler_denoise():
    out = strength_sigmas(karras_like, 10, 0.5)
    assert torch.equal(out, karras_like(20)[-11:])
    assert torch.equal(strength_sigmas(karras_like, 7, 1.0), karras_like(7))
    assert len(strength_sigmas(karras_like, 12, 0.85)) == 13


@pytest.mark.parametrize("steps,s", [(5, 0.5), (12, 0.85), (4, 0.3), (10, 0.7)])
def test_vp_sigmas_start_exactly_and_follow_the_scheduler(steps, s):
    out = vp_sigmas(karras_like, steps, s)
    assert len(out) == steps + 1
    assert float(out[0]) == pytest.approx(vp_sigma(s), rel=1e-6)
    assert float(out[-1]) == 0.0
    assert bool((out[:-1] > out[1:]).all()), "strictly descending"


def test_vp_rollback_above_the_schedule_runs_the_full_schedule():
    assert torch.equal(vp_sigmas(karras_like, 6, 1.0), karras_like(6))
    assert torch.equal(vp_sigmas(karras_like, 6, 0.999), karras_like(6))


@pytest.mark.parametrize("value", [0.0, -0.1, 1.2])
def test_rollback_outside_unit_interval_is_an_error(value):
    for mode in ("strength", "vp"):
        with pytest.raises(InputError, match=r"rollback.*\(0, 1\]"):
            rollback_sigmas(mode, karras_like, 5, value)


def test_bad_mode_and_steps():
    with pytest.raises(InputError, match="rollback_mode"):
        rollback_sigmas("linear", karras_like, 5, 0.5)
    with pytest.raises(InputError, match="teacher_steps"):
        rollback_sigmas("strength", karras_like, 0, 0.5)


# --- the same noise level in every model family -------------------------------------------------------

@pytest.mark.parametrize("s,t", [(0.1, 0.25), (0.3, 0.3956), (0.5, 0.5), (0.7, 0.6044), (0.9, 0.75)])
def test_vp_in_the_flow_frame(s, t):
    assert vp_sigma(s, "flow") == pytest.approx(t, abs=1e-4)


@pytest.mark.parametrize("s", [0.02, 0.1, 0.3, 0.5, 0.7, 0.85, 0.98])
def test_vp_means_the_same_snr_in_both_frames(s):
    """Algorithm 1's state has SNR (1-s)/s; both frames' sigmas give exactly that."""
    from student_teacher.schedulers.rollback import snr
    assert snr(vp_sigma(s, "ve"), "ve") == pytest.approx((1 - s) / s, rel=1e-9)
    assert snr(vp_sigma(s, "flow"), "flow") == pytest.approx((1 - s) / s, rel=1e-9)


def test_the_ve_sigma_read_as_a_flow_sigma_would_be_another_level():
    """What the old code did on flow models: s = 0.5 gave sigma 1.0, pure noise (a regeneration)."""
    assert vp_sigma(0.5, "ve") == pytest.approx(1.0)
    assert vp_sigma(0.5, "flow") == pytest.approx(0.5)


@pytest.mark.parametrize("s", [0.1, 0.5, 0.85])
def test_flow_state_is_the_vp_state_rescaled_and_equals_diffusers_scale_noise(s):
    """x_flow = x_vp / (sqrt(s) + sqrt(1-s)) is diffusers' FlowMatchEulerDiscreteScheduler.scale_noise
    at sigma t = vp_sigma(s, 'flow') (the peer's flow img2img noising)."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    g = torch.Generator().manual_seed(3)
    x0, z = torch.randn(2, 16, 8, 8, generator=g), torch.randn(2, 16, 8, 8, generator=g)
    x_vp = math.sqrt(1 - s) * x0 + math.sqrt(s) * z
    t = vp_sigma(s, "flow")
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    sched.set_timesteps(sigmas=[t, t / 2])
    reference = sched.scale_noise(x0, sched.timesteps[:1].repeat(2), z)
    torch.testing.assert_close(x_vp / (math.sqrt(s) + math.sqrt(1 - s)), reference, rtol=0, atol=1e-5)
    # and the test can fail: the ve sigma used as a flow sigma is not that state
    wrong = vp_sigma(s, "ve")
    assert not torch.allclose((1 - wrong) * x0 + wrong * z, reference, atol=1e-2)


def flow_like(n, shift=3.0):
    """ComfyUI's simple schedule on a shifted flow model: t linear in (1, 0], sigma = a t / (1 + (a-1) t)."""
    t = torch.linspace(1.0, 0.0, n + 1)[:-1]
    return torch.cat([shift * t / (1 + (shift - 1) * t), torch.zeros(1)])


@pytest.mark.parametrize("steps,s", [(4, 0.5), (8, 0.3), (4, 0.9)])
def test_vp_sigmas_on_a_flow_schedule_start_at_the_flow_level(steps, s):
    out = rollback_sigmas("vp", flow_like, steps, s, frame="flow")
    assert len(out) == steps + 1 and float(out[-1]) == 0.0
    assert float(out[0]) == pytest.approx(vp_sigma(s, "flow"), rel=1e-6)
    assert bool((out[:-1] > out[1:]).all())


def test_strength_is_the_same_fraction_of_the_timestep_axis_in_every_frame():
    """strength stays KSampler's denoise: on a shifted flow schedule it starts far higher than the vp level."""
    out = rollback_sigmas("strength", flow_like, 4, 0.5, frame="flow")
    assert torch.equal(out, flow_like(8)[-5:])
    assert float(out[0]) == pytest.approx(0.75, abs=1e-6)


@pytest.mark.parametrize("frame", ["ve", "flow"])
@pytest.mark.parametrize("s", [0.05, 0.3, 0.5, 0.77, 0.95])
def test_vp_level_inverts_vp_sigma(frame, s):
    from student_teacher.schedulers.rollback import vp_level
    assert vp_level(vp_sigma(s, frame), frame) == pytest.approx(s, rel=1e-9)

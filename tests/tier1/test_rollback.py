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

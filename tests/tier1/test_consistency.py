"""Consistency timesteps and boundary condition, checked against diffusers itself."""
import pytest
import torch

from student_teacher.schedulers.consistency import (boundary_scalings, consistency_denoised, consistency_sample,
                                    lcm_timesteps, trailing_timesteps)
from student_teacher.schedulers.errors import InputError

diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize("steps", range(1, 9))
def test_lcm_timesteps_equal_diffusers(steps):
    ref = diffusers.LCMScheduler()
    ref.set_timesteps(steps)
    assert lcm_timesteps(steps) == ref.timesteps.tolist()


def test_lcm_timesteps_known_values():
    assert lcm_timesteps(1) == [999]
    assert lcm_timesteps(2) == [999, 499]
    assert lcm_timesteps(4) == [999, 759, 499, 259]
    assert lcm_timesteps(8) == [999, 879, 759, 639, 499, 379, 259, 139]


@pytest.mark.parametrize("steps,strength", [(4, 0.6), (2, 0.5), (5, 0.8), (3, 0.3)])
def test_lcm_timesteps_with_strength_equal_diffusers(steps, strength):
    ref = diffusers.LCMScheduler()
    ref.set_timesteps(steps, strength=strength)
    assert lcm_timesteps(steps, strength=strength) == ref.timesteps.tolist()


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 6])
def test_trailing_timesteps_equal_diffusers(steps):
    ref = diffusers.EulerAncestralDiscreteScheduler(timestep_spacing="trailing")
    ref.set_timesteps(steps)
    assert trailing_timesteps(steps) == [int(t) for t in ref.timesteps.tolist()]


@pytest.mark.parametrize("t", [0, 19, 259, 499, 999])
def test_boundary_scalings_equal_diffusers(t):
    ref = diffusers.LCMScheduler()
    assert boundary_scalings(t) == pytest.approx(ref.get_scalings_for_boundary_condition_discrete(t), rel=1e-12)


def test_consistency_denoised_matches_diffusers_step():
    """diffusers applies c_skip to the VP latent; our VE-latent form must agree."""
    ref = diffusers.LCMScheduler()
    ref.set_timesteps(4)
    t = 259
    abar = ref.alphas_cumprod[t].double()
    sigma = torch.sqrt((1 - abar) / abar)
    x0 = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    eps = torch.randn_like(x0)
    x_vp = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    c_skip, c_out = ref.get_scalings_for_boundary_condition_discrete(t)
    expected = c_out * x0 + c_skip * x_vp
    got = consistency_denoised(x0, x0 + sigma * eps, sigma.expand(2), torch.tensor([t, t]))
    assert torch.allclose(got, expected, atol=1e-12)


def test_consistency_sample_jumps_and_renoises():
    calls = []

    def denoise(x, sigma):
        calls.append(float(sigma))
        return torch.zeros_like(x) + float(sigma)

    out = consistency_sample(denoise, torch.ones(2, 1), [3.0, 2.0, 0.0], lambda i: torch.full((2, 1), 10.0))
    assert calls == [3.0, 2.0]
    assert torch.equal(out, torch.full((2, 1), 2.0))  # the last step returns x0 without noise


def test_bad_steps_are_named():
    with pytest.raises(InputError, match="steps"):
        lcm_timesteps(0)
    with pytest.raises(InputError, match="steps"):
        lcm_timesteps(60)
    with pytest.raises(InputError, match="denoise"):
        lcm_timesteps(4, strength=1.5)



def test_no_schedule_runs_a_timestep_twice():
    with pytest.raises(InputError, match="steps: 11 steps do not fit in the 10 timesteps"):
        trailing_timesteps(11, strength=0.01)
    assert trailing_timesteps(10, strength=0.01) == list(range(9, -1, -1))
    with pytest.raises(InputError, match="denoise: denoise 0.01 leaves none .* at least 0.02"):
        lcm_timesteps(1, strength=0.01)

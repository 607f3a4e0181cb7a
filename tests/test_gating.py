import math

import pytest
import torch

from schedulers.batching import batch_indices, put_rows, take_rows
from schedulers.errors import InputError
from schedulers.gating import decide, percentile_threshold, resolve_threshold, spent_steps
from schedulers.noise import PerSampleNoise

TAUS = {10: -0.6, 50: 0.6, 70: 1.09}


def test_samples_under_tau_go_to_the_teacher():
    d = decide(torch.tensor([0.5, 0.7, 0.6, -1.0]), resolve_threshold("tau", tau=0.6), [0, 1, 2, 3])
    assert d.accepted.tolist() == [False, True, True, False]
    assert d.rejected == [0, 3]
    assert d.acceptance_rate == 0.5
    assert "to teacher" in "\n".join(d.lines())


def test_percentile_and_budget_modes():
    assert resolve_threshold("percentile", k=70, taus=TAUS).tau == 1.09
    t = resolve_threshold("budget", budget=10, student_steps=4, teacher_steps=12, taus=TAUS)
    assert (t.k, t.tau) == (50, 0.6)


def test_extreme_percentiles_need_no_calibration_entry():
    assert percentile_threshold(TAUS, 0).tau == -math.inf
    assert percentile_threshold(TAUS, 100).tau == math.inf


def test_missing_percentile_names_the_available_ones():
    with pytest.raises(InputError, match=r"no 30th percentile.*\[10, 50, 70\]"):
        resolve_threshold("percentile", k=30, taus=TAUS, source="lcm.json")


def test_percentile_mode_without_calibration():
    with pytest.raises(InputError, match="calibration"):
        resolve_threshold("percentile", k=50, taus=None)


def test_spent_steps():
    assert spent_steps(4, 12, 2, 4) == 10


def test_rows_in_and_out():
    base = torch.arange(8.0).reshape(4, 2)
    assert torch.equal(take_rows(base, [1, 3], 4), base[[1, 3]])
    assert take_rows(base[:1], [1, 3], 4).shape[0] == 1  # broadcast rows pass through
    out = put_rows(base, [1, 3], torch.zeros(2, 2))
    assert torch.equal(out[[0, 2]], base[[0, 2]]) and not out[[1, 3]].any()
    with pytest.raises(InputError, match="latent"):
        put_rows(base, [1], torch.zeros(2, 2))


def test_batch_indices():
    x = torch.zeros(3, 4, 8, 8)
    assert batch_indices({"samples": x}) == [0, 1, 2]
    assert batch_indices({"samples": x, "batch_index": [5, 6, 7]}) == [5, 6, 7]
    with pytest.raises(InputError, match="batch_index"):
        batch_indices({"samples": x, "batch_index": [1]})


def test_noise_depends_only_on_seed_index_and_step():
    big = PerSampleNoise(7, [0, 1, 2, 3], (4, 8, 8))
    alone = PerSampleNoise(7, [2], (4, 8, 8))
    a, b = big(), big()
    assert torch.equal(a[2], alone()[0]) and torch.equal(b[2], alone()[0])
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0], b[0])
    assert not torch.equal(PerSampleNoise(8, [0], (4,)).draw(1), PerSampleNoise(7, [0], (4,)).draw(1))

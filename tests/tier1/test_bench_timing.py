"""bench/pipeline_timing.py: the threshold that makes every benchmarked pipeline refine the same share,
and the clock that splits a run into model evaluations."""
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))
from pipeline_timing import Clock, tau_for  # noqa: E402


@pytest.mark.parametrize("k", [0, 10, 50, 51, 99, 100])
@pytest.mark.parametrize("n", [1, 4, 8])
def test_tau_sends_exactly_ceil_n_k_samples_below_it(n, k):
    scores = [((i * 7919) % 13) / 3.0 - 2 for i in range(n)]
    if len(set(scores)) < n:
        pytest.skip("tied scores")
    tau = tau_for(scores, k)
    assert sum(score < tau for score in scores) == math.ceil(n * k / 100)


def test_a_tie_at_the_cut_is_refused():
    with pytest.raises(ValueError, match="tie"):
        tau_for([1.0, 1.0], 50)


def test_nested_timed_calls_count_once():
    clock = Clock("cpu")
    inner = clock.wrapped(lambda: None, "student")
    outer = clock.wrapped(lambda: inner(), "vae")
    outer()
    assert set(clock.seconds) == {"vae"}
    row = clock.row("x", 2, wall=clock.seconds["vae"] * 2, peak_bytes=0, refined=0.5)
    assert row["wall_over_models"] == pytest.approx(2.0) and row["images_per_s"] > 0

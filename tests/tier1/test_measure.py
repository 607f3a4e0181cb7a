"""Student against teacher from per-prompt data: the adaptive curve, win rates and the k a user asks for."""
import math

import numpy as np
import pytest

from student_teacher.schedulers.errors import InputError
from student_teacher.schedulers.measure import (adaptive_curve, best_for_budget, best_k, cheapest_within,
                                                gated_result, win_rate)


def data(n=200, seed=0):
    """Gate scores correlated with the judge's view of the student; the improved sample is better on
    average, and worse for some prompts (the paper's point: some students beat their teacher)."""
    rng = np.random.default_rng(seed)
    gate = rng.normal(size=n)
    student = 0.7 * gate + 0.3 * rng.normal(size=n)
    improved = rng.normal(0.3, 0.8, size=n)
    return gate, student, improved


@pytest.mark.parametrize("k", [0, 10, 37, 50, 90, 100])
def test_each_point_is_a_direct_gated_run_on_those_data(k):
    gate, student, improved = data()
    cal = np.random.default_rng(5).normal(size=300)  # held-out student scores
    point = adaptive_curve(gate, student, improved, 4, 12, calibration_scores=cal, ks=[k])[0]
    # the gated run, written out: tau the k-th percentile, keep at or above it
    tau = -math.inf if k == 0 else math.inf if k == 100 else float(np.percentile(cal, k))
    final = [s if g >= tau else i for g, s, i in zip(gate, student, improved)]
    sent = sum(g < tau for g in gate) / len(gate)
    assert point.tau == tau
    assert point.quality == pytest.approx(float(np.mean(final)), abs=1e-12)
    assert point.improved == pytest.approx(sent) and point.cost == pytest.approx(4 + sent * 12)


def test_the_ends_are_student_only_and_improve_all():
    gate, student, improved = data()
    curve = adaptive_curve(gate, student, improved, 4, 12)
    assert curve[0].quality == pytest.approx(student.mean()) and curve[0].cost == 4
    assert curve[-1].quality == pytest.approx(improved.mean()) and curve[-1].cost == 16
    assert [p.k for p in curve] == list(range(101))
    # on its own prompts, k percent of them go to the teacher (up to the percentile's rounding)
    assert curve[50].improved == pytest.approx(0.5, abs=0.01)


def test_gating_beats_both_ends_when_the_gate_knows_the_bad_samples():
    gate, student, improved = data()
    curve = adaptive_curve(gate, student, improved, 4, 12)
    best = best_k(curve)
    assert 0 < best.k < 100
    assert best.quality > max(curve[0].quality, curve[-1].quality)


def test_k_for_a_budget_and_within_a_tolerance():
    gate, student, improved = data()
    curve = adaptive_curve(gate, student, improved, 4, 12)
    p = best_for_budget(curve, 8.0)
    assert p.cost <= 8.0 and p.quality == max(q.quality for q in curve if q.cost <= 8.0)
    assert best_for_budget(curve, 100.0) == best_k(curve)
    with pytest.raises(InputError, match="budget"):
        best_for_budget(curve, 3.0)
    exact = cheapest_within(curve, 0.0)
    assert exact.quality == best_k(curve).quality
    loose = cheapest_within(curve, 20.0)
    base, top = curve[0].quality, best_k(curve).quality
    assert loose.cost <= exact.cost and loose.quality >= base + 0.8 * (top - base) - 1e-12
    assert cheapest_within(curve, 100.0).k == 0  # any point keeps 0 % of the gain: the student alone
    with pytest.raises(InputError, match="tolerance"):
        cheapest_within(curve, float("nan"))


def test_win_rate_and_its_wilson_interval():
    ours = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    theirs = [0.5] * 10
    w = win_rate(ours, theirs)
    assert w.rate == 0.7 and w.n == 10
    assert (w.low, w.high) == (pytest.approx(0.3968, abs=1e-4), pytest.approx(0.8922, abs=1e-4))  # Wilson 1927
    assert win_rate([1, 2], [1, 2]).rate == 0.5  # ties count half
    all_win = win_rate([1] * 5, [0] * 5)
    assert all_win.rate == 1.0 and all_win.high == 1.0 and all_win.low < 1.0
    with pytest.raises(InputError, match="theirs"):
        win_rate([1, 2], [1])


def test_non_finite_scores_are_refused():
    with pytest.raises(InputError, match="judge_student"):
        gated_result([0.0], [float("nan")], [0.0], 0.0)

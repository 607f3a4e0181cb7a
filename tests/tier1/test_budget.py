import pytest

from student_teacher.schedulers.budget import average_steps, k_within_budget, percentile_for_budget
from student_teacher.schedulers.errors import InputError


@pytest.mark.parametrize("s,r,k,expected", [
    (5, 5, 60, 8), (5, 10, 60, 11), (5, 20, 50, 15), (3, 15, 70, 13.5),  # paper, Tables 3/4
    (4, 12, 50, 10),                                                      # official README
])
def test_paper_budgets(s, r, k, expected):
    assert average_steps(s, r, k) == pytest.approx(expected)
    assert percentile_for_budget(expected, s, r) == pytest.approx(k)


def test_k_within_budget_rounds_down_to_available_percentiles():
    assert k_within_budget(10, 4, 12, available=range(10, 100, 10)) == 50
    assert k_within_budget(9.9, 4, 12, available=range(10, 100, 10)) == 40


@pytest.mark.parametrize("budget,fix", [(3, "at least 4"), (17, "at most 16")])
def test_impossible_budgets(budget, fix):
    with pytest.raises(InputError, match=fix):
        percentile_for_budget(budget, 4, 12)


def test_budget_below_every_percentile():
    with pytest.raises(InputError, match="below every calibrated"):
        k_within_budget(4.5, 4, 12, available=[50, 70])


def test_percentile_range_checked():
    with pytest.raises(InputError, match="k"):
        average_steps(4, 12, 150)


def test_budgets_keep_percentiles_that_are_not_whole():
    assert k_within_budget(6.0, 4, 12, available=[12.5, 50]) == 12.5  # not truncated to a missing 12

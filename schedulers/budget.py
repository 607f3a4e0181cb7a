"""Step budgets: average cost = S + (k/100) * R for S student steps, R teacher steps and
the k% of samples (those under the k-th percentile) that the teacher improves."""
from typing import Iterable, Optional

from .errors import InputError, require_steps


def average_steps(student_steps: int, teacher_steps: int, k: float) -> float:
    if not 0 <= k <= 100:
        raise InputError("k", f"got {k}, outside [0, 100]", "use a percentile between 0 and 100")
    return student_steps + k / 100.0 * teacher_steps


def percentile_for_budget(budget: float, student_steps: int, teacher_steps: int) -> float:
    """The k whose average cost is exactly `budget` steps."""
    student_steps = require_steps("student_steps", student_steps)
    teacher_steps = require_steps("teacher_steps", teacher_steps)
    if budget < student_steps:
        raise InputError("budget", f"{budget} average steps is below the student's own {student_steps}",
                         f"give a budget of at least {student_steps} steps")
    if budget > student_steps + teacher_steps:
        raise InputError("budget", f"{budget} average steps is more than improving every sample costs "
                         f"({student_steps} + {teacher_steps} = {student_steps + teacher_steps})",
                         f"give at most {student_steps + teacher_steps} steps, or connect no gate "
                         "to the teacher to improve every sample")
    return 100.0 * (budget - student_steps) / teacher_steps


def k_within_budget(budget: float, student_steps: int, teacher_steps: int,
                    available: Optional[Iterable[float]] = None) -> float:
    """The largest available percentile (as given: 50, or 12.5) whose average cost stays within the budget."""
    exact = percentile_for_budget(budget, student_steps, teacher_steps)
    choices = sorted(set(available)) if available is not None else list(range(0, 101))
    fitting = [k for k in choices if k <= exact + 1e-9]
    if not fitting:
        raise InputError("budget", f"{budget} steps allows k = {exact:.1f}, below every calibrated "
                         f"percentile {choices}", "raise the budget or calibrate smaller percentiles")
    return fitting[-1]

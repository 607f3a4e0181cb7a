"""One error type for every bad input, so nodes can show it as-is."""
import math


class InputError(ValueError):
    """A user-facing error: names the input that is wrong and how to fix it."""

    def __init__(self, input_name: str, problem: str, fix: str):
        self.input_name = input_name
        super().__init__(f"{input_name}: {problem}. Fix: {fix}")


def require_steps(name: str, steps: int) -> int:
    if int(steps) != steps or steps < 1:
        raise InputError(name, f"got {steps} steps", "use a whole number of steps >= 1")
    return int(steps)


def require_fraction(name: str, value: float) -> float:
    """Rollback values live in (0, 1]: 0 would do nothing, above 1 is past pure noise."""
    if not (0.0 < float(value) <= 1.0):
        raise InputError(name, f"got {value}, outside (0, 1]", "pick a value above 0 and at most 1")
    return float(value)


def require_finite(name: str, value) -> float:
    """Over the API a FLOAT can be NaN or inf, which pass every min/max comparison."""
    if not math.isfinite(float(value)):
        raise InputError(name, f"got {value}", "give a finite number")
    return float(value)

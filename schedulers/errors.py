"""One error type for every bad input, so nodes can show it as-is."""
import math


class InputError(ValueError):
    """A user-facing error: names the input that is wrong and how to fix it."""

    def __init__(self, input_name: str, problem: str, fix: str):
        self.input_name, self.problem, self.fix = input_name, problem, fix
        super().__init__(f"{input_name}: {problem}. Fix: {fix}")

    def renamed(self, names) -> "InputError":
        """The same error under the input names of a node that calls shared code ({shared: its own})."""
        return InputError(names.get(self.input_name, self.input_name), self.problem, self.fix)


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


FILE_NAME_MAX = 120
_NOT_IN_FILE_NAMES = set('<>:"|?*')  # besides the folder separators, which are dropped with their folders


def require_file_stem(name: str, text: str, example: str) -> str:
    """The file name a user typed, as a stem to save under: folders and a .json ending dropped, and
    refused when empty, hidden (leading dot), too long or holding characters some systems refuse."""
    stem = str(text).strip().replace("\\", "/").rsplit("/", 1)[-1].strip()
    stem = stem[:-5] if stem.lower().endswith(".json") else stem
    bad = sorted({c for c in stem if c in _NOT_IN_FILE_NAMES or not c.isprintable()})
    if not stem or stem.startswith(".") or len(stem) > FILE_NAME_MAX or bad:
        problem = ("empty file name" if not stem else f"{len(stem)} characters is too long" if len(stem) > FILE_NAME_MAX
                   else f"{stem!r} would be a hidden file" if stem.startswith(".")
                   else f"{stem!r} holds {', '.join(repr(c) for c in bad)}")
        raise InputError(name, problem, f"give a plain name of letters, digits, '-' and '_' (at most "
                         f"{FILE_NAME_MAX} characters), such as {example}")
    return stem

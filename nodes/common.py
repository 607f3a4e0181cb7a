"""Names, shared input specs and node-wide rules of the pack's nodes."""
import contextlib
import functools
import hashlib
import inspect
import os

import folder_paths

from ..schedulers.errors import InputError, require_finite

CATEGORY = "sampling/student_teacher"
PREFIX = "StudentTeacher"

GATE_TYPE = "ST_GATE"
ORACLE_TYPE = "IR_ORACLE"


@contextlib.contextmanager
def inputs_named(names):
    """Errors of the shared code a node calls, under the node's own input names ({shared: own})."""
    try:
        yield
    except InputError as e:
        if e.input_name not in names:
            raise
        raise e.renamed(names) from None


def float_inputs(node_class) -> list:
    """Names of the node's FLOAT inputs, from its schema."""
    types = node_class.INPUT_TYPES()
    return [name for section in ("required", "optional") for name, spec in types.get(section, {}).items()
            if spec[0] == "FLOAT"]


def rejecting_nonfinite_floats(node_class):
    """Make the node refuse NaN and inf in every FLOAT input before it does anything. ComfyUI
    checks min/max only, and NaN passes every comparison (a prompt sent over the API can hold it)."""
    run = getattr(node_class, node_class.FUNCTION)
    signature = inspect.signature(run)
    names = []

    @functools.wraps(run)
    def checked(*args, **kwargs):
        if not names:
            names.extend(float_inputs(node_class))
        inputs = dict(signature.bind(*args, **kwargs).arguments)
        for param in signature.parameters.values():  # inputs a node takes as **more count too
            if param.kind is param.VAR_KEYWORD:
                inputs.update(inputs.pop(param.name, {}))
        for name in names:
            if inputs.get(name) is not None:
                require_finite(name, inputs[name])
        return run(*args, **kwargs)

    setattr(node_class, node_class.FUNCTION, checked)
    return node_class


FOLDERS_SHOWN = {"image_reward": "models/image_reward", "image_reward_calibration": "models/image_reward/calibration",
                 "student_teacher_prompts": "models/image_reward/prompts"}


def full_path(folder: str, name: str, input_name: str, expected: str) -> str:
    """The file `name` of a model folder, or an error naming the input, the folder and the file."""
    path = folder_paths.get_full_path(folder, name) if name else None
    if path is None:
        shown = FOLDERS_SHOWN.get(folder, f"models/{folder}")
        missing = f"{name!r} is not in ComfyUI/{shown}/" if name else f"no file chosen from ComfyUI/{shown}/"
        raise InputError(input_name, missing, f"put {expected} there, then refresh the page (R) and pick it")
    return path


def file_signature(folder: str, name: str) -> str:
    """What IS_CHANGED returns for a file input: its content hash when small (calibrations,
    prompt lists), else its size and modification time; a changed file re-runs the node."""
    path = folder_paths.get_full_path(folder, name) if name else None
    if path is None:
        return f"missing:{name}"
    stat = os.stat(path)
    if stat.st_size > 1 << 20:
        return f"{stat.st_size}:{stat.st_mtime_ns}"
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()

"""The pack is imported once: `student_teacher.x` is the module ComfyUI itself loads as `<pack path>.x`
(tests/support/pack_alias.py), so tier-1 helpers and the tier-2 nodes share every class."""
import importlib
import sys

import pack_alias
from student_teacher.schedulers import record
from student_teacher.schedulers.record import SampleRecord


def test_the_alias_is_the_module_comfyui_loads():
    assert sys.modules[pack_alias.COMFY_NAME + ".schedulers.record"] is record
    assert importlib.import_module("student_teacher.schedulers.record") is record
    assert record.__spec__.name == pack_alias.COMFY_NAME + ".schedulers.record"  # its own name, not the alias
    assert SampleRecord is record.SampleRecord


def test_relative_imports_inside_the_pack_resolve_to_the_same_modules():
    from student_teacher.schedulers import gating
    assert gating.SampleRecord is SampleRecord  # gating imports it as `.record`

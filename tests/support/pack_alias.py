"""`import student_teacher.<module>`: the pack, imported once.

ComfyUI names a custom-node package after its folder's path (nodes.load_custom_node: the path with "."
as "_x_"). `student_teacher` is an alias of that same package, so host-free code (tier 1, the test
support scripts) and the pack loaded into ComfyUI (tier 2) share one copy of every module: a
SampleRecord made by a test helper is the class the nodes check against. Importing this module
installs the alias; the package's own __init__ (which needs ComfyUI) runs only when ComfyUI loads it."""
import importlib
import importlib.abc
import importlib.util
import os
import sys

ALIAS = "student_teacher"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMFY_NAME = ROOT.replace(".", "_x_")  # the name ComfyUI's load_custom_node gives the pack


class _PackAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`student_teacher.x.y` is the module ComfyUI knows as `<pack path>.x.y` (the same object)."""

    def find_spec(self, name, path=None, target=None):
        if name == ALIAS or name.startswith(ALIAS + "."):
            return importlib.util.spec_from_loader(name, self, is_package=True)
        return None

    def create_module(self, spec):
        if COMFY_NAME not in sys.modules:  # the package itself, not executed: its __init__ needs ComfyUI
            real = importlib.util.spec_from_file_location(COMFY_NAME, os.path.join(ROOT, "__init__.py"))
            sys.modules[COMFY_NAME] = importlib.util.module_from_spec(real)
        module = importlib.import_module(COMFY_NAME + spec.name[len(ALIAS):])
        module.__dict__.setdefault("__real_spec__", module.__spec__)  # the import system sets __spec__ next
        return module

    def exec_module(self, module):
        module.__spec__ = module.__dict__.pop("__real_spec__")


if not any(isinstance(f, _PackAlias) for f in sys.meta_path):
    sys.meta_path.insert(0, _PackAlias())

"""Shared pytest set-up: tests/support (harness, tiny models, stand-in weights) and the pack's root (for
tools/) on sys.path, and the pack imported once, as `student_teacher` (tests/support/pack_alias.py)."""
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
for path in (os.path.join(TESTS, "support"), os.path.dirname(TESTS)):
    if path not in sys.path:
        sys.path.insert(0, path)

import pack_alias  # noqa: E402,F401

# Tier-2 fixtures (comfy, tiny_models, fresh_comfy): importing the harness never imports
# ComfyUI; the fixtures skip without COMFYUI_PATH (see tests/support/comfyui_harness.py).
from comfyui_harness import comfy, fresh_comfy, tiny_models  # noqa: E402,F401

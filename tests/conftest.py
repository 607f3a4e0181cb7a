"""Shared pytest set-up: the pack's root on sys.path so the host-free packages (`oracle`,
`schedulers`) and `tools` import as top-level packages without ComfyUI."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
for path in (TESTS, os.path.join(TESTS, "support"), ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

# Tier-2 fixtures (comfy, tiny_models, fresh_comfy): importing the harness never imports
# ComfyUI; the fixtures skip without COMFYUI_PATH (see tests/comfyui_harness.py).
from comfyui_harness import comfy, fresh_comfy, tiny_models  # noqa: E402,F401

"""Shared pytest set-up: the pack's root on sys.path so the host-free packages
(`oracle`, `schedulers`) import as top-level packages without ComfyUI."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

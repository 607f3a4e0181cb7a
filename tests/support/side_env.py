"""Side virtual environments for running reference implementations (never the pack's own env).

The golden-data scripts (tools/make_*_golden.py) install a peer -- the original image-reward
package, open_clip, transformers -- into a venv of their own with the CPU torch pinned, run it
there offline on the pack's stand-in weights, and keep only its outputs.
"""
import os
import subprocess
import sys

# torchvision's wheel registers two fake ops that only exist in its CUDA build; beside a CPU torch
# the import fails unless the registrations are guarded
GUARD_TORCHVISION = r'''
import importlib.util, pathlib
p = pathlib.Path(importlib.util.find_spec("torchvision").origin).parent / "_meta_registrations.py"
s = p.read_text()
for op in ("nms", "qnms"):
    old = f'@torch.library.register_fake("torchvision::{op}")\ndef meta_{op}('
    if old in s:
        s = s.replace(old, f"def meta_{op}(")
        s += f'\nif torchvision.extension._has_ops():\n    torch.library.register_fake("torchvision::{op}")(meta_{op})\n'
p.write_text(s)
'''


def sh(*cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def make_venv(venv: str, pins, *extra_installs) -> str:
    """Make (or reuse) `venv` with torch 2.13.0 pinned and `pins` installed; each of `extra_installs`
    is one more list of pip arguments. Returns its python."""
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        sh(sys.executable, "-m", "venv", venv)
    constraints = os.path.join(venv, "constraints.txt")
    with open(constraints, "w") as f:
        f.write("torch==2.13.0\n")
    pip = [py, "-m", "pip", "install", "-q", "-c", constraints]
    sh(*pip, *pins)
    for args in extra_installs:
        sh(*pip, *args)
    sh(py, "-c", GUARD_TORCHVISION)
    return py


def offline_env(**more) -> dict:
    """Environment for the run inside: no hub access, nothing from the caller's PYTHONPATH."""
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH="", **more)

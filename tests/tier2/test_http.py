"""Tier 2: a real ComfyUI server (main.py) with the pack, bad graphs sent over HTTP as API users send
them (tests/support/http_bad_inputs.py): each is refused naming its input, an interrupt mid-teacher ends that
prompt, two queued prompts each get their own result, and the server keeps serving."""
import os
import subprocess
import sys

from tiny_models import TINY_GUIDED_SD15_UNET, TINY_IMAGE_REWARD, TINY_PICKSCORE, TINY_SD15, TINY_SDXL


def test_bad_graphs_over_http(comfy):
    for name in (TINY_SD15, TINY_SDXL, TINY_GUIDED_SD15_UNET, TINY_IMAGE_REWARD, TINY_PICKSCORE):
        comfy.tiny(name)
    script = os.path.join(comfy.pack_root, "tests", "support", "http_bad_inputs.py")
    done = subprocess.run([sys.executable, script, "--comfyui", comfy.path, "--models", comfy.models_root],
                          capture_output=True, text=True, timeout=1800)
    print(done.stdout)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "0 failed" in done.stdout

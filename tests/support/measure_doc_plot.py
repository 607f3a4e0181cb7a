#!/usr/bin/env python
"""The measurement plot shown in docs/measure.md, made with the tiny random-weight models (so its numbers
mean nothing: it shows what the node draws, not what a student does).

    COMFYUI_PATH=... TINY_MODELS_DIR=... python tests/support/measure_doc_plot.py docs/img/measure_tiny.png

Measure Student vs Teacher on the first 48 of the pack's held-out prompts, at 64 px: the tiny SD1.5
(2 LCM steps) as the student, the same checkpoint as the teacher (refine, 2 steps), the tiny ImageReward as
the gate and the tiny PickScore as the judge. Prints the node's report.
"""
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]
from comfyui_harness import build_tiny_model, run_prompt, start  # noqa: E402
from tiny_models import TINY_IMAGE_REWARD, TINY_PICKSCORE, TINY_SD15  # noqa: E402

P = "StudentTeacher"


def oracle(file):
    return {"class_type": P + "LoadImageRewardOracle", "inputs": {"oracle_file": file, "device": "cpu",
                                                                   "dtype": "fp32", "preprocess": "auto",
                                                                   "batch_size": 8, "kind": "auto"}}


def main(out):
    host = start(work_dir=tempfile.mkdtemp(prefix="measure_doc_"),
                 models_root=os.environ.get("TINY_MODELS_DIR") or tempfile.mkdtemp(prefix="tiny_models_"))
    for name in (TINY_SD15, TINY_IMAGE_REWARD, TINY_PICKSCORE):
        build_tiny_model(host, name)
    host.folder_paths.filename_list_cache.clear()
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD15}},
        "o": oracle(TINY_IMAGE_REWARD), "j": oracle(TINY_PICKSCORE),
        "m": {"class_type": P + "MeasureStudentVsTeacher",
              "inputs": {"student": ["1", 0], "teacher": ["1", 0], "clip": ["1", 1], "vae": ["1", 2],
                         "oracle": ["o", 0], "judge": ["j", 0], "prompts": "",
                         "prompts_file": "calibration_prompts.txt", "max_prompts": 48, "negative_prompt": "",
                         "width": 64, "height": 64, "seed": 0, "student_steps": 2, "student_cfg": 1.0,
                         "schedule": "lcm", "strategy": "refine", "rollback_mode": "strength", "rollback": 0.5,
                         "teacher_steps": 2, "sampler_name": "euler", "scheduler": "normal", "teacher_cfg": 2.0,
                         "teacher_alone_steps": 4, "tolerance": 5.0, "batch_size": 8,
                         "filename": "tiny_measured"}},
    }
    run = run_prompt(host, graph, fresh=True)
    print(run.output("m", 1))
    saved = [p for p in run.images("m") if p.endswith(".png")][0]
    shutil.copyfile(saved, out)
    print("wrote", out)


if __name__ == "__main__":
    main(sys.argv[1])

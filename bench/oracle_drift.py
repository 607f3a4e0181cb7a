"""Score drift of the oracle's settings against the ORIGINAL ImageReward package: max and mean
|score - golden| over tests/data/imagereward/golden.json (5 prompts x 6 images, two of them adversarial
for resizing: a one-pixel checkerboard and saturated binary noise), stand-in weights. Not a test.

    python bench/oracle_drift.py [--settings fp32-exact,fp32-fast,bf16-exact,fp16-exact,fp16-fast] [--device cpu]
"""
import argparse
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "support")]  # the stand-in weights

from oracle import ImageRewardOracle  # noqa: E402
from oracle.checkpoint import DTYPES, image_reward_from_state_dict  # noqa: E402
from imagereward_standin import GOLDEN_PROMPTS, golden_images, standin_state_dict  # noqa: E402

DATA = os.path.join(ROOT, "tests", "data", "imagereward")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", default="fp32-exact,fp32-fast,bf16-exact,fp16-exact,fp16-fast")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    with open(os.path.join(DATA, "keys.json")) as f:
        raw = standin_state_dict(json.load(f), seed=0)
    with open(os.path.join(DATA, "golden.json"), encoding="utf-8") as f:
        golden = torch.tensor(json.load(f)["scores"])
    images = [torch.from_numpy(x).float().div(255.0) for x in golden_images()]
    print(f"{'setting':12s} {'max |diff|':>10s} {'mean |diff|':>11s}  rankings equal")
    for setting in a.settings.split(","):
        dtype, mode = setting.split("-")
        model = image_reward_from_state_dict(raw, "stand-in", a.device, DTYPES[dtype])
        oracle = ImageRewardOracle(model, preprocess=mode, batch_size=len(images))
        got = torch.stack([oracle.score(images, prompt) for prompt in GOLDEN_PROMPTS])
        diff = (got - golden).abs()
        same_order = all(torch.equal(got[i].argsort(), golden[i].argsort()) for i in range(len(GOLDEN_PROMPTS)))
        print(f"{setting:12s} {diff.max():10.2e} {diff.mean():11.2e}  {same_order}", flush=True)
        del model, oracle


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Merge calibration shards -- made on several machines or runs with the Calibrate node's (or
tools/calibrate.py's) first_prompt / max_prompts over one prompt list -- into exactly the file one
run over all their prompts would have made: raw scores pooled in prompt order, percentiles and
statistics recomputed. Refuses shards made with other settings or another oracle, a prompt present
twice, official files without raw scores, and an output file that exists already.

    python tools/merge_calibrations.py part1.json part2.json -o models/image_reward/calibration/my_student.json

Needs no ComfyUI (the Merge Calibrations node does the same inside it).
"""
import argparse
import datetime
import os
import sys

PACK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PACK not in sys.path:
    sys.path.insert(0, PACK)
from oracle.calibration import CalibrationError, merge_calibrations, read_calibration, write_new  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shards", nargs="+", help="calibration JSON files made with the same settings")
    p.add_argument("-o", "--output", required=True, help="the merged file to write (must not exist)")
    a = p.parse_args(argv)
    if len(a.shards) < 2:
        p.error("give at least two calibration files to merge")
    try:
        shards = [(os.path.basename(f), {"metadata": read_calibration(f)[1]}) for f in a.shards]
        data = merge_calibrations(shards)
        data["metadata"]["created"] = datetime.datetime.now().isoformat(timespec="seconds")
        write_new(a.output, data)
    except CalibrationError as e:
        raise SystemExit(f"merge_calibrations: {e}") from None
    taus = ", ".join(f"k={k}: {v:+.4f}" for k, v in data.items() if k != "metadata")
    print(f"wrote {a.output}: {data['metadata']['n_scores']} scores from {len(shards)} files; {taus}")


if __name__ == "__main__":
    main()

"""Convert an ImageReward checkpoint (ImageReward.pt) to .safetensors, checked strictly.

    python -m oracle.convert ImageReward.pt ImageReward.safetensors [--force] [--dtype fp16]

(run from the node pack's folder). The input is read with a weights-only torch.load (no code in
the file is ever run) and must pass the same strict key/shape check as loading; the keys unused
for scoring (blip.vision_proj.*, blip.text_proj.*, position_ids) are dropped. The output is
written to a temporary file, loaded back strictly, then moved into place. An existing output
is only replaced with --force.
"""
import argparse
import os
import sys
import tempfile

from .checkpoint import DTYPES as STORED_DTYPES
from .checkpoint import OracleLoadError, read_state_dict, validate_state_dict

DTYPES = {"keep": None, **STORED_DTYPES}


def convert(src: str, dst: str, force: bool = False, dtype: str = "keep") -> dict:
    """-> summary dict. Raises OracleLoadError (bad input) or FileExistsError / ValueError."""
    from safetensors.torch import save_file

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    src, dst = os.fspath(src), os.fspath(dst)
    if os.path.exists(src) and os.path.exists(dst) and os.path.samefile(src, dst):
        raise ValueError(f"input and output are the same file ({dst}); choose another output name")
    if not dst.endswith(".safetensors"):
        raise ValueError(f"the output name must end in .safetensors (got {dst})")
    if os.path.exists(dst) and not force:
        raise FileExistsError(f"{dst} already exists; pass --force to overwrite it")
    raw = read_state_dict(src)
    n_in = len(raw)
    sd, config = validate_state_dict(raw, src)
    del raw
    target = DTYPES[dtype]
    sd = {k: (v.to(target) if target is not None else v).contiguous() for k, v in sd.items()}
    out_dir = os.path.dirname(os.path.abspath(dst))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".convert-", suffix=".safetensors", dir=out_dir)
    os.close(fd)
    try:
        save_file(sd, tmp, metadata={"format": "pt", "model": "ImageReward",
                                     "source": os.path.basename(src),
                                     "converted_by": "oracle.convert"})
        validate_state_dict(read_state_dict(tmp), tmp)  # read back, strictly
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"input": src, "output": dst, "tensors_in": n_in, "tensors_out": len(sd),
            "parameters": sum(v.numel() for v in sd.values()), "config": config.to_dict()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m oracle.convert",
                                 description="Convert ImageReward.pt to a strictly checked .safetensors file.")
    ap.add_argument("input", help="ImageReward.pt (or .pth / .safetensors)")
    ap.add_argument("output", help="output .safetensors path")
    ap.add_argument("--force", action="store_true", help="overwrite an existing output file")
    ap.add_argument("--dtype", default="keep", choices=sorted(DTYPES),
                    help="store tensors in this dtype (default: keep the file's)")
    args = ap.parse_args(argv)
    try:
        info = convert(args.input, args.output, force=args.force, dtype=args.dtype)
    except (OracleLoadError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {info['output']}: {info['tensors_out']} tensors "
          f"({info['parameters'] / 1e6:.1f}M parameters; {info['tensors_in'] - info['tensors_out']} "
          "unused keys dropped), checked strictly")
    return 0


if __name__ == "__main__":
    sys.exit(main())

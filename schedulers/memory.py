"""Whether a second copy of a model's weights fits in memory: the rule Separate Student Weights follows
before giving the student its own copy (the copy saves a re-patch per queue, and must never push the
machine into swapping or out of memory)."""

GiB = 1 << 30
HEADROOM_BYTES = 2 * GiB  # left free after the copy: the samplers, the VAE decode and the oracle still need room


def room_for_copy(model_bytes: int, free_bytes: int, headroom_bytes: int = HEADROOM_BYTES) -> bool:
    """True when a copy of `model_bytes` still leaves `headroom_bytes` of the `free_bytes` free."""
    if model_bytes < 0 or free_bytes < 0:
        raise ValueError(f"sizes must be >= 0, got model {model_bytes}, free {free_bytes}")
    return free_bytes - model_bytes >= headroom_bytes


def copy_pays_off(model_bytes: int, free_on_load_device: int, headroom_bytes: int = HEADROOM_BYTES) -> bool:
    """On a GPU, the student's own copy saves the per-queue re-patch only when student and teacher both stay
    loaded there: two copies beside the headroom. Otherwise ComfyUI moves a whole model in and out each queue,
    which costs more than re-patching the shared weights in place (FLUX 12B, Qwen-Image 20B on any GPU below
    ~60 GB; bench/bench_repatch.py)."""
    return room_for_copy(2 * model_bytes, free_on_load_device, headroom_bytes)


def gib(n_bytes: int) -> str:
    return f"{n_bytes / GiB:.1f} GiB"

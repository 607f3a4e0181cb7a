"""What bench/bench_pipeline.py measures, the same way in ComfyUI's process and in the official
pipeline's: time spent in each kind of model evaluation, peak memory, and the threshold that sends
exactly the bench's share of samples to the teacher. Plain torch + psutil (both environments have them)."""
import contextlib
import functools
import math
import threading
import time
from collections import defaultdict

import torch

PARTS = ("student", "vae", "oracle", "teacher")


def tau_for(scores, k):
    """A threshold under which exactly ceil(len(scores) * k / 100) of `scores` fall (the gate sends
    samples scoring below tau to the teacher): midway between the last one sent and the first kept."""
    n = math.ceil(len(scores) * k / 100 - 1e-9)
    ranked = sorted(scores)
    if n == 0:
        return ranked[0] - 1.0
    if n == len(ranked):
        return ranked[-1] + 1.0
    if ranked[n - 1] == ranked[n]:
        raise ValueError(f"scores tie at the cut ({ranked[n]}): no threshold sends exactly {n}")
    return (ranked[n - 1] + ranked[n]) / 2


class Clock:
    """Seconds per part. A part started inside another (a UNet inside a sampler call) is not counted
    twice: only the outermost timed call counts."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.seconds = defaultdict(float)
        self.depth = 0

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset(self):
        self.seconds.clear()

    @contextlib.contextmanager
    def timed(self, part):
        if self.depth:
            yield
            return
        self.depth += 1
        self.sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[part] += time.perf_counter() - t0
            self.depth -= 1

    def wrapped(self, fn, part):
        """fn, timed as `part` (a callable: part(*args) names it at call time)."""
        @functools.wraps(fn)
        def run(*args, **kw):
            with self.timed(part(*args, **kw) if callable(part) else part):
                return fn(*args, **kw)
        return run

    def wrap(self, owner, name, part):
        setattr(owner, name, self.wrapped(getattr(owner, name), part))

    def row(self, config, batch, wall, peak_bytes, refined):
        parts = {p: self.seconds.get(p, 0.0) for p in PARTS}
        models = sum(parts.values())
        return {"config": config, "batch": batch, "wall": wall, **parts, "other": wall - models,
                "wall_over_models": wall / models if models else float("nan"), "images_per_s": batch / wall,
                "peak_bytes": peak_bytes, "refined": refined}


class MemoryPeak:
    """Peak memory while the block runs: the process's RSS sampled every 5 ms on the CPU, the
    allocator's max_memory_allocated on a GPU."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.bytes = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        import psutil
        process, self._stop = psutil.Process(), threading.Event()

        def sample():
            while not self._stop.is_set():
                self.bytes = max(self.bytes, process.memory_info().rss)
                self._stop.wait(0.005)
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
        return False

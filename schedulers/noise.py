"""Per-sample noise streams: a sample's noise depends on (seed, batch index, stream, step) only,
never on which other samples share its batch. Each stage draws from a stream of its own, so the
teacher's rollback noise (Algorithm 1's fresh Z) is independent of the student's noise even
when every node shares one seed. The student's INITIAL noise is ComfyUI's own prepare_noise."""
from enum import IntEnum
from typing import Sequence, Union

import numpy as np
import torch


class Stream(IntEnum):
    STUDENT_RENOISE = 1   # multistep consistency sampling: the jump after step i
    TEACHER_SAMPLER = 2   # stochastic teacher samplers (ancestral, SDE): call i
    ROLLBACK = 3          # refine's rollback noise Z
    RETRY_INITIAL = 4     # a student retry's starting noise (its re-noising: STUDENT_RENOISE of its round)


RETRY_NUMBERS = 1000  # a Student Retry's number is below this (its widget stops at 100)


def retry_round(retry: int, earlier_retries: int) -> int:
    """The noise round of retry number `retry` for a sample already retried `earlier_retries` times: chained
    Student Retry nodes left at the same number still draw fresh noise, and two chains that number their
    retries differently ((2, then 1) and (1, then 2)) never meet on one round. The first retry's round
    is its number."""
    if not 1 <= int(retry) < RETRY_NUMBERS:
        raise ValueError(f"retry {retry} is outside 1..{RETRY_NUMBERS - 1}")
    return int(retry) + RETRY_NUMBERS * int(earlier_retries)


def _generator_seed(seed: int, batch_index: int, stream: int, step: int, round_: int) -> int:
    # SeedSequence mixes the integers into an independent 63-bit seed.
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(batch_index), int(stream), int(step),
                                    int(round_)])
    return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))


class PerSampleNoise:
    """Unit Gaussian noise for a batch, one generator per (sample, stream, step).

    `draw(step)` gives the batch's noise for that step; calling the object draws step 0, 1, 2, ...
    in turn, which makes it a k-diffusion `noise_sampler(sigma, sigma_next)`. `round_` (one for the
    batch, or one per sample) numbers the repeats of a stream: each round is fresh noise."""

    def __init__(self, seed: int, batch_index: Sequence[int], sample_shape, stream: Stream,
                 dtype=torch.float32, device="cpu", round_: Union[int, Sequence[int]] = 0):
        self.seed = int(seed)
        self.batch_index = [int(b) for b in batch_index]
        self.rounds = [int(round_)] * len(self.batch_index) if isinstance(round_, int) else [int(r) for r in round_]
        if len(self.rounds) != len(self.batch_index):
            raise ValueError(f"{len(self.rounds)} rounds for {len(self.batch_index)} samples")
        self.sample_shape = tuple(sample_shape)
        self.stream = Stream(stream)
        self.dtype = dtype
        self.device = device
        self.calls = 0

    def draw(self, step: int) -> torch.Tensor:
        out = [torch.randn(self.sample_shape, generator=torch.Generator().manual_seed(
            _generator_seed(self.seed, b, self.stream, step, r))) for b, r in zip(self.batch_index, self.rounds)]
        return torch.stack(out).to(device=self.device, dtype=self.dtype)

    def __call__(self, *_sigmas) -> torch.Tensor:
        self.calls += 1
        return self.draw(self.calls - 1)

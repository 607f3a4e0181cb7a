"""Per-sample noise streams: a sample's noise depends on (seed, batch_index, step) only,
never on which other samples share its batch."""
from typing import Sequence

import numpy as np
import torch


def _stream_seed(seed: int, batch_index: int, stream: int) -> int:
    # SeedSequence mixes the three integers into an independent 64-bit seed.
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(batch_index), int(stream)])
    return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))


class PerSampleNoise:
    """Callable noise source for a batch: call k returns stream k for every sample.

    Also usable as a k-diffusion `noise_sampler(sigma, sigma_next)`."""

    def __init__(self, seed: int, batch_index: Sequence[int], sample_shape, dtype=torch.float32,
                 device="cpu", first_stream: int = 1):
        self.seed = int(seed)
        self.batch_index = [int(b) for b in batch_index]
        self.sample_shape = tuple(sample_shape)
        self.dtype = dtype
        self.device = device
        self.calls = 0
        self.first_stream = first_stream

    def draw(self, stream: int) -> torch.Tensor:
        out = []
        for b in self.batch_index:
            g = torch.Generator().manual_seed(_stream_seed(self.seed, b, stream))
            out.append(torch.randn(self.sample_shape, generator=g))
        return torch.stack(out).to(device=self.device, dtype=self.dtype)

    def __call__(self, *_args) -> torch.Tensor:
        noise = self.draw(self.first_stream + self.calls)
        self.calls += 1
        return noise

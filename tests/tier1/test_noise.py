"""Per-sample noise streams: one generator per (seed, batch index, stream, step)."""
import torch

from student_teacher.schedulers.noise import PerSampleNoise, Stream, retry_round


def test_noise_depends_only_on_seed_index_stream_and_step():
    big = PerSampleNoise(7, [0, 1, 2, 3], (4, 8, 8), Stream.STUDENT_RENOISE)
    alone = PerSampleNoise(7, [2], (4, 8, 8), Stream.STUDENT_RENOISE)
    a, b = big(), big()
    assert torch.equal(a[2], alone.draw(0)[0]) and torch.equal(b[2], alone.draw(1)[0])
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0], b[0])
    assert not torch.equal(PerSampleNoise(8, [0], (4,), Stream.ROLLBACK).draw(1),
                           PerSampleNoise(7, [0], (4,), Stream.ROLLBACK).draw(1))


def test_each_stage_has_its_own_stream():
    """With one shared seed, rollback noise is not the student's or the teacher sampler's noise."""
    draws = {s: PerSampleNoise(0, range(16), (4, 32, 32), s).draw(0).flatten(1) for s in Stream}  # |cos| ~ 0.016
    for s in Stream:
        for t in Stream:
            if s < t:
                corr = torch.nn.functional.cosine_similarity(draws[s], draws[t], dim=1)
                assert corr.abs().max() < 0.1, (s, t)


def test_unit_gaussian():
    x = PerSampleNoise(3, range(8), (4, 32, 32), Stream.ROLLBACK).draw(0)
    assert abs(float(x.mean())) < 0.02 and abs(float(x.std()) - 1) < 0.02


def test_each_retry_round_is_fresh_noise():
    first, second = (PerSampleNoise(0, [3], (4, 32, 32), Stream.RETRY_INITIAL, round_=r).draw(0) for r in (1, 2))
    assert abs(float(torch.nn.functional.cosine_similarity(first.flatten(), second.flatten(), dim=0))) < 0.1
    assert torch.equal(first[0], PerSampleNoise(0, [0, 3], (4, 32, 32), Stream.RETRY_INITIAL, round_=1).draw(0)[1])


def test_rounds_per_sample_are_each_samples_own():
    """A stage that runs again on a sample (a second refine) draws that sample's next round, and a
    sample's noise is the same whatever rounds its batch neighbours are in."""
    mixed = PerSampleNoise(0, [3, 5], (4, 8, 8), Stream.ROLLBACK, round_=[1, 0]).draw(0)
    assert torch.equal(mixed[0], PerSampleNoise(0, [3], (4, 8, 8), Stream.ROLLBACK, round_=1).draw(0)[0])
    assert torch.equal(mixed[1], PerSampleNoise(0, [5], (4, 8, 8), Stream.ROLLBACK).draw(0)[0])
    assert not torch.equal(mixed[0], PerSampleNoise(0, [3], (4, 8, 8), Stream.ROLLBACK).draw(0)[0])


def test_chained_retries_draw_fresh_rounds():
    """A second Student Retry left at number 1 draws another round than the first; numbering the retries
    (2, 1) or (1, 2) never makes two of one sample's retries share a round; the first retry's round is its
    number (as before chains were counted)."""
    assert retry_round(1, 0) == 1 and retry_round(2, 0) == 2
    assert retry_round(1, 1) not in (retry_round(1, 0), retry_round(2, 0))
    rounds = {(a, b): (retry_round(a, 0), retry_round(b, 1)) for a in range(1, 101) for b in range(1, 101)}
    assert all(first != second for first, second in rounds.values())
    assert len({r for pair in rounds.values() for r in pair}) == 200

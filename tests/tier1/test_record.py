"""The per-sample record: it follows its sample, knows its stages and their cost, and is
dropped (not guessed) when a core node has rebuilt the LATENT."""
import pytest
import torch

from student_teacher.schedulers.record import (EARLIER_KEY, IMAGES_KEY, OUTSIDE, RECORDS_KEY, SampleRecord, Stage, average_cost,
                               bare_records, cost_line, records_of, rows_of, stage_line, stage_steps, with_records)


def student(b, steps=4):
    return SampleRecord(b, seed=7, latent_format="SD15", stages=(Stage("student", steps=steps),))


def latent(records, n=None):
    return with_records({"samples": torch.zeros(n or len(records), 4, 8, 8)}, records)


def test_records_travel_with_their_rows():
    recs = [student(b) for b in (3, 5, 8)]
    lat = latent(recs)
    assert lat["batch_index"] == [3, 5, 8] and records_of(lat) == tuple(recs)
    with pytest.raises(ValueError):
        with_records({"samples": torch.zeros(2, 4, 8, 8)}, recs)


def test_records_that_no_longer_describe_the_rows_are_dropped():
    lat = latent([student(b) for b in (0, 1, 2, 3)])
    one = {**lat, "samples": lat["samples"][1:2], "batch_index": [1]}   # what LatentFromBatch makes
    assert records_of(one) is None
    reordered = {**lat, "batch_index": [3, 2, 1, 0]}
    assert records_of(reordered) is None
    assert records_of({"samples": torch.zeros(2, 4, 8, 8)}) is None
    assert records_of({"samples": torch.zeros(1, 4, 8, 8), RECORDS_KEY: ("junk",)}) is None


def test_stages_accumulate_cost_and_the_latest_score():
    r = student(0, 5).then(Stage("gate", score=-0.3, kept=False)).then(Stage("teacher", steps=10))
    assert r.cost == 15 and r.score == -0.3 and r.last("teacher").steps == 10 and r.last("retry") is None
    assert student(1).then(Stage("gate", score=0.2, kept=True)).score == 0.2


def test_cost_line_is_the_papers_formula():
    recs = [student(b, 4) for b in range(4)]
    recs[1] = recs[1].then(Stage("teacher", steps=12))
    recs[3] = recs[3].then(Stage("teacher", steps=12))
    assert average_cost(recs) == 10 and stage_steps(recs, "student") == 4
    assert cost_line(recs) == "average steps spent: 4 + 2/4 x 12 = 10"
    assert cost_line([student(b) for b in range(2)]) == "average steps spent: 4 + 0/2 x 0 = 4"
    mixed = [student(0, 4), student(1, 2)]
    assert stage_steps(mixed, "student") is None
    assert cost_line(mixed) == "average steps spent: 3 per sample"


def test_bare_records_know_only_their_index():
    assert [r.batch_index for r in bare_records([2, 9])] == [2, 9]
    assert bare_records([2])[0].seed is None and bare_records([2])[0].stages == ()


def test_a_chain_of_stages_keeps_each_samples_history_and_cost():
    gate = Stage("gate", score=-1.0, kept=False)
    retried = student(0).then(gate).then(Stage("retry", steps=4)).then(Stage("gate", score=-0.5, kept=False))
    taught = retried.then(Stage("teacher", steps=12))
    kept = student(1).then(Stage("gate", score=1.0, kept=True))
    assert [s.kind for s in taught.stages] == ["student", "gate", "retry", "gate", "teacher"]
    assert taught.cost == 20 and kept.cost == 4 and average_cost([taught, kept]) == 12
    assert retried.scored_by(None) and not taught.scored_by(None) and not student(2).scored_by(None)
    assert taught.score == -0.5 and taught.earlier_score(None) == -0.5
    assert stage_line([taught, kept]) == "stages: student 4 steps x 2/2, retry 4 steps x 1/2, teacher 12 steps x 1/2"
    assert cost_line([taught, kept]) == "average steps spent: 12 per sample"  # not student + teacher alone


def test_scores_of_another_oracle_do_not_count():
    by_a = Stage("gate", score=0.3, kept=True, settings={"oracle": "A"})
    by_b = Stage("gate", score=21.0, kept=True, settings={"oracle": "B"})
    r = student(0).then(by_a)
    assert r.scored_by("A") and not r.scored_by("B")
    improved = r.then(by_b).then(Stage("teacher", steps=8))
    assert improved.earlier_score("A") == 0.3 and improved.earlier_score("B") == 21.0
    assert r.then(Stage("retry", steps=4)).earlier_score("B") is None  # B never saw the earlier version
    twice = r.then(Stage("teacher", steps=8)).then(by_b).then(Stage("teacher", steps=8))
    assert twice.earlier_score("A") is None and twice.earlier_score("B") == 21.0  # A scored an older version


def test_decoded_images_and_earlier_versions_follow_their_rows_and_go_stale_with_them():
    recs = [student(b) for b in (0, 1)]
    lat = with_records({"samples": torch.zeros(2, 4, 8, 8)}, recs, images=["img0", "img1"],
                       earlier=[None, ("row1", "img1-before")])
    assert rows_of(lat, IMAGES_KEY) == ("img0", "img1") and rows_of(lat, EARLIER_KEY)[1] == ("row1", "img1-before")
    again = with_records(lat, recs)  # a node that does not pass them on drops them
    assert IMAGES_KEY not in again and rows_of(again, IMAGES_KEY) == (None, None)
    cut = {**lat, "samples": lat["samples"][:1], "batch_index": [0]}  # a core node cut the batch
    assert rows_of(cut, IMAGES_KEY) == (None,)
    with pytest.raises(ValueError):
        with_records({"samples": torch.zeros(2, 4, 8, 8)}, recs, images=["only one"])



def test_samples_a_core_node_changed_keep_their_records_but_no_score_or_image():
    """KSampler, LatentUpscale or SamplerCustom after Rollback Noise copy the LATENT dict with new
    samples: the records still say whose samples these are, but no gate's score holds any more."""
    gated = student(0).then(Stage("gate", score=0.4, kept=True, settings={"oracle": "A", "prompt": "a cat"}))
    lat = with_records({"samples": torch.zeros(1, 4, 8, 8)}, [gated], images=["img0"])
    assert records_of(lat)[0].scored_by("A", "a cat") and rows_of(lat, IMAGES_KEY) == ("img0",)
    masked = {**lat, "noise_mask": torch.ones(1, 1, 8, 8)}  # SetLatentNoiseMask keeps the samples
    assert records_of(masked) == records_of(lat) and rows_of(masked, IMAGES_KEY) == ("img0",)
    sampled = {**lat, "samples": torch.ones(1, 4, 16, 16)}  # KSampler / LatentUpscale
    again = records_of(sampled)[0]
    assert again.seed == 7 and again.stages[-1].kind == OUTSIDE and not again.scored_by("A", "a cat")
    assert rows_of(sampled, IMAGES_KEY) == (None,) and rows_of(sampled, EARLIER_KEY) == (None,)
    assert "plus what other nodes did to 1/1 samples (not counted)" in cost_line([again])


def test_noise_round_counts_the_times_a_sample_was_made_again():
    gate = Stage("gate", score=0.0, kept=False)
    assert student(0).noise_round == 0 and student(0).then(gate).noise_round == 0 and SampleRecord(0).noise_round == 0
    refined = student(0).then(gate).then(Stage("teacher", steps=4)).then(gate)
    assert refined.noise_round == 1 and refined.then(Stage(OUTSIDE)).noise_round == 2
    core = SampleRecord(0).then(gate).then(Stage("teacher", steps=4)).then(gate)  # came without its making
    assert core.noise_round == 1

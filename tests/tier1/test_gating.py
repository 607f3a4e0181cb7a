import math

import numpy as np
import pytest
import torch

from student_teacher.schedulers.batching import batch_indices, put_rows, shared_token_length, take_rows, take_sample_entries
from student_teacher.schedulers.errors import InputError
from student_teacher.schedulers.gating import decide, keep_better, percentile_threshold, resolve_threshold
from student_teacher.schedulers.record import bare_records

TAUS = {10: -0.6, 50: 0.6, 70: 1.09}


def test_samples_under_tau_go_to_the_teacher():
    d = decide(torch.tensor([0.5, 0.7, 0.6, -1.0]), resolve_threshold("tau", tau=0.6), bare_records([4, 5, 6, 7]))
    assert d.accepted.tolist() == [False, True, True, False]
    assert d.rejected == [0, 3]
    assert d.acceptance_rate == 0.5
    assert d.batch_index == [4, 5, 6, 7]
    assert [(r.last("gate").score, r.last("gate").kept) for r in d.records] == [
        (0.5, False), (pytest.approx(0.7), True), (pytest.approx(0.6), True), (-1.0, False)]
    text = "\n".join(d.lines())
    assert "#4: score +0.5000 -> to teacher" in text and "kept 2/4 (50%)" in text


def test_the_report_shows_each_samples_w():
    from student_teacher.schedulers.record import SampleRecord
    records = [SampleRecord(0, w=3.0), SampleRecord(1, w=7.5), SampleRecord(2)]
    lines = decide(torch.tensor([1.0, -1.0, 0.5]), resolve_threshold("tau", tau=0.0), records).lines()
    assert lines[1:4] == ["#0 (w 3): score +1.0000 -> kept", "#1 (w 7.5): score -1.0000 -> to teacher",
                          "#2: score +0.5000 -> kept"]


def test_decision_is_built_whole():
    d = decide(torch.zeros(2), resolve_threshold("tau", tau=0.0), bare_records([0, 1]), images=torch.ones(2, 3),
               budget_teacher_steps=12, notes=["a note"])
    assert d.images.shape == (2, 3) and d.budget_teacher_steps == 12 and d.lines()[-1] == "a note"
    with pytest.raises(Exception):
        d.notes = ()  # frozen: nobody completes it later
    with pytest.raises(InputError, match="latent: 1 samples but 2 scores"):
        decide(torch.zeros(2), resolve_threshold("tau"), bare_records([0]))


def test_percentile_and_budget_modes():
    assert resolve_threshold("percentile", k=70, taus=TAUS).tau == 1.09
    t = resolve_threshold("budget", budget=10, student_steps=4, teacher_steps=12, taus=TAUS)
    assert (t.k, t.tau) == (50, 0.6)


def test_extreme_percentiles_need_no_calibration_entry():
    assert percentile_threshold(TAUS, 0).tau == -math.inf
    assert percentile_threshold(TAUS, 100).tau == math.inf


def test_missing_percentile_names_the_available_ones():
    with pytest.raises(InputError, match=r"no 30th percentile.*\[10, 50, 70\]"):
        resolve_threshold("percentile", k=30, taus=TAUS, source="lcm.json")


def test_percentile_mode_without_calibration():
    with pytest.raises(InputError, match="calibration"):
        resolve_threshold("percentile", k=50, taus=None)


def test_rows_in_and_out():
    base = torch.arange(8.0).reshape(4, 2)
    assert torch.equal(take_rows(base, [1, 3], 4), base[[1, 3]])
    assert take_rows(base[:1], [1, 3], 4).shape[0] == 1  # broadcast rows pass through
    out = put_rows(base, [1, 3], torch.zeros(2, 2))
    assert torch.equal(out[[0, 2]], base[[0, 2]]) and not out[[1, 3]].any()
    with pytest.raises(InputError, match="latent"):
        put_rows(base, [1], torch.zeros(2, 2))


def test_batch_indices():
    x = torch.zeros(3, 4, 8, 8)
    assert batch_indices({"samples": x}) == [0, 1, 2]
    assert batch_indices({"samples": x, "batch_index": [5, 6, 7]}) == [5, 6, 7]
    with pytest.raises(InputError, match="batch_index"):
        batch_indices({"samples": x, "batch_index": [1]})


def test_keep_the_better_never_lowers_a_score():
    assert keep_better([0.5, -0.2, 0.3, 0.1], [0.4, 0.1, None, 0.1]) == [False, True, False, False]  # tie: new
    from student_teacher.schedulers.record import SampleRecord
    d = decide(torch.tensor([0.1]), resolve_threshold("tau", tau=0.0), [SampleRecord(0)], new_scores=[-0.2])
    assert d.records[0].last("gate").settings["new_score"] == -0.2
    assert "kept the earlier version: the new one scored -0.2000" in d.lines()[1]


def test_prompt_lists_share_a_token_length_within_reason():
    assert shared_token_length([77, 154, 77]) == 154 and shared_token_length([77, 154, 231]) == 462
    with pytest.raises(InputError, match="prompts: prompts of 77, 154, 231, 308, 385 tokens .* 4620 tokens"):
        shared_token_length([77 * n for n in range(1, 6)])  # 60 chunks a row for prompts of at most 5


def test_a_gate_stage_records_the_text_it_scored():
    d = decide(torch.tensor([0.5]), resolve_threshold("tau"), bare_records([0]), oracle="A", prompts=["a cat"])
    r = d.records[0]
    assert r.scored_by("A", "a cat") and not r.scored_by("A", "a dog") and not r.scored_by("B", "a cat")


def test_every_per_sample_entry_of_the_extras_follows_its_sample():
    masks, inpaint = torch.arange(4.0)[:, None, None].expand(4, 2, 2), torch.arange(4.0).reshape(4, 1, 1, 1)
    extras = {"mask": masks, "concat_latent_image": inpaint, "pooled_output": torch.arange(8.0).reshape(4, 2),
              "reference_latents": [inpaint], "nested": {"x": inpaint}, "shared": inpaint[:1],
              "area": (8, 8, 0, 0), "strength": 1.0}
    out = take_sample_entries(extras, [2], 4)
    assert torch.equal(out["mask"], masks[[2]]) and torch.equal(out["concat_latent_image"], inpaint[[2]])
    assert torch.equal(out["pooled_output"], torch.tensor([[4.0, 5.0]]))
    assert torch.equal(out["reference_latents"][0], inpaint[[2]]) and torch.equal(out["nested"]["x"], inpaint[[2]])
    assert out["shared"] is extras["shared"]  # batch 1 broadcasts
    assert out["area"] == (8, 8, 0, 0) and out["strength"] == 1.0  # a 4-tuple is no per-sample entry


def test_each_students_calibration_comes_from_its_own_input():
    from student_teacher.schedulers.gating import calibration_of
    files = ["one.json", "two.json", "none", "none"]
    assert calibration_of(None, "percentile", files) == ("calibration", "one.json")
    assert calibration_of(2, "percentile", files) == ("calibration_2", "two.json")
    assert calibration_of(2, "tau", files) == ("calibration_2", "none")  # tau mode reads student 1's only
    assert calibration_of(1, "tau", files) == ("calibration", "one.json")
    with pytest.raises(InputError, match="calibration_5: the samples come from student 5"):
        calibration_of(5, "percentile", files)


def test_a_chained_gate_scores_only_what_changed_since_its_oracle_scored_it():
    from student_teacher.schedulers.gating import rows_to_score
    from student_teacher.schedulers.record import SampleRecord, Stage
    scored = Stage("gate", score=0.5, kept=False, settings={"oracle": "IR", "prompt": "a cat"})
    records = [SampleRecord(0, stages=(Stage("student", 4), scored)),                       # unchanged
               SampleRecord(1, stages=(Stage("student", 4), scored, Stage("teacher", 8))),  # improved since
               SampleRecord(2, stages=(Stage("student", 4),))]                              # never scored
    assert rows_to_score(records, "IR", ["a cat"] * 3) == [1, 2]
    assert rows_to_score(records, "PickScore", ["a cat"] * 3) == [0, 1, 2]  # another oracle's scale
    assert rows_to_score(records, "IR", ["a dog"] * 3) == [0, 1, 2]         # another question


def test_calibration_settings_and_prompts_of_the_gate():
    from student_teacher.schedulers.gating import calibration_mismatch, sample_prompts
    from student_teacher.schedulers.record import SampleRecord, Stage
    made = Stage("student", 4, settings={"steps": 4, "cfg": 1.0, "schedule": "lcm"})
    records = [SampleRecord(0, prompt="a cat", w=3.0, stages=(made,)), SampleRecord(1, prompt="a dog", w=5.0,
                                                                                   stages=(made,))]
    assert calibration_mismatch({"steps": 4, "cfg": 1.0, "w": [3.0, 5.0]}, records) == []
    notes = calibration_mismatch({"steps": 2, "w": [8.0]}, records)
    assert len(notes) == 2 and "steps = 2" in notes[0] and "w = [8.0]" in notes[1]
    assert sample_prompts("", records) == ["a cat", "a dog"]
    assert sample_prompts("override", records) == ["override", "override"]
    with pytest.raises(InputError, match="prompt: the gate has no prompt"):
        sample_prompts(" ", [SampleRecord(0)])


def test_the_gate_compares_as_the_measured_curve_does():
    """tau is a float64 percentile of float32 scores; between two float32 neighbours it must not round
    onto the lower one (the curve, in float64, sends that sample to the teacher)."""
    from student_teacher.schedulers.measure import adaptive_curve
    one, next_up = 1.0, float(np.nextafter(np.float32(1.0), np.float32(2.0)))
    scores = [one, next_up, 3.0]
    point = adaptive_curve(scores, [0.0] * 3, [1.0] * 3, 4, 12, ks=[10])[0]
    assert one < point.tau < next_up
    d = decide(torch.tensor(scores), resolve_threshold("tau", tau=point.tau), bare_records([0, 1, 2]))
    assert d.accepted.tolist() == [False, True, True] and point.improved == pytest.approx(1 / 3)

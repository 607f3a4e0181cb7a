"""Student against teacher from per-prompt data: the adaptive curve, win rates and the k a user asks for."""
import dataclasses
import json
import math

import numpy as np
import pytest

from student_teacher.oracle.calibration import (ShardRefused, calibration_data, merge_calibrations, prompt_id,
                                                read_calibration, write_new)
from student_teacher.schedulers.errors import InputError
from student_teacher.schedulers.gating import resolve_threshold
from student_teacher.schedulers.measure import (MEASUREMENT, adaptive_curve, best_for_budget, best_k, cheapest_within,
                                                gated_result, held_out_best, measured_k, measurement_of,
                                                measurement_report, measurement_settings, require_finite_scores,
                                                win_rate)
from student_teacher.schedulers.measure_plot import render_curve


def data(n=200, seed=0):
    """Gate scores correlated with the judge's view of the student; the improved sample is better on
    average, and worse for some prompts (the paper's point: some students beat their teacher)."""
    rng = np.random.default_rng(seed)
    gate = rng.normal(size=n)
    student = 0.7 * gate + 0.3 * rng.normal(size=n)
    improved = rng.normal(0.3, 0.8, size=n)
    return gate, student, improved


@pytest.mark.parametrize("k", [0, 10, 37, 50, 90, 100])
def test_each_point_is_a_direct_gated_run_on_those_data(k):
    gate, student, improved = data()
    cal = np.random.default_rng(5).normal(size=300)  # held-out student scores
    point = adaptive_curve(gate, student, improved, 4, 12, calibration_scores=cal, ks=[k])[0]
    # the gated run, written out: tau the k-th percentile, keep at or above it
    tau = -math.inf if k == 0 else math.inf if k == 100 else float(np.percentile(cal, k))
    final = [s if g >= tau else i for g, s, i in zip(gate, student, improved)]
    sent = sum(g < tau for g in gate) / len(gate)
    assert point.tau == tau
    assert point.quality == pytest.approx(float(np.mean(final)), abs=1e-12)
    assert point.improved == pytest.approx(sent) and point.cost == pytest.approx(4 + sent * 12)


def test_the_ends_are_student_only_and_improve_all():
    gate, student, improved = data()
    curve = adaptive_curve(gate, student, improved, 4, 12)
    assert curve[0].quality == pytest.approx(student.mean()) and curve[0].cost == 4
    assert curve[-1].quality == pytest.approx(improved.mean()) and curve[-1].cost == 16
    assert [p.k for p in curve] == list(range(101))
    # on its own prompts, k percent of them go to the teacher (up to the percentile's rounding)
    assert curve[50].improved == pytest.approx(0.5, abs=0.01)


def test_gating_beats_both_ends_when_the_gate_knows_the_bad_samples():
    gate, student, improved = data()
    curve = adaptive_curve(gate, student, improved, 4, 12)
    best = best_k(curve)
    assert 0 < best.k < 100
    assert best.quality > max(curve[0].quality, curve[-1].quality)


def test_k_for_a_budget_and_within_a_tolerance():
    gate, student, improved = data()
    curve = adaptive_curve(gate, student, improved, 4, 12)
    p = best_for_budget(curve, 8.0)
    assert p.cost <= 8.0 and p.quality == max(q.quality for q in curve if q.cost <= 8.0)
    assert best_for_budget(curve, 100.0) == best_k(curve)
    with pytest.raises(InputError, match="budget"):
        best_for_budget(curve, 3.0)
    exact = cheapest_within(curve, 0.0)
    assert exact.quality == best_k(curve).quality
    loose = cheapest_within(curve, 20.0)
    base, top = curve[0].quality, best_k(curve).quality
    assert loose.cost <= exact.cost and loose.quality >= base + 0.8 * (top - base) - 1e-12
    assert cheapest_within(curve, 100.0).k == 0  # any point keeps 0 % of the gain: the student alone
    with pytest.raises(InputError, match="tolerance"):
        cheapest_within(curve, float("nan"))


def test_win_rate_and_its_wilson_interval():
    ours = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    theirs = [0.5] * 10
    w = win_rate(ours, theirs)
    assert w.rate == 0.7 and w.n == 10
    assert (w.low, w.high) == (pytest.approx(0.3968, abs=1e-4), pytest.approx(0.8922, abs=1e-4))  # Wilson 1927
    assert win_rate([1, 2], [1, 2]).rate == 0.5  # ties count half
    all_win = win_rate([1] * 5, [0] * 5)
    assert all_win.rate == 1.0 and all_win.high == 1.0 and all_win.low < 1.0
    with pytest.raises(InputError, match="theirs"):
        win_rate([1, 2], [1])


def test_non_finite_scores_are_refused():
    with pytest.raises(InputError, match="judge_student"):
        gated_result([0.0], [float("nan")], [0.0], 0.0)


# --- a measurement as a calibration file keeps it -------------------------------------------------------

ORACLE = {"kind": "ImageReward", "name": "ImageReward.pt", "fingerprint": "g"}
JUDGE = {"kind": "PickScore", "name": "PickScore_v1.safetensors", "fingerprint": "j"}


def measured_file(indices, judge=JUDGE, teacher=True, created="monday", oracle=ORACLE):
    """A measured calibration of the prompts `indices` of one list, as the Measure node writes it."""
    gate, student, improved = data(40)
    teacher_scores = improved + 0.1
    columns = {"gate_improved": gate + 0.5, "judge_student": student, "judge_improved": improved}
    if teacher:
        columns.update(gate_teacher=gate + 0.6, judge_teacher=teacher_scores)
    meta = {"steps": 4, "oracle": oracle, "created": created,
            MEASUREMENT: measurement_settings(judge, oracle, 4, 12, 25 if teacher else 0, strategy="refine")}
    return calibration_data(gate[list(indices)], metadata=meta, prompt_indices=list(indices),
                            prompt_ids=[prompt_id(f"p{i}") for i in indices],
                            columns={c: v[list(indices)] for c, v in columns.items()})


def test_a_measured_file_reads_back_exactly(tmp_path):
    gate, student, improved = data(40)
    write_new(tmp_path / "m.json", measured_file(range(40)))
    taus, meta = read_calibration(tmp_path / "m.json")
    m = measurement_of(meta, "m.json")
    assert np.array_equal(m.judge["student"], student) and np.array_equal(m.gate["student"], gate)
    assert m.teacher_alone_steps == 25 and not m.same_judge
    assert [(p.k, p.quality, p.cost) for p in m.curve()] == \
        [(p.k, p.quality, p.cost) for p in adaptive_curve(gate, student, improved, 4, 12)]
    assert taus[30] == pytest.approx(float(np.percentile(gate, 30)), abs=0)  # the gate's tau: the same scores


def test_a_calibration_of_todays_format_still_loads(tmp_path):
    """Files of the format before measurements (raw scores, three columns) and the official percentile
    files load as before; they simply measured nothing."""
    plain = calibration_data(data(20)[0], metadata={"steps": 4}, prompt_indices=list(range(20)),
                             prompt_ids=[prompt_id(str(i)) for i in range(20)])
    assert set(plain["metadata"]["samples"]) == {"prompt_index", "prompt_id", "score"}
    write_new(tmp_path / "plain.json", plain)
    write_new(tmp_path / "official.json", {"10": -0.6, "50": 0.2, "90": 1.6})
    for file in ("plain.json", "official.json"):
        taus, meta = read_calibration(tmp_path / file)
        assert measurement_of(meta, file) is None and taus[50] is not None
    with pytest.raises(InputError, match="measured nothing"):
        measured_k(None, "cheapest within", 10, 5, "plain.json")


def test_measurement_shards_merge_into_the_one_run_file():
    whole = measured_file(range(40))
    whole["metadata"].pop("created")
    parts = [("b", measured_file(range(17, 40), created="tue")), ("a", measured_file(range(17), created="wed"))]
    merged = merge_calibrations(parts)
    merged["metadata"].pop("merged_from")
    merged["metadata"].pop("prompt_count")
    assert json.dumps(merged, sort_keys=True) == json.dumps(whole, sort_keys=True)
    with pytest.raises(ShardRefused, match="teacher_alone_steps"):  # a shard without the teacher alone
        merge_calibrations([parts[0], ("c", measured_file(range(17), teacher=False))])
    lacking = measured_file(range(17))
    del lacking["metadata"]["samples"]["judge_teacher"]
    with pytest.raises(ShardRefused, match="measured"):  # a shard whose columns differ
        merge_calibrations([parts[0], ("c", lacking)])
    with pytest.raises(ShardRefused, match="measurement"):  # another judge
        merge_calibrations([parts[0], ("c", measured_file(range(17), judge=dict(JUDGE, fingerprint="x")))])
    # the same oracles under other file names (another server's models folder) merge as the same
    renamed = measured_file(range(17), judge=dict(JUDGE, name="pickscore.safetensors"),
                            oracle=dict(ORACLE, name="ImageReward-v1.0.pt"))
    assert merge_calibrations([parts[0], ("c", renamed)])["metadata"]["samples"] == \
        merge_calibrations(parts)["metadata"]["samples"]


def test_measured_modes_pick_k_from_the_curve():
    m = measurement_of(measured_file(range(40))["metadata"], "m.json")
    curve = m.curve()
    point, how = measured_k(m, "best for budget", 10, 5, "m.json")
    assert point == best_for_budget(curve, 10) and point.cost <= 10 and f"k = {point.k}" in how
    point, how = measured_k(m, "cheapest within", 10, 5, "m.json")
    assert point == cheapest_within(curve, 5)
    with pytest.raises(InputError, match="budget"):
        measured_k(m, "best for budget", 3, 5, "m.json")


def test_the_report_says_loudly_when_the_judge_is_the_gate():
    honest = measurement_report(measurement_of(measured_file(range(40))["metadata"], "m"), 5)
    flattering = measurement_report(measurement_of(measured_file(range(40), judge=ORACLE)["metadata"], "m"), 5)
    assert not any("WARNING" in line for line in honest)
    assert flattering[1].startswith("WARNING: the judge IS the gating oracle")
    assert any(line.startswith("student beats teacher alone by PickScore") for line in honest)
    assert any(line.startswith("best k = ") for line in honest)


def test_the_plot_is_drawn_from_the_curve():
    m = measurement_of(measured_file(range(40))["metadata"], "m")
    image = render_curve(m, 5, width=640, height=400)
    assert image.shape == (400, 640, 3) and image.dtype == np.uint8
    assert (image != 255).any(axis=2).mean() > 0.02   # a curve, axes and labels, not a blank image


def test_an_edited_measured_file_serves_the_other_modes_and_says_what_it_lacks():
    """read_calibration's advice for an edited file is to delete its samples: the stored percentiles then
    serve percentile and budget as before, and only the measured modes need the measurement."""
    meta = measured_file(range(40))["metadata"]
    taus = {k: float(np.percentile(data(40)[0], k)) for k in (10, 50, 90)}
    edited = {k: v for k, v in meta.items() if k != "samples"}
    assert resolve_threshold("percentile", k=50, taus=taus, metadata=edited).tau == taus[50]
    assert resolve_threshold("budget", budget=10, student_steps=4, teacher_steps=12, taus=taus, metadata=edited).k
    with pytest.raises(InputError, match="not its per-prompt scores") as e:
        resolve_threshold("cheapest within", taus=taus, metadata=edited, source="m.json")
    assert e.value.input_name == "calibration" and "NoneType" not in str(e.value)
    lacking = {**meta, MEASUREMENT: {k: v for k, v in meta[MEASUREMENT].items() if k != "judge"}}
    with pytest.raises(InputError, match="lacks judge"):
        measurement_of(lacking, "m.json")
    with pytest.raises(InputError, match="must be an object"):
        measurement_of({**meta, MEASUREMENT: "yes"}, "m.json")


def test_the_held_out_check_chooses_k_on_one_half_and_judges_the_other():
    m = measurement_of(measured_file(range(40))["metadata"], "m.json")
    even = np.arange(40) % 2 == 0
    by_hand = []
    for pick, use in ((even, ~even), (~even, even)):
        tau = float(np.percentile(m.gate["student"][pick], best_k(adaptive_curve(
            m.gate["student"][pick], m.judge["student"][pick], m.judge["improved"][pick], 4, 12)).k))
        by_hand += [s if g >= tau else i for g, s, i in
                    zip(m.gate["student"][use], m.judge["student"][use], m.judge["improved"][use])]
    assert held_out_best(m) == pytest.approx(float(np.mean(by_hand)), abs=1e-12)
    assert any("other half" in line for line in measurement_report(m, 5))
    # a gate that knows nothing: choosing k on the judged prompts flatters, the held-out figure does not
    rng = np.random.default_rng(3)
    blind = dataclasses.replace(m, gate={"student": rng.normal(size=40), "improved": m.gate["improved"]})
    assert held_out_best(blind) < best_k(blind.curve()).quality
    few = measurement_of(measured_file(range(10))["metadata"], "m.json")
    assert held_out_best(few) is None and not any("other half" in line for line in measurement_report(few, 5))


def test_a_nan_score_stops_the_batch_naming_the_oracle_and_the_prompt():
    ok = {"score": [0.1, 0.2], "gate_improved": [0.3, 0.4], "judge_student": [1.0, 2.0]}
    require_finite_scores(ok, [7, 8])
    with pytest.raises(InputError, match="improved sample of prompt 8") as e:
        require_finite_scores({**ok, "gate_improved": [0.3, math.nan]}, [7, 8])
    assert e.value.input_name == "oracle"
    with pytest.raises(InputError, match="student sample of prompt 7") as e:
        require_finite_scores({**ok, "judge_student": [math.inf, 2.0]}, [7, 8])
    assert e.value.input_name == "judge" and "fp32" in e.value.fix

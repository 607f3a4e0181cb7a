"""Calibration core: percentiles, the IR_percentiles_*.json format (+ metadata), histogram."""
import json
import os

import numpy as np
import pytest

from student_teacher.oracle.calibration import (DEFAULT_KS, CalibrationError, CalibrationExists, percentile_thresholds,
                                read_calibration, save_calibration_as, write_calibration)
from student_teacher.oracle.histogram import render_histogram

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REF = os.path.join(ROOT, "calibration")  # the paper's IR_percentiles_*.json, shipped as presets
REF_FILES = ["lcm_sdxl_4steps_paper.json", "sdxl_turbo_2steps_paper.json"]


def scores(n=500, seed=0):
    return np.random.RandomState(seed).randn(n) * 0.9 + 0.4


def test_percentiles_equal_numpy():
    s = scores()
    taus = percentile_thresholds(s)
    assert list(taus) == [str(k) for k in DEFAULT_KS]
    for k, v in taus.items():
        assert v == float(np.percentile(s, int(k)))
    assert percentile_thresholds([1.0, 2.0, 3.0, 4.0], ks=(25, 50)) == {"25": 1.75, "50": 2.5}
    assert percentile_thresholds(s, ks=(12.5,)) == {"12.5": float(np.percentile(s, 12.5))}


def test_percentiles_accept_torch():
    torch = pytest.importorskip("torch")
    s = scores()
    t = percentile_thresholds(torch.tensor(s, dtype=torch.float32))
    ref = percentile_thresholds(s.astype(np.float32))
    assert t == pytest.approx(ref)


@pytest.mark.parametrize("bad,match", [([], "no scores"), ([1.0, float("nan")], "NaN"),
                                       ([1.0], None)])
def test_percentile_input_errors(bad, match):
    if match is None:
        with pytest.raises(CalibrationError, match="outside 0..100"):
            percentile_thresholds(bad, ks=(150,))
        return
    with pytest.raises(CalibrationError, match=match):
        percentile_thresholds(bad)


def test_write_then_read_roundtrip(tmp_path):
    s = scores()
    p = tmp_path / "sub" / "calib.json"
    meta = {"model": "ImageReward.safetensors", "prompts": "coco5000", "steps": 4}
    data = write_calibration(p, s, DEFAULT_KS, meta)
    raw = json.loads(p.read_text())
    assert raw == data
    for k in DEFAULT_KS:  # the official flat format stays top-level
        assert raw[str(k)] == float(np.percentile(s, k))
    assert raw["metadata"]["model"] == "ImageReward.safetensors"
    assert raw["metadata"]["n_scores"] == 500
    taus, m = read_calibration(p)
    assert list(taus) == list(DEFAULT_KS) and all(isinstance(k, int) for k in taus)
    assert taus[50] == float(np.percentile(s, 50))
    assert m["steps"] == 4 and m["prompts"] == "coco5000"
    assert not [f for f in os.listdir(p.parent) if f.startswith(".calib-")]


@pytest.mark.parametrize("name", REF_FILES)
def test_reference_files_load(name):
    path = os.path.join(REF, name)
    taus, meta = read_calibration(path)
    assert meta == {}
    assert list(taus) == list(DEFAULT_KS)
    with open(path) as f:
        raw = json.load(f)
    assert taus[10] == raw["10"] and taus[90] == raw["90"]
    assert all(a < b for a, b in zip(list(taus.values()), list(taus.values())[1:]))


def test_an_existing_calibration_is_never_replaced(tmp_path):
    p = tmp_path / "mine.json"
    write_calibration(p, scores(seed=1))
    before = p.read_bytes()
    with pytest.raises(CalibrationExists, match="mine.json exists already"):
        write_calibration(p, scores(seed=2))
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["mine.json"]  # no temporary file left


def test_a_calibration_file_is_created_like_any_other_file(tmp_path):
    old = os.umask(0o022)
    try:
        write_calibration(tmp_path / "c.json", scores())
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "c.json").st_mode & 0o777 == 0o644  # not a temp file's 0600


def test_save_as_picks_a_free_name(tmp_path):
    first, _ = save_calibration_as(tmp_path, "student", scores(seed=1))
    second, data = save_calibration_as(tmp_path, "student", scores(seed=2))
    third, _ = save_calibration_as(tmp_path, "student", scores(seed=3))
    assert [os.path.basename(p) for p in (first, second, third)] == ["student.json", "student_2.json",
                                                                     "student_3.json"]
    assert read_calibration(second)[0][50] == data["50"]
    assert read_calibration(first)[0][50] == float(np.percentile(scores(seed=1), 50))


def test_errors_name_the_file_not_its_folders(tmp_path):
    p = tmp_path / "deep" / "broken.json"
    p.parent.mkdir()
    p.write_text("{")
    with pytest.raises(CalibrationError) as e:
        read_calibration(p)
    assert "broken.json" in str(e.value) and str(tmp_path) not in str(e.value)


@pytest.mark.parametrize("content,match", [
    ("not json", "not valid JSON"), ("[1, 2]", "not an object"), ('{"ten": 1.0}', "not a percentile"),
    ('{"10": "x"}', "not a finite number"), ('{"metadata": {}}', "no percentiles"),
    ('{"10": 1.0, "metadata": 3}', "metadata"), ('{"120": 1.0}', "outside 0..100")])
def test_read_errors(tmp_path, content, match):
    p = tmp_path / "c.json"
    p.write_text(content)
    with pytest.raises(CalibrationError, match=match):
        read_calibration(p)


def test_read_missing_file(tmp_path):
    with pytest.raises(CalibrationError, match="does not exist"):
        read_calibration(tmp_path / "none.json")


def test_write_rejects_unserialisable_metadata(tmp_path):
    with pytest.raises(CalibrationError, match="JSON"):
        write_calibration(tmp_path / "c.json", scores(), DEFAULT_KS, {"x": object()})
    assert not (tmp_path / "c.json").exists()


def test_histogram_image():
    s = scores()
    taus = percentile_thresholds(s)
    im = render_histogram(s, taus, width=640, height=320, title="test")
    assert im.shape == (320, 640, 3) and im.dtype == np.uint8
    red = (im[..., 0] > 150) & (im[..., 1] < 80) & (im[..., 2] < 80)
    blue = (im[..., 2] > 150) & (im[..., 0] < 120)
    assert red.sum() > 9 * 100  # nine vertical percentile lines (+ labels)
    assert blue.sum() > 1000  # bars
    # one line per tau: count red columns spanning much of the plot height
    cols = np.where(red.sum(0) > 100)[0]
    groups = np.split(cols, np.where(np.diff(cols) > 1)[0] + 1)
    assert len(groups) == 9


def test_histogram_degenerate_inputs():
    im = render_histogram([0.5] * 10, {50: 0.5}, width=200, height=100)
    assert im.shape == (100, 200, 3)
    with pytest.raises(CalibrationError, match="too small"):
        render_histogram([0.1], {}, width=10, height=10)



def test_save_as_treats_names_of_other_calibration_folders_as_taken(tmp_path):
    """A new file must not hide a preset (or a file of another folder) of the same name in the gate's list."""
    path, _ = save_calibration_as(tmp_path, "lcm_sdxl_4steps_paper", scores(), taken=["lcm_sdxl_4steps_paper.json"])
    assert os.path.basename(path) == "lcm_sdxl_4steps_paper_2.json"


def test_ensemble_members_must_be_calibrated_on_the_same_samples():
    from student_teacher.oracle.ensemble import other_samples
    first = {"steps": 4, "cfg": 1.0, "student": "student 1", "samples": {"prompt_id": ["a", "b"]}}
    assert other_samples(dict(first), first) is None
    assert other_samples({"steps": 4}, first) is None  # an official file says less: compared on what both say
    assert "steps = 2" in other_samples(dict(first, steps=2), first)
    assert "student = 'student 2'" in other_samples(dict(first, student="student 2"), first)
    assert "other prompts" in other_samples(dict(first, samples={"prompt_id": ["a", "c"]}), first)

"""Routing prompts to students (host-free): embeddings, keywords, centroid files, K-means splits,
best-of, per-student thresholds and per-student cost accounting."""
import time

import pytest
import torch

from student_teacher.schedulers.errors import InputError
from student_teacher.schedulers.gating import Threshold, decide
from student_teacher.schedulers.record import SampleRecord, Stage, per_student_lines
from student_teacher.schedulers.routing import (balanced_assign, best_of, keyword_student, kmeans, nearest_centroid, nearest_student,
                                read_centroids, student_lines, write_centroids)

E = torch.eye(4)


def test_student_lines():
    assert student_lines("1: a cat\n\n2: a dog\n1:  a kitten ", 2, "rules") == {0: ["a cat", "a kitten"],
                                                                              1: ["a dog"]}
    for bad in ("a cat", "3: a cat", "x: a cat"):
        with pytest.raises(InputError, match="rules: line"):
            student_lines(bad, 2, "rules")

    for bad in ("\u00b2: a cat", "1\u00b9: a cat"):  # digits int() does not read
        with pytest.raises(InputError, match="rules: line"):
            student_lines(bad, 2, "rules")


def test_nearest_prototype_wins():
    prompts = torch.stack([E[0] + 0.1 * E[1], E[2], E[3]])
    protos = [torch.stack([E[0], E[3]]), torch.stack([E[2]]), None]
    assert nearest_student(prompts, protos) == [0, 1, 0]   # student 3 has no prototypes: never chosen
    assert nearest_student(E[[1]], [E[[0]], E[[2]]]) == [0]  # a tie goes to the lower student
    with pytest.raises(InputError, match="no student has a prototype"):
        nearest_student(prompts, [None, torch.zeros(0, 4)])


def test_keywords_first_match_in_student_order_else_default():
    rules = {0: [r"\bcat"], 1: ["dog|wolf", "CAT"]}
    assert keyword_student(["A cat", "a wolf", "a bird", "catalogue"], rules, default=1) == [0, 1, 1, 0]
    with pytest.raises(InputError, match="rules: student 2"):
        keyword_student(["x"], {0: [], 1: ["("]}, 0)


def test_centroid_file_round_trip_and_routing(tmp_path):
    centroids = torch.stack([E[0], E[1]])
    path = tmp_path / "groups.json"
    write_centroids(str(path), centroids, [3, 2], "test")
    table, meta = read_centroids(str(path))
    assert torch.allclose(table, centroids) and meta["sizes"] == [3, 2]
    assert nearest_centroid(torch.stack([E[1] + 0.2 * E[0], E[0]]), table) == [1, 0]
    with pytest.raises(FileExistsError):
        write_centroids(str(path), centroids, [3, 2], "test")
    with pytest.raises(InputError, match="centroids: the centroids are 4-wide, the prompt embeddings 3-wide"):
        nearest_centroid(torch.zeros(1, 3), table)
    (tmp_path / "bad.json").write_text('{"centroids": [[1, 2]]}')
    with pytest.raises(InputError, match="centroids: bad.json is not a centroid file"):
        read_centroids(str(tmp_path / "bad.json"))


def test_a_pattern_that_backtracks_without_end_is_refused_in_bounded_time(monkeypatch):
    import student_teacher.schedulers.routing as routing
    monkeypatch.setattr(routing, "MATCH_SECONDS", 0.3)
    start = time.monotonic()
    with pytest.raises(InputError, match=r"rules: student 2's pattern .* did not finish matching prompt 2"):
        keyword_student(["a cat", "a" * 40 + "!"], {0: ["dog"], 1: [r"^(a|a)*$"]}, 0)
    assert time.monotonic() - start < 5  # bounded (the real limit is MATCH_SECONDS; no timing asserted)
    assert keyword_student(["a photo of a cat " * 20 + "!"], {0: [r"^(\w+\s?)+$"]}, 1) == [1]


def blobs(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([E[c] * 5 + 0.3 * torch.randn(n, 4, generator=g) for c, n in enumerate(sizes)])


def test_kmeans_finds_the_groups_and_is_reproducible():
    x = blobs([6, 6, 6])
    labels, centroids = kmeans(x, 3, seed=1)
    groups = [set(labels[i * 6:(i + 1) * 6].tolist()) for i in range(3)]
    assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 3
    again, _ = kmeans(x, 3, seed=1)
    assert torch.equal(labels, again) and centroids.shape == (3, 4)
    with pytest.raises(InputError, match="k: 5 groups of 4 prompts"):
        kmeans(x[:4], 5)


def test_balanced_kmeans_gives_equal_groups():
    x = blobs([8, 2, 1])           # unbalanced data, 11 points
    labels, _ = kmeans(x, 3, seed=0, balanced=True)
    assert sorted(torch.bincount(labels, minlength=3).tolist()) == [3, 4, 4]
    free, _ = kmeans(x, 3, seed=0)
    assert sorted(torch.bincount(free, minlength=3).tolist()) == [1, 2, 8]


def test_balanced_assign_respects_sizes_and_preference():
    dist = torch.tensor([[0.0, 1.0], [0.0, 0.2], [0.0, 0.9]])
    assert balanced_assign(dist).tolist() == [0, 1, 0]  # the point that loses least moves


@pytest.mark.parametrize("n, k", [(10, 4), (11, 3), (7, 7), (9, 2), (5, 1)])
def test_balanced_groups_differ_by_at_most_one(n, k):
    """MSD's equal split, even when every point prefers one cluster (ceil(n/k) for each would give
    [1, 3, 3, 3] for 10 points in 4 groups)."""
    dist = torch.arange(k, dtype=torch.float32).expand(n, k) + 0.01 * torch.rand(n, k)
    sizes = torch.bincount(balanced_assign(dist), minlength=k).tolist()
    assert sum(sizes) == n and max(sizes) - min(sizes) <= 1, sizes


def test_best_of_picks_each_prompts_best_student():
    assert best_of(torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.5]])) == [1, 0, 0]


def test_each_sample_gets_its_students_threshold_and_cost():
    records = [SampleRecord(b, student=1 + b % 2, stages=(Stage("student", steps=4 if b % 2 else 2),))
               for b in range(4)]
    t1, t2 = Threshold(0.5, 50, "tau 1"), Threshold(-0.5, 50, "tau 2")
    d = decide(torch.tensor([0.0, 0.0, 1.0, -1.0]), [t1, t2, t1, t2], records)
    assert d.accepted.tolist() == [False, True, True, False]
    lines = d.lines()
    assert lines[:2] == ["student 1: tau 1", "student 2: tau 2"] and "#0 (student 1): score +0.0000 -> to teacher" in lines
    teacher = Stage("teacher", steps=10)
    done = [r.then(teacher) if not ok else r for r, ok in zip(d.records, d.accepted.tolist())]
    assert per_student_lines(done) == ["student 1: 2 samples, kept 1/2, average steps 7",
                                       "student 2: 2 samples, kept 1/2, average steps 9"]


def test_each_student_is_calibrated_on_its_own_share_of_the_prompts():
    from student_teacher.schedulers.routing import calibration_student_problem, prompts_of_students
    assert prompts_of_students([1, 0, 1, 2, 1], 3) == [[1], [0, 2, 4], [3]]
    assert prompts_of_students([0, 0], 2) == [[0, 1], []]
    routed = {"student": "student 2", "students": 3}
    assert calibration_student_problem(routed, 2) is None
    assert "calibrated for student 2 (one of 3 routed students) but the samples come from student 1" in \
        calibration_student_problem(routed, None)
    assert calibration_student_problem({"student": "student 1"}, 3) is None  # calibrated alone
    assert calibration_student_problem({}, 2) is None  # an official file says nothing

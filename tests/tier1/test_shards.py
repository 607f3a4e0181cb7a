"""Distributed runs (schedulers/shards.py, what tools/distribute.py decides with): the shard plan, the workflow a
shard sends, the work folder's manifest and resume state, and the run's state through finished, failed and lost
shards, lost and refusing servers, and the progress line."""
import json

import numpy as np
import pytest

from student_teacher.oracle.calibration import calibration_data, merge_calibrations, prompt_id
from student_teacher.schedulers.shards import (DEFAULT_SERVER, MANIFEST, DistributeError, Run, Shard, check_manifest,
                                               done_shards, files_by_position, files_per_shard, output_paths,
                                               plan_shards, progress_line, prompt_lines, result_problem, run_manifest,
                                               server_urls, shard_graph, target_node)

CAL, MEASURE = "StudentTeacherCalibrateThreshold", "StudentTeacherMeasureStudentVsTeacher"
A, B, C = "http://a:8188", "http://b:8188", "http://c:8188"


def workflow(class_type=CAL, **inputs):
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
            "7": {"class_type": class_type, "inputs": {"model": ["1", 0], "prompts": "typed in the UI",
                                                       "prompts_file": "calibration_prompts.txt", "first_prompt": 0,
                                                       "max_prompts": 0, "filename": "mine", "steps": 4, **inputs}}}


def shard_files(shard, students=1, routed=False):
    """What a node gives for a shard: one calibration per student, raw scores of the shard's prompts (all of
    them each, or routed: student s the prompts at positions s, s + students, ...)."""
    out = []
    for s in range(students):
        index = list(range(shard.first, shard.first + shard.count))
        index = index[s::students] if routed else index
        scores = [np.sin(i + 10 * s) for i in index]
        data = calibration_data(scores, metadata={"steps": 4, "created": f"made on some server {s}"},
                                prompt_indices=index, prompt_ids=[prompt_id(f"p{i}") for i in index])
        out.append({"file": f"x_student{s + 1}.json", "data": data})
    return out


def test_prompt_lines_read_as_the_nodes_read_them():
    assert prompt_lines("\ufeffa cat\r\n\n  a dog  \n\t\nthe sea") == ["a cat", "a dog", "the sea"]


@pytest.mark.parametrize("total,size,expected", [
    (12, 3, [(0, 3), (3, 3), (6, 3), (9, 3)]),
    (11, 3, [(0, 3), (3, 3), (6, 3), (9, 2)]),
    (10, 3, [(0, 3), (3, 3), (6, 4)]),  # a last prompt alone joins the shard before: the nodes refuse one prompt
    (5, 50, [(0, 5)]),
    (2, 2, [(0, 2)]),
])
def test_plan_covers_every_prompt_once_with_at_least_two_per_shard(total, size, expected):
    shards = plan_shards(total, size)
    assert [(s.first, s.count) for s in shards] == expected
    assert [s.index for s in shards] == list(range(len(shards)))
    assert sum(s.count for s in shards) == total and all(s.count >= 2 for s in shards)


def test_shard_names_say_its_prompts_not_its_server():
    s = Shard(3, 150, 50)
    assert s.name == "shard 0003 (prompts 150-199)" and s.file == "shard_0003.json"


@pytest.mark.parametrize("total,size,match", [(10, 1, "--shard-size 2 or more"), (1, 50, "1 prompt"),
                                              (0, 50, "0 prompt"), (100001, 50, "files of at most 100000")])
def test_plans_refused(total, size, match):
    with pytest.raises(DistributeError, match=match):
        plan_shards(total, size)


def test_server_urls():
    assert server_urls("default") == [DEFAULT_SERVER]
    assert server_urls(" http://a:8188/, https://gpu.example.org ,http://[::1]:8189") == \
        ["http://a:8188", "https://gpu.example.org", "http://[::1]:8189"]


@pytest.mark.parametrize("text,match", [("a:8188", "not a server address"), ("localhost", "not a server address"),
                                        ("ftp://a:21", "not a server address"), ("http://a:99999", "not a server"),
                                        ("http://a:8188,", "not a server address"),
                                        ("http://a:8188,http://a:8188/", "listed twice")])
def test_bad_server_urls(text, match):
    with pytest.raises(DistributeError, match=match):
        server_urls(text)


def test_target_node_found_by_class():
    assert target_node(workflow()) == "7"
    assert target_node(workflow(MEASURE)) == "7"


@pytest.mark.parametrize("graph,match", [
    ({"nodes": [], "links": [], "version": 0.4}, "UI format.*Export \\(API\\)"),
    ({"1": {"inputs": {}}}, "not in ComfyUI's API format"),
    ([1, 2], "not in ComfyUI's API format"),
    ({"1": {"class_type": "KSampler", "inputs": {}}}, "has no Calibrate"),
    (dict(workflow(), **{"9": workflow(MEASURE)["7"]}), "has 2 \\(7, 9\\)"),
])
def test_target_node_refusals(graph, match):
    with pytest.raises(DistributeError, match=match):
        target_node(graph)


def test_files_per_shard_counts_routed_students():
    assert files_per_shard(workflow()["7"]) == 1
    assert files_per_shard(workflow(student_2=["1", 0], student_3=["1", 0])["7"]) == 3
    assert files_per_shard(workflow(MEASURE, student=["1", 0], student_sampler="lcm")["7"]) == 1


def test_shard_graph_sets_the_shard_and_leaves_the_workflow():
    wf = workflow()
    g = shard_graph(wf, "7", ["a", "b", "c", "d"], Shard(1, 2, 2), "my_student")
    assert g["7"]["inputs"] == dict(wf["7"]["inputs"], prompts="a\nb\nc\nd", prompts_file="none", first_prompt=2,
                                    max_prompts=2, filename="my_student_shard0001")
    assert wf["7"]["inputs"]["filename"] == "mine" and g["1"] == wf["1"]


def test_output_paths():
    assert output_paths("out/me.json", 1) == ["out/me.json"]
    assert output_paths("out/me.json", 2) == ["out/me_student1.json", "out/me_student2.json"]
    assert output_paths("me", 2) == ["me_student1.json", "me_student2.json"]


def test_manifest_ignores_what_each_shard_sets_and_refuses_another_run():
    prompts = ["a", "b", "c"]
    m = run_manifest(workflow(), "7", prompts, 50)
    check_manifest(m, run_manifest(workflow(prompts="other", first_prompt=7, filename="x"), "7", prompts, 50), "w")
    with pytest.raises(DistributeError, match="another workflow"):
        check_manifest(m, run_manifest(workflow(steps=8), "7", prompts, 50), "w")
    with pytest.raises(DistributeError, match="another prompt list"):
        check_manifest(m, run_manifest(workflow(), "7", ["a", "b", "d"], 50), "w")
    with pytest.raises(DistributeError, match="another shard size.*--shard-size 50.*new --work-dir"):
        check_manifest(m, run_manifest(workflow(), "7", prompts, 20), "w")
    with pytest.raises(DistributeError, match="not a manifest"):
        check_manifest(["x"], m, "w")


def test_result_problems():
    shard = Shard(1, 3, 3)
    assert result_problem(shard_files(shard, 2), shard, 2) is None
    assert "gave 1 file(s), 2 expected" in result_problem(shard_files(shard), shard, 2)
    assert "gave no file" in result_problem(None, shard, 1)
    assert "other prompts than 3-5" in result_problem(shard_files(Shard(0, 0, 3)), shard, 1)
    assert "no calibration file" in result_problem([{"file": "x.json", "data": {"10": 0.1}}], shard, 1)
    routed = Shard(1, 3, 4)
    assert result_problem(shard_files(routed, 2, routed=True), routed, 2) is None
    # a prompt scored by nobody: the merged file would silently lack it
    short = Shard(1, 3, 3)
    assert "or not all of them" in result_problem(shard_files(Shard(1, 3, 2)), short, 1)
    assert "or not all of them" in result_problem(shard_files(routed, 2, routed=True)[:1] * 2, routed, 2)


def test_done_shards_read_from_the_work_folder(tmp_path):
    shards = plan_shards(9, 3)
    (tmp_path / MANIFEST).write_text("{}")
    (tmp_path / shards[2].file).write_text(json.dumps(shard_files(shards[2])))
    assert list(done_shards(str(tmp_path), shards, 1)) == [2]
    (tmp_path / shards[0].file).write_text("[{")
    with pytest.raises(DistributeError, match="shard_0000.json cannot be read.*delete it"):
        done_shards(str(tmp_path), shards, 1)
    (tmp_path / shards[0].file).write_text(json.dumps(shard_files(shards[1])))
    with pytest.raises(DistributeError, match="not a finished shard.*other prompts"):
        done_shards(str(tmp_path), shards, 1)


def test_merge_is_the_same_whoever_ran_each_shard():
    """Per student, the shards in plan order under names of their prompts: no server, no time of making."""
    shards = plan_shards(10, 3)
    results = [(s, shard_files(s, students=2)) for s in shards]
    merged = [merge_calibrations(files) for files in files_by_position(results)]
    assert len(merged) == 2
    assert merged[0]["metadata"]["merged_from"] == [s.name for s in shards]
    assert "created" not in merged[0]["metadata"]
    assert merged[1]["metadata"]["samples"]["prompt_index"] == list(range(10))
    one = calibration_data([np.sin(i + 10) for i in range(10)], metadata={"steps": 4},
                           prompt_indices=list(range(10)), prompt_ids=[prompt_id(f"p{i}") for i in range(10)])
    assert {k: v for k, v in merged[1].items() if k != "metadata"} == {k: v for k, v in one.items() if k != "metadata"}
    with pytest.raises(DistributeError, match="different numbers of files"):
        files_by_position([(shards[0], shard_files(shards[0], 2)), (shards[1], shard_files(shards[1], 1))])


def test_free_servers_take_shards_in_plan_order_until_done():
    run = Run(plan_shards(12, 3), [A, B])
    assert run.next_shard(A, 0).index == 0 and run.next_shard(B, 0).index == 1
    assert run.next_shard(A, 0) is None  # busy
    run.shard_done(B, 1)
    assert run.next_shard(B, 0).index == 2
    for url, index in ((A, 0), (B, 2)):
        run.shard_done(url, index)
    assert run.next_shard(A, 0).index == 3 and run.next_shard(B, 0) is None
    run.shard_done(A, 3)
    assert run.finished and not run.stopped and run.prompts_done() == 12
    assert (run.servers[A].shards_done, run.servers[B].shards_done) == (2, 2)


def test_resume_skips_done_shards():
    run = Run(plan_shards(12, 3), [A], done=[0, 2])
    assert run.done_before == 2 and run.prompts_done() == 6
    assert run.next_shard(A, 0).index == 1
    run.shard_done(A, 1)
    assert run.next_shard(A, 0).index == 3


def test_a_failed_shard_goes_to_another_server_first():
    run = Run(plan_shards(12, 3), [A, B, C])
    run.next_shard(A, 0), run.next_shard(B, 0)
    run.shard_failed(A, 0, "node 7: out of memory")
    assert not run.stopped
    assert run.next_shard(A, 0).index == 2  # not shard 0 again on A
    assert run.next_shard(C, 0).index == 0  # a returned shard comes first
    run.shard_done(C, 0)
    assert run.failures[0] == [(A, "node 7: out of memory")] and run.attempts[0] == 2


def test_a_shard_failing_on_every_live_server_is_a_bad_input():
    run = Run(plan_shards(12, 3), [A, B], work_dir="runs/x")
    run.next_shard(A, 0), run.next_shard(B, 0)
    run.shard_failed(A, 0, "node 7 (Calibrate): InputError: width: bad")
    run.shard_done(B, 1)
    assert run.next_shard(B, 0).index == 0
    run.shard_failed(B, 0, "node 7 (Calibrate): InputError: width: bad")
    assert "shard 0000 (prompts 0-2) failed on http://a:8188, http://b:8188: node 7 (Calibrate): InputError: " \
           "width: bad" in run.stopped
    assert "bad input" in run.stopped and "resumes from runs/x" in run.stopped
    assert run.next_shard(A, 0) is None


def test_a_single_server_stops_at_the_first_node_error():
    run = Run(plan_shards(6, 3), [A])
    run.next_shard(A, 0)
    run.shard_failed(A, 0, "boom")
    assert "bad input" in run.stopped


def test_the_same_node_error_three_times_is_a_bad_input_before_every_server_tried():
    servers = [f"http://s{i}:8188" for i in range(6)]
    run = Run(plan_shards(12, 3), servers)
    for i, error in enumerate(["same", "other", "same", "same"]):
        assert run.next_shard(servers[i], 0).index == 0
        run.shard_failed(servers[i], 0, error)
        assert bool(run.stopped) == (i == 3)


def test_a_shard_that_never_finishes_stops_the_run():
    run = Run(plan_shards(6, 3), [A], max_attempts=3, retries=10, retry_delay=1.0)
    for t in range(3):
        assert run.next_shard(A, 10.0 * t).index == 0
        run.server_lost(A, 10.0 * t, "connection closed")
    assert "sent 3 times without finishing (its servers stopped answering under it)" in run.stopped


def test_a_lost_server_gives_its_shard_back_and_is_retried_then_dropped():
    run = Run(plan_shards(12, 3), [A, B], work_dir="runs/x", retries=2, retry_delay=10.0)
    run.next_shard(A, 0), run.next_shard(B, 0)
    back = run.server_lost(B, 5.0, "connection refused")
    assert back.index == 1 and run.pending[0] == 1 and B not in run.in_flight
    assert run.next_shard(B, 14.9) is None           # waits 10 s
    run.shard_done(A, 0)
    assert run.next_shard(A, 15.0).index == 1       # the lost shard is redone elsewhere first
    assert run.server_lost(B, 15.0, "connection refused") is None  # a retry that fails: 20 s more
    assert run.servers[B].retry_at == 35.0 and not run.servers[B].dropped
    run.server_lost(B, 35.0, "connection refused")
    assert "did not answer 3 times (connection refused)" in run.servers[B].dropped
    assert run.live() == [A] and not run.stopped
    run.server_lost(A, 40.0, "x"), run.server_lost(A, 50.0, "x"), run.server_lost(A, 70.0, "x")
    assert "no server is left" in run.stopped and "1 of 4 shards are done in runs/x" in run.stopped
    assert "run the same command to resume" in run.stopped


def test_a_server_that_answers_again_starts_its_tries_over():
    run = Run(plan_shards(12, 3), [A], retries=1)
    run.next_shard(A, 0)
    run.server_lost(A, 0, "x")
    assert run.next_shard(A, 100).index == 0
    run.shard_done(A, 0)
    assert run.servers[A].lost == 0
    run.next_shard(A, 100)
    run.server_lost(A, 100, "x")
    assert not run.servers[A].dropped


def test_a_refusing_server_is_dropped_and_its_shard_goes_back():
    run = Run(plan_shards(12, 3), [A, B])
    run.next_shard(A, 0), run.next_shard(B, 0)
    assert run.server_refused(B, "ckpt_name: tiny.safetensors not in list").index == 1
    assert run.live() == [A] and not run.stopped and run.pending[0] == 1
    run.server_refused(A, "ckpt_name: tiny.safetensors not in list")
    assert "no server is left" in run.stopped and "refused the workflow: ckpt_name" in run.stopped


def test_an_interrupted_shard_goes_back_without_counting_as_a_failure():
    run = Run(plan_shards(6, 3), [A])
    run.next_shard(A, 0)
    run.shard_returned(A, 0)
    assert not run.stopped and not run.failures[0] and run.next_shard(A, 0).index == 0


def test_no_server_answering_at_the_start_stops_at_once():
    run = Run(plan_shards(6, 3), [A, B])
    run.check_start({A: "connection refused", B: "it has no StudentTeacherCalibrateThreshold node"})
    assert "no server could be used (http://a:8188: connection refused; http://b:8188: it has no" in run.stopped
    assert "--listen 0.0.0.0" in run.stopped
    ok = Run(plan_shards(6, 3), [A, B])
    ok.check_start({B: "connection refused"})
    assert not ok.stopped


def test_progress_line_rate_and_eta_count_only_this_runs_prompts():
    assert progress_line(0, 100, 0, 0.0, width=10) == "[..........] 0/100 prompts"
    assert progress_line(40, 100, 20, 10.0, width=10) == "[####......] 40/100 prompts  2.00 prompts/s  ETA 0:00:30"
    assert progress_line(20, 100, 20, 5.0, width=10) == "[##........] 20/100 prompts"  # resumed, none new yet
    assert progress_line(1, 7201, 0, 1.0, width=4).endswith("ETA 2:00:00")

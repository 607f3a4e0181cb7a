"""Tier 2: the adaptive pipeline executed in real ComfyUI (tiny SD1.5-shaped models, CPU).

Student -> gate -> teacher graphs run through ComfyUI's executor; rollback sigmas are
compared with ComfyUI's own KSampler."""
import os
import shutil

import pytest
import torch

from comfyui_harness import run_prompt
from tiny_models import TINY_IMAGE_REWARD, TINY_SD15

PROMPT = "a red cube on a table"
TEACHER = "tiny_sd15_teacher.safetensors"  # its own file, so its loader is its own cache entry
P = "StudentTeacher"


def pipeline(seed=1, batch=4, tau=0.0, threshold_mode="tau", strategy="refine", latent_from=None,
             teacher_gate=True, calibration="none", k=50, budget=10.0):
    """API prompt: student (1-5), oracle + gate (6-7), a SEPARATE teacher loader (8),
    teacher improve (9), save (10)."""
    g = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD15}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": PROMPT}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch}},
        "5": {"class_type": P + "ConsistencySampler",
              "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                         "latent_image": latent_from or ["4", 0], "seed": seed, "steps": 2, "cfg": 1.0,
                         "schedule": "lcm", "denoise": 1.0}},
        "6": {"class_type": P + "LoadImageRewardOracle",
              "inputs": {"oracle_file": TINY_IMAGE_REWARD, "device": "cpu", "dtype": "fp32",
                         "preprocess": "exact", "batch_size": 8}},
        "7": {"class_type": P + "OracleGate",
              "inputs": {"latent": ["5", 0], "vae": ["1", 2], "oracle": ["6", 0], "prompt": PROMPT,
                         "threshold_mode": threshold_mode, "tau": tau, "k": k, "calibration": calibration,
                         "budget": budget, "student_steps": 0, "teacher_steps": 3}},
        "8": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TEACHER}},
        "9": {"class_type": P + "Improve",
              "inputs": {"model": ["8", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["5", 0],
                         "strategy": strategy, "rollback_mode": "strength", "rollback": 0.5, "steps": 3,
                         "sampler_name": "dpmpp_2m", "scheduler": "karras", "cfg": 2.0, "seed": 7,
                         "vae": ["1", 2], "source_latent": ["4", 0], "source_denoise": 1.0}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 1], "filename_prefix": "st"}},
    }
    if teacher_gate:
        g["9"]["inputs"]["gate"] = ["7", 1]
    return g


@pytest.fixture(scope="module")
def host(comfy):
    student = comfy.model_path("checkpoints", comfy.tiny(TINY_SD15))
    teacher = os.path.join(os.path.dirname(student), TEACHER)
    if not os.path.exists(teacher):
        shutil.copyfile(student, teacher)
    comfy.folder_paths.filename_list_cache.pop("checkpoints", None)
    comfy.tiny(TINY_IMAGE_REWARD)
    return comfy


def results(run):
    student = run.output("5")["samples"]
    decision = run.output("7", 1)
    final = run.output("9")["samples"]
    images = run.output("9", 1)
    return student, decision, final, images


def test_all_accepted_never_loads_the_teacher(host):
    run = run_prompt(host, pipeline(tau=-10.0), fresh=True)
    student, decision, final, images = results(run)
    assert decision.accepted.all()
    assert not run.ran("8"), "the teacher's loader ran although every sample was kept"
    assert torch.equal(final, student)
    assert torch.equal(images, decision.images)


def test_all_rejected_improves_every_sample(host):
    run = run_prompt(host, pipeline(tau=10.0), fresh=True)
    student, decision, final, _ = results(run)
    assert not decision.accepted.any() and run.ran("8")
    for i in range(4):
        assert not torch.equal(final[i], student[i])


def test_mixed_batch_keeps_accepted_samples_bit_identical(host):
    scores = run_prompt(host, pipeline(tau=0.0), fresh=True).output("7", 1).scores
    ordered = sorted(scores.tolist())
    tau = (ordered[1] + ordered[2]) / 2
    student, decision, final, images = results(run_prompt(host, pipeline(tau=tau)))
    assert decision.accepted.tolist() == [s >= tau for s in scores.tolist()]
    assert 0 < int(decision.accepted.sum()) < 4
    for i, kept in enumerate(decision.accepted.tolist()):
        if kept:
            assert torch.equal(final[i], student[i]) and torch.equal(images[i], decision.images[i])
        else:
            assert not torch.equal(final[i], student[i])


def test_no_gate_improves_everything(host):
    run = run_prompt(host, pipeline(teacher_gate=False), fresh=True)
    student, final = run.output("5")["samples"], run.output("9")["samples"]
    assert not run.ran("7"), "no gate connected, so nothing scores"
    assert all(not torch.equal(final[i], student[i]) for i in range(4))


@pytest.mark.parametrize("strategy", ["refine", "regenerate"])
def test_sample_is_independent_of_its_batch(host, strategy):
    batch = results(run_prompt(host, pipeline(tau=10.0, strategy=strategy), fresh=True))
    for i in (0, 2):
        alone_graph = pipeline(tau=10.0, strategy=strategy, batch=4,
                               latent_from=["11", 0])
        alone_graph["11"] = {"class_type": "LatentFromBatch", "inputs": {"samples": ["4", 0], "batch_index": i,
                                                                         "length": 1}}
        alone_graph["9"]["inputs"]["source_latent"] = ["11", 0]
        alone = results(run_prompt(host, alone_graph))
        assert alone[1].batch_index == [i]
        # same noise, same maths; only float32 rounding of batched vs single matmuls differs
        torch.testing.assert_close(alone[0][0], batch[0][i], rtol=1e-4, atol=1e-3)         # student
        # the decoder and the oracle amplify that rounding a little
        torch.testing.assert_close(alone[1].scores[0], batch[1].scores[i], rtol=0, atol=1e-3)  # gate
        assert alone[1].accepted[0] == batch[1].accepted[i]
        torch.testing.assert_close(alone[2][0], batch[2][i], rtol=1e-4, atol=1e-3)         # teacher


@pytest.mark.parametrize("scheduler", ["normal", "karras", "simple", "sgm_uniform"])
@pytest.mark.parametrize("steps,strength", [(10, 0.5), (12, 0.85), (4, 0.4), (5, 1.0)])
@pytest.mark.parametrize("sampler", ["dpmpp_2m", "uni_pc"])
def test_strength_rollback_equals_ksampler_denoise(host, scheduler, steps, strength, sampler):
    import comfy.samplers
    import nodes
    model = nodes.CheckpointLoaderSimple().load_checkpoint(TINY_SD15)[0]
    rollback = host.pack_nodes[P + "RollbackNoise"]()
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    _, sigmas = rollback.run(latent, model, "strength", strength, steps, sampler, scheduler, 0)
    expected = comfy.samplers.KSampler(model, steps=steps, device="cpu", sampler=sampler, scheduler=scheduler,
                                       denoise=strength).sigmas
    assert torch.equal(sigmas.float(), expected.float().cpu())


def error_of(host, graph):
    run = run_prompt(host, graph, check=False)
    assert not run.success
    return run.error


def test_bad_inputs_give_clear_errors(host):
    g = pipeline(tau=10.0)
    g["9"]["inputs"]["rollback"] = 1.5
    assert "rollback" in error_of(host, g)
    g = pipeline(tau=10.0)
    g["5"]["inputs"]["steps"] = 0
    assert "steps" in error_of(host, g)
    g = pipeline(threshold_mode="percentile", k=95, calibration="lcm_sdxl_4steps_paper.json")
    assert "no 95th percentile" in error_of(host, g)
    g = pipeline(threshold_mode="budget", budget=100.0, calibration="lcm_sdxl_4steps_paper.json")
    assert "budget" in error_of(host, g)
    # a GATE made for another batch
    g = pipeline(tau=10.0)
    g["12"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}}
    g["13"] = dict(g["5"], inputs=dict(g["5"]["inputs"], latent_image=["12", 0]))
    g["9"]["inputs"]["latent"] = ["13", 0]
    err = error_of(host, g)
    assert "gate: the gate decided on samples [0, 1, 2, 3], the latent holds [0, 1]" in err


def test_budget_mode_reads_the_calibration(host):
    run = run_prompt(host, pipeline(threshold_mode="budget", budget=2 + 0.5 * 3,
                                    calibration="lcm_sdxl_4steps_paper.json"), fresh=True)
    decision = run.output("7", 1)
    assert decision.threshold.k == 50 and "budget" in decision.threshold.how

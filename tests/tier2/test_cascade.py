"""Tier 2: chains of gates and improvers in real ComfyUI.

A 3-stage chain (student -> gate -> student retry -> gate -> teacher -> gate) decodes and scores each
sample once per version of it; kept samples stay bit-identical through every stage; keep-the-better
never lowers a score; a student retry draws fresh noise, each round its own, and is batch-independent."""
import sys

import pytest
import torch

from tiny_models import TINY_SD15

P = "StudentTeacher"


@pytest.fixture(scope="module")
def host(comfy):
    comfy.tiny(TINY_SD15)
    return comfy


def pack(host, module):
    return sys.modules[f"{host.pack_module.__name__}.{module}"]


class CountingVAE:
    def __init__(self, vae):
        self.vae, self.rows = vae, 0
        self.latent_channels = vae.latent_channels

    def decode(self, samples):
        self.rows += samples.shape[0]
        return self.vae.decode(samples)


class ScriptedOracle:
    """Scores each image by its mean brightness, optionally shifted per call; counts the images it scores."""
    name, kind, fingerprint = "scripted", "ImageReward", "scripted"

    def __init__(self, shifts=()):
        self.images, self.shifts = 0, list(shifts)

    def score(self, images, prompts):
        self.images += images.shape[0]
        shift = self.shifts.pop(0) if self.shifts else 0.0
        return images.float().mean(dim=(1, 2, 3)).cpu() + shift


def setup(host, n=4):
    import nodes
    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(TINY_SD15)[:3]
    pos = host.pack_nodes[P + "EncodePrompts"]().encode(clip, "a red cube", "none", 0)[0]
    neg = nodes.CLIPTextEncode().encode(clip, "")[0]
    student = pack(host, "nodes.student").student_sample(model, pos, neg, {"samples": torch.zeros(n, 4, 8, 8)}, 1, 2,
                                                         1.0)
    return model, pos, neg, vae, student


def between(scores, keep):
    """A tau that keeps the `keep` best of these scores."""
    ordered = sorted(scores, reverse=True)
    return (ordered[keep - 1] + ordered[keep]) / 2


def test_a_three_stage_chain_decodes_and_scores_each_version_once(host):
    model, pos, neg, vae, student = setup(host)
    gate, retry = pack(host, "nodes.gate").gate, pack(host, "nodes.retry").retry_rejected
    improve = pack(host, "nodes.teacher").improve
    cvae, oracle = CountingVAE(vae), ScriptedOracle(shifts=[0.0, -100.0])  # the retries still score too low
    first_scores = ScriptedOracle().score(vae.decode(student["samples"]), [""] * 4).tolist()
    tau = between(first_scores, keep=2)

    g1 = gate(student, cvae, oracle, "", tau=tau)
    assert (cvae.rows, oracle.images) == (4, 4) and len(g1.rejected) == 2
    retried, todo = retry(model, pos, neg, g1.latent, 1, 2, 1.0, "lcm", 1, cvae, g1)
    assert todo == g1.rejected and cvae.rows == 6                      # the 2 retried samples, decoded once
    g2 = gate(retried, cvae, oracle, "", tau=tau)
    assert (cvae.rows, oracle.images) == (6, 6)                        # nothing decoded, the 2 new ones scored
    taught, todo2 = improve(model, pos, neg, g2.latent, "refine", "strength", 0.5, 2, "euler", "normal", 1.0, 1, cvae,
                            g2)
    assert todo2 == g1.rejected and cvae.rows == 8
    g3 = gate(taught, cvae, oracle, "", tau=-100.0)
    assert (cvae.rows, oracle.images) == (8, 8)                        # 4 + 2 + 2 versions, each once

    kept = [i for i in range(4) if i not in g1.rejected]
    for i in kept:                                                     # bit-identical through every stage
        for stage in (g1.latent, retried, g2.latent, taught, g3.latent):
            assert torch.equal(stage["samples"][i], student["samples"][i])
        assert torch.equal(g3.images[i], g1.images[i])
    records = g3.records
    assert [s.kind for s in records[g1.rejected[0]].stages] == ["student", "gate", "retry", "gate", "teacher", "gate"]
    assert [s.kind for s in records[kept[0]].stages] == ["student", "gate", "gate", "gate"]
    assert [r.cost for r in records] == [2 + 2 + 2 if i in g1.rejected else 2 for i in range(4)]
    report = "\n".join(g3.lines())
    assert "kept 4/4" in report


def test_keep_the_better_never_lowers_a_score(host):
    model, pos, neg, vae, student = setup(host)
    gate, improve = pack(host, "nodes.gate").gate, pack(host, "nodes.teacher").improve
    g1 = gate(student, vae, ScriptedOracle(), "", tau=100.0)           # every sample to the teacher
    taught, _ = improve(model, pos, neg, g1.latent, "refine", "strength", 0.7, 2, "euler", "normal", 1.0, 1, vae, g1)
    honest = ScriptedOracle().score(vae.decode(taught["samples"]), [""] * 4)
    # the oracle's view of the teacher's versions: samples 0 and 2 worse than before, 1 and 3 better
    before = g1.scores
    target = torch.tensor([before[0] - 1, before[1] + 1, before[2] - 0.5, before[3] + 0.5])
    oracle = ScriptedOracle()
    oracle.score = lambda images, prompts: target.clone()
    g2 = gate(taught, vae, oracle, "", tau=-100.0, keep_better=True)
    assert (g2.scores >= before).all() and torch.equal(g2.scores[[0, 2]], before[[0, 2]])
    for i in (0, 2):                                                    # back to the version before the teacher
        assert torch.equal(g2.latent["samples"][i], student["samples"][i])
        assert torch.equal(g2.images[i], g1.images[i])
        assert g2.records[i].last("gate").settings["new_score"] == pytest.approx(float(target[i]))
    for i in (1, 3):
        assert torch.equal(g2.latent["samples"][i], taught["samples"][i])
    assert "kept the earlier version" in "\n".join(g2.lines())
    assert honest.shape == (4,)


def test_a_student_retry_is_fresh_noise_each_round_and_batch_independent(host):
    model, pos, neg, vae, student = setup(host)
    gate, retry = pack(host, "nodes.gate").gate, pack(host, "nodes.retry").retry_rejected
    g1 = gate(student, vae, ScriptedOracle(), "", tau=100.0)           # all rejected
    one, _ = retry(model, pos, neg, g1.latent, 1, 2, 1.0, "lcm", 1, vae, g1)
    two, _ = retry(model, pos, neg, g1.latent, 1, 2, 1.0, "lcm", 2, vae, g1)
    for i in range(4):
        assert not torch.allclose(one["samples"][i], student["samples"][i], atol=1e-3)
        assert not torch.allclose(one["samples"][i], two["samples"][i], atol=1e-3)
    records = pack(host, "schedulers.record")
    alone_latent = records.with_records({"samples": student["samples"][2:3]}, records.records_of(student)[2:3])
    g_alone = gate(alone_latent, vae, ScriptedOracle(), "", tau=100.0)
    alone, _ = retry(model, pos, neg, g_alone.latent, 1, 2, 1.0, "lcm", 1, vae, g_alone)
    torch.testing.assert_close(alone["samples"][0], one["samples"][2], rtol=1e-4, atol=1e-3)
    assert records.records_of(one)[2].last("retry").settings["retry"] == 1

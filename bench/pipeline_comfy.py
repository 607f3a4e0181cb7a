"""The ComfyUI side of bench/bench_pipeline.py: the graphs it times (the pack's wirings and core-ComfyUI
baselines, in API format) and the instrumentation of ComfyUI's model calls, in this process.

Timed parts: every UNet evaluation (comfy.model_base.BaseModel.apply_model), as the student's when the
sampler running it is a consistency sampler (the pack's, or ComfyUI's `lcm`) and the teacher's
otherwise; VAE decode and encode; the oracle's score call (preprocessing included). Everything else a
queue spends (ComfyUI's model loading and LoRA patching, noise, samplers' arithmetic, the graph) is
wall minus those.
"""
import itertools
import sys
import time
import uuid

from pipeline_timing import Clock, MemoryPeak
from tools.comfyui_boot import free_memory

STUDENT_SAMPLERS = ("consistency_sampler", "sample_lcm")  # qualname fragments of student samplers


class Graph:
    """An API-format prompt under construction: add(class_type, **inputs) -> node id; (id, slot) links."""

    def __init__(self):
        self.nodes, self._ids = {}, itertools.count(1)

    def add(self, class_type, **inputs):
        node = str(next(self._ids))
        self.nodes[node] = {"class_type": class_type,
                            "inputs": {k: list(v) if isinstance(v, tuple) else v for k, v in inputs.items()}}
        return node


def graph(config, s, batch, seed, tau, wiring=None):
    """The API prompt of `config` (see CONFIGS; `wiring` overrides its graph) with bench settings `s` at
    this batch, seed and tau -> (prompt, the id of the node making the images)."""
    g = Graph()
    ckpt = g.add("CheckpointLoaderSimple", ckpt_name=s.files["checkpoint"])
    pos = g.add("CLIPTextEncode", clip=(ckpt, 1), text=s.prompt)
    neg = g.add("CLIPTextEncode", clip=(ckpt, 1), text="")
    empty = g.add("EmptyLatentImage", width=s.size, height=s.size, batch_size=batch)
    kind = CONFIGS[config]["student"]
    if kind == "file":
        student = (g.add("UNETLoader", unet_name=s.files["student_unet"], weight_dtype="default"), 0)
    else:
        student = (g.add("LoraLoaderModelOnly", model=(ckpt, 0), lora_name=s.files["lora"], strength_model=1.0), 0)
        if kind == "lora, own weights":
            student = (g.add("StudentTeacherSeparateStudentWeights", model=student), 0)
    common = dict(positive=(pos, 0), negative=(neg, 0))
    wiring = wiring or CONFIGS[config]["graph"]
    if wiring in ("nodes", "all-in-one"):
        oracle = g.add("StudentTeacherLoadImageRewardOracle", oracle_file=s.files["oracle"], device="auto",
                       dtype="auto", preprocess="auto", batch_size=8)
        gate = dict(threshold_mode="tau", tau=tau, k=s.k, calibration="none", budget=10.0)
        teacher = dict(strategy="refine", rollback_mode="strength", rollback=s.rollback, sampler_name="dpmpp_2m",
                       scheduler="normal")
        if wiring == "all-in-one":
            out = g.add("StudentTeacherAdaptiveSampler", student=student, teacher=(ckpt, 0), latent_image=(empty, 0),
                        vae=(ckpt, 2), oracle=(oracle, 0), prompt=s.prompt, seed=seed, student_steps=s.student_steps,
                        student_cfg=1.0, schedule="lcm", teacher_steps=s.teacher_steps, teacher_cfg=s.cfg,
                        **gate, **teacher, **common)
            g.add("PreviewAny", source=(out, 2))
            return g.nodes, out
        latent = g.add("StudentTeacherConsistencySampler", model=student, latent_image=(empty, 0), seed=seed,
                       steps=s.student_steps, cfg=1.0, schedule="lcm", denoise=1.0, **common)
        decision = g.add("StudentTeacherOracleGate", latent=(latent, 0), vae=(ckpt, 2), oracle=(oracle, 0),
                         prompt=s.prompt, student_steps=s.student_steps, teacher_steps=s.teacher_steps, **gate)
        out = g.add("StudentTeacherImprove", model=(ckpt, 0), latent=(latent, 0), gate=(decision, 1), vae=(ckpt, 2),
                    steps=s.teacher_steps, cfg=s.cfg, seed=seed, **teacher, **common)
        g.add("PreviewAny", source=(out, 2))
        return g.nodes, out
    # core ComfyUI: KSampler nodes, then one VAE decode of the batch
    if wiring == "teacher":
        latent = g.add("KSampler", model=(ckpt, 0), seed=seed, steps=s.teacher_alone_steps, cfg=s.cfg,
                       sampler_name="dpmpp_2m", scheduler="normal", latent_image=(empty, 0), denoise=1.0, **common)
    else:
        lcm = g.add("ModelSamplingDiscrete", model=student, sampling="lcm", zsnr=False)
        latent = g.add("KSampler", model=(lcm, 0), seed=seed, steps=s.student_steps, cfg=1.0, sampler_name="lcm",
                       scheduler="sgm_uniform", latent_image=(empty, 0), denoise=1.0, **common)
        if wiring == "refine all":
            total = int(s.teacher_steps / s.rollback)
            latent = g.add("KSamplerAdvanced", model=(ckpt, 0), add_noise="enable", noise_seed=seed, steps=total,
                           cfg=s.cfg, sampler_name="dpmpp_2m", scheduler="normal", latent_image=(latent, 0),
                           start_at_step=total - s.teacher_steps, end_at_step=10000,
                           return_with_leftover_noise="disable", **common)
    images = g.add("VAEDecode", samples=(latent, 0), vae=(ckpt, 2))
    g.add("PreviewAny", source=(images, 0))
    return g.nodes, images


# name -> the student model and the graph; "shipped" marks the wirings the shipped workflows use
CONFIGS = {
    "pack: LCM-LoRA + own weights": {"student": "lora, own weights", "graph": "nodes", "shipped": True},
    "pack: all-in-one node": {"student": "lora, own weights", "graph": "all-in-one", "shipped": True},
    "pack: student file": {"student": "file", "graph": "nodes", "shipped": True},
    "pack: LCM-LoRA shared weights": {"student": "lora", "graph": "nodes", "shipped": False},
    "core: student alone": {"student": "lora", "graph": "student", "shipped": False},
    "core: teacher alone": {"student": None, "graph": "teacher", "shipped": False},
    "core: refine all (no gate)": {"student": "lora", "graph": "refine all", "shipped": False},
}


class ComfyBench:
    """ComfyUI booted in this process with the pack, its model calls timed by one Clock."""

    def __init__(self, booted, device):
        import comfy.model_base
        import comfy.samplers
        import comfy.sd
        import comfy.utils
        import execution
        comfy.utils.PROGRESS_BAR_ENABLED = False
        self.booted, self.device = booted, device
        self.executor = execution.PromptExecutor(booted.server, cache_type=execution.CacheType.CLASSIC)
        self.clock = Clock(device)
        self.role, self.refined = "teacher", 0
        self._instrument(comfy.model_base, comfy.samplers, comfy.sd)

    def _instrument(self, model_base, samplers, sd):
        clock, bench = self.clock, self
        model_base.BaseModel.apply_model = clock.wrapped(model_base.BaseModel.apply_model, lambda *a, **k: bench.role)
        sample = samplers.KSAMPLER.sample

        def with_role(ksampler, model_wrap, sigmas, extra_args, callback, noise, *args, **kw):
            name = getattr(ksampler.sampler_function, "__qualname__", "")
            bench.role = "student" if any(s in name for s in STUDENT_SAMPLERS) else "teacher"
            if bench.role == "teacher":
                bench.refined += int(noise.shape[0])
            try:
                return sample(ksampler, model_wrap, sigmas, extra_args, callback, noise, *args, **kw)
            finally:
                bench.role = "teacher"
        samplers.KSAMPLER.sample = with_role
        sd.VAE.decode = clock.wrapped(sd.VAE.decode, "vae")
        sd.VAE.encode = clock.wrapped(sd.VAE.encode, "vae")
        scorer = next(m.BatchedScorer for name, m in list(sys.modules.items())
                      if name.endswith("oracle.base") and hasattr(m, "BatchedScorer"))
        scorer.score = clock.wrapped(scorer.score, "oracle")

    def run(self, prompt):
        """Validate and execute one prompt; -> (seconds, the executor's cache of outputs)."""
        import execution
        loop = self.booted.loop
        pid = uuid.uuid4().hex
        ok, error, outputs, node_errors = loop.run_until_complete(execution.validate_prompt(pid, prompt, None))[:4]
        if not ok:
            raise RuntimeError(f"invalid prompt: {error} {node_errors}")
        t0 = time.perf_counter()
        loop.run_until_complete(self.executor.execute_async(prompt, pid, {"client_id": "bench"}, outputs))
        self.clock.sync()
        seconds = time.perf_counter() - t0
        if not self.executor.success:
            raise RuntimeError(f"the prompt failed: {self.executor.status_messages[-1:]}")
        return seconds

    def output(self, node, slot):
        return self.executor.caches.outputs.get(node)[slot][0]

    def free(self):
        """Back to nothing loaded and nothing cached, between configurations."""
        free_memory(self.executor)

    def scores(self, config, s, batch):
        """The oracle's scores of the student's samples at the timed seed (nothing sent to the teacher)."""
        self.free()
        prompt, out = graph(config, s, batch, s.seed, -100.0, wiring="all-in-one")
        self.run(prompt)
        latent = self.output(out, 1)
        return [r.score for r in latent["student_teacher"]]

    def time_config(self, config, s, taus):
        """Warm up (batch 1, a sample sent to the teacher), then one timed queue per batch size."""
        self.free()
        self.run(graph(config, s, 1, s.seed + 10 ** 6, 100.0)[0])
        rows = []
        for batch in s.batches:
            prompt = graph(config, s, batch, s.seed, taus.get(batch, 0.0))[0]
            self.clock.reset()
            self.refined = 0
            with MemoryPeak(self.device) as peak:
                wall = self.run(prompt)
            rows.append(self.clock.row(config, batch, wall, peak.bytes, self.refined / batch))
        return rows

"""Several students, each serving its share of the prompts (multi-student distillation, MSD), or all of
them on every prompt and the oracle keeps the best. Each routed sub-batch is sampled by its student in
one call and merged back in batch order; which student made each sample travels in its record."""
import dataclasses

import torch

import folder_paths

from ..schedulers.batching import batch_indices, put_rows, take_rows
from ..schedulers.errors import InputError
from ..schedulers.record import Stage, records_of, student_name, with_records
from ..schedulers.routing import (ROUTE_MODES, STUDENT_SLOTS, best_of, keyword_student, nearest_centroid,
                                  nearest_student, read_centroids, student_lines)
from .conditioning import subset_conditioning
from .model_checks import latent_format_name
from .sampling import check_interrupt
from .common import CATEGORY, ORACLE_TYPE, file_signature, full_path
from .prompts import prompt_embeddings, prompts_of
from . import inputs
from .inputs import STUDENT_SAMPLER, STUDENT_SCHEDULER
from .student import student_sample

CENTROIDS_FOLDER = "student_teacher_routing"
NO_FILE = "none"

def route(mode, prompts, students, clip=None, rules="", default_student=1, centroids=NO_FILE):
    """The student (0-based) of each prompt, for the modes that decide before sampling."""
    if None in prompts:
        raise InputError("positive", "the prompts' texts are not in the conditioning, so they cannot be routed",
                         "encode the prompts with Encode Prompt List")
    if not 1 <= default_student <= students:
        raise InputError("default_student", f"student {default_student} is not connected",
                         f"choose 1..{students}")
    if mode == "keywords":
        return keyword_student(prompts, student_lines(rules, students, "rules"), default_student - 1)
    if clip is None:
        raise InputError("clip", f"route {mode} compares text embeddings", "connect the students' CLIP")
    if mode == "embedding":
        protos = student_lines(rules, students, "rules")
        return nearest_student(prompt_embeddings(clip, prompts),
                               [prompt_embeddings(clip, protos[s]) if protos[s] else None for s in range(students)])
    if mode == "centroids":
        path = full_path(CENTROIDS_FOLDER, centroids if centroids != NO_FILE else "", "centroids",
                         "a centroid file made by tools/split_prompts.py")
        table, _ = read_centroids(path)
        if table.shape[0] != students:
            raise InputError("centroids", f"{centroids} has {table.shape[0]} groups for {students} students",
                             "connect one student per group, in the file's order")
        return nearest_centroid(prompt_embeddings(clip, prompts), table)
    raise InputError("route", f"unknown route {mode!r}", f"choose one of {ROUTE_MODES}")


def sample_students(models, assignment, positive, negative, latent, settings, names=None):
    """Each student samples its rows of the batch in one call; the rows come back in batch order.
    names: each model's input name, for messages (default student_1, student_2, ...)."""
    names = names or [f"student_{s + 1}" for s in range(len(models))]
    n, index = int(latent["samples"].shape[0]), batch_indices(latent)
    samples, records = None, [None] * n
    for s, model in enumerate(models):
        rows = [i for i, a in enumerate(assignment) if a == s]
        if not rows:
            continue
        sub = {"samples": take_rows(latent["samples"], rows, n), "batch_index": [index[i] for i in rows]}
        if latent.get("noise_mask") is not None:
            sub["noise_mask"] = take_rows(latent["noise_mask"], rows, n)
        out = student_sample(model, subset_conditioning(positive, rows, n), subset_conditioning(negative, rows, n),
                             sub, **settings, model_input=names[s])
        if samples is None:
            samples = out["samples"].new_zeros((n,) + out["samples"].shape[1:])
        samples = put_rows(samples, rows, out["samples"])
        for i, r in zip(rows, records_of(out)):
            records[i] = dataclasses.replace(r, student=s + 1)
        check_interrupt()
    return with_records({**latent, "samples": samples}, records)


def best_of_students(models, positive, negative, latent, settings, vae, oracle):
    """Every student samples every prompt; the oracle keeps each prompt's best sample. Its record
    pays for all of them: a best_of stage with the other students' steps and their scores."""
    outs = [sample_students([m], [0] * int(latent["samples"].shape[0]), positive, negative, latent, settings,
                            [f"student_{s + 1}"]) for s, m in enumerate(models)]
    records = [records_of(o) for o in outs]
    texts = [r.prompt for r in records[0]]
    if None in texts:
        raise InputError("positive", "best_of scores each sample against its prompt, and the conditioning does not "
                         "carry the texts", "encode the prompts with Encode Prompt List")
    scores = torch.stack([oracle.score(vae.decode(o["samples"]), texts) for o in outs])
    choice = best_of(scores)
    samples, merged = outs[0]["samples"].clone(), []
    for i, s in enumerate(choice):
        samples[i] = outs[s]["samples"][i]
        others = sum(records[t][i].cost for t in range(len(models)) if t != s)
        stage = Stage("best_of", steps=others, score=float(scores[s, i]),
                      settings={student_name(t + 1): round(float(scores[t, i]), 4) for t in range(len(models))})
        merged.append(dataclasses.replace(records[s][i], student=s + 1).then(stage))
    return with_records({**latent, "samples": samples}, merged)


class RouteStudents:
    DESCRIPTION = ("Routes each prompt of a prompt list to one of 2-4 students (Song et al., multi-student "
                   "distillation): by its text embedding's nearest prototype prompts, by keywords, or by the "
                   "centroid file of the prompt groups the students were trained on; or runs every student and "
                   "keeps the oracle's favourite (best_of, costs every student's steps). Each student samples its "
                   "sub-batch in one call (text-to-image); the samples come back in batch order, each recording "
                   "its student.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("LATENT", "STRING")
    RETURN_NAMES = ("latent", "report")
    OUTPUT_TOOLTIPS = ("Every prompt's sample, from its student; connect to the Oracle Gate.",
                       "Which student served which prompt.")

    @classmethod
    def INPUT_TYPES(cls):
        students = {f"student_{i}": ("MODEL", {"lazy": True, "tooltip": f"Student {i}: a few-step student "
                                               "(LCM, LCM-LoRA, guidance-embedded, SDXL-Turbo; any other with "
                                               "schedule sampler)."}) for i in (1, 2)}
        return {"required": {
            **students,
            "positive": ("CONDITIONING", {"tooltip": "The prompt list, from Encode Prompt List (its texts are routed)."}),
            "negative": ("CONDITIONING", {"tooltip": "What to avoid, for every student; unused when cfg is 1."}),
            "latent_image": ("LATENT", {"tooltip": "An Empty Latent Image with the prompt list's count as batch_size "
                                                   "(text-to-image: each student samples from noise)."}),
            "seed": inputs.seed("Noise seed: a sample's noise depends only on it and its batch index, whichever "
                                "student draws it."),
            "steps": inputs.student_steps("Steps of every student (best_of: each student runs them on every prompt)."),
            "cfg": inputs.student_cfg("Classifier-free guidance of every student (1.0: one model pass per step)."),
            "schedule": inputs.schedule("lcm, turbo or sampler, as for the Consistency Student Sampler, for every "
                                        "student."),
            "route": (list(ROUTE_MODES), {"default": "embedding",
                                          "tooltip": "embedding: the student with the nearest prototype prompt (the "
                                                     "CLIP's own embedding). keywords: the first student whose "
                                                     "regular expression matches, else default_student. centroids: "
                                                     "the nearest group of a centroid file. best_of: every student "
                                                     "samples, the oracle keeps the best."}),
            "default_student": ("INT", {"default": 1, "min": 1, "max": STUDENT_SLOTS,
                                        "tooltip": "keywords: the student of prompts no pattern matches."}),
        }, "optional": {
            **{f"student_{i}": ("MODEL", {"lazy": True, "tooltip": f"Student {i} (optional)."})
               for i in range(3, STUDENT_SLOTS + 1)},
            "clip": ("CLIP", {"tooltip": "embedding / centroids: the text encoder whose embeddings are compared."}),
            "rules": ("STRING", {"multiline": True, "default": "",
                                 "tooltip": "One entry a line as '<student>: <text>'. route embedding: prompts each "
                                            "student is good at ('1: a portrait photo'); route keywords: regular "
                                            "expressions, case-insensitive ('2: anime|cartoon')."}),
            "centroids": ([NO_FILE] + folder_paths.get_filename_list(CENTROIDS_FOLDER),
                          {"tooltip": "centroids: a file of models/student_teacher_routing/ made by "
                                      "tools/split_prompts.py."}),
            "vae": ("VAE", {"tooltip": "best_of: decodes every student's samples for the oracle."}),
            "oracle": (ORACLE_TYPE, {"tooltip": "best_of: scores every student's samples."}),
            "sampler_name": inputs.student_sampler(inputs.STUDENT_SAMPLER_TIP),
            "scheduler": inputs.student_scheduler(inputs.STUDENT_SCHEDULER_TIP),
        }}

    @classmethod
    def IS_CHANGED(cls, centroids=NO_FILE, **_):
        return file_signature(CENTROIDS_FOLDER, centroids) if centroids != NO_FILE else ""

    def connected(self, inputs):
        """The connected student inputs, numbered without gaps (rules, default_student and a centroid
        file's groups count students 1, 2, ...)."""
        slots = [f"student_{i}" for i in range(1, STUDENT_SLOTS + 1) if f"student_{i}" in inputs]
        if slots and slots[-1] != f"student_{len(slots)}":
            gap = next(f"student_{i}" for i in range(1, STUDENT_SLOTS + 1) if f"student_{i}" not in slots)
            raise InputError(gap, f"is not connected but {slots[-1]} is", f"connect the students from student_1 "
                             f"on without a gap (move {slots[-1]}'s model to {gap})")
        return slots

    def check_lazy_status(self, route, positive, latent_image, **inputs):
        """Only the students that get prompts are loaded (a student left without prompts never is). run()
        routes again: the node keeps no state between the two calls (ComfyUI may map it over a list)."""
        try:
            slots = self.connected(inputs)
        except InputError:  # run() says it
            return []
        needed = slots
        if route != "best_of":
            try:
                texts = prompts_of(positive, int(latent_image["samples"].shape[0]))
                needed = [slots[s] for s in sorted(set(route_from(route, texts, slots, inputs)))]
            except InputError:  # run() says what is wrong, after the node's other input checks
                pass
        return [name for name in needed if inputs.get(name) is None]

    def run(self, positive, negative, latent_image, seed, steps, cfg, schedule, route, default_student,
            sampler_name=STUDENT_SAMPLER, scheduler=STUDENT_SCHEDULER, **inputs):
        slots = self.connected(inputs)
        models = [inputs[name] for name in slots]
        check_one_family({name: inputs[name] for name in slots if inputs[name] is not None})
        # text-to-image (denoise 1); a guided student embeds its loader's w
        settings = dict(seed=seed, steps=steps, cfg=cfg, schedule=schedule, sampler_name=sampler_name,
                        scheduler=scheduler)
        if route == "best_of":
            if inputs.get("vae") is None or inputs.get("oracle") is None:
                raise InputError("oracle", "best_of needs the oracle and the VAE", "connect vae and oracle")
            out = best_of_students(models, positive, negative, latent_image, settings, inputs["vae"], inputs["oracle"])
        else:
            texts = prompts_of(positive, int(latent_image["samples"].shape[0]))
            assignment = route_from(route, texts, slots, dict(inputs, default_student=default_student))
            out = sample_students(models, assignment, positive, negative, latent_image, settings)
        lines = [f"#{r.batch_index} -> {student_name(r.student)}: {r.prompt}" for r in records_of(out)]
        return {"ui": {"text": ["\n".join(lines)]}, "result": (out, "\n".join(lines))}


def check_one_family(students):
    """Refuse students of different model families before any samples: their samples share one batch,
    one VAE and one gate ({input name: model})."""
    families = {name: latent_format_name(model) for name, model in students.items()}
    first = next(iter(families), None)
    for name, family in families.items():
        if family != families[first]:
            raise InputError(name, f"is a {family} model but {first} is {families[first]}", "connect students of one "
                             f"family (their samples share one batch, VAE and gate): a {families[first]} {name}")


def route_from(mode, texts, slots, inputs):
    return route(mode, texts, len(slots), inputs.get("clip"), inputs.get("rules", ""),
                 inputs.get("default_student", 1), inputs.get("centroids", NO_FILE))

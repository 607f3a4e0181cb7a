"""Which student samples which prompt.

Multi-student distillation (Song et al., NVIDIA, arXiv 2410.23274, "MSD") distils one teacher into
several students, each responsible for a subset of the prompts (split by K-means of their embeddings,
in equal-size groups), and runs exactly one student per prompt. Per-prompt routers over several
generators (CATImage, arXiv 2506.14753) beat every generator they route between. The decisions here
are plain functions of prompt embeddings (the user's own CLIP: no extra model), prompt texts and
oracle scores; students are numbered 0..S-1.
"""
import json
import math
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import regex
import torch

from .errors import InputError

STUDENT_SLOTS = 4  # the students a router, a gate and a calibration take (inputs student_1 .. student_4)

ROUTE_MODES = ("embedding", "keywords", "centroids", "best_of")
CENTROIDS_FORMAT = "student_teacher_centroids"
MATCH_SECONDS = 2.0  # all of one routing's keyword matching


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def student_lines(text: str, students: int, input_name: str) -> Dict[int, List[str]]:
    """'1: a photo of a cat' lines -> {0: ['a photo of a cat'], ...}; several lines per student."""
    out: Dict[int, List[str]] = {s: [] for s in range(students)}
    for line in str(text).splitlines():
        if not line.strip():
            continue
        number, sep, value = line.partition(":")
        if not sep or not number.strip().isdecimal() or not 1 <= int(number) <= students:
            raise InputError(input_name, f"line {line.strip()!r} does not start with a student number 1..{students}",
                             "write one entry a line as '<student>: <text>', e.g. '2: a portrait photo'")
        if value.strip():
            out[int(number) - 1].append(value.strip())
    return out


def nearest_student(prompts: torch.Tensor, prototypes: Sequence[Optional[torch.Tensor]]) -> List[int]:
    """For each prompt embedding [N, D], the student whose nearest prototype (cosine similarity) is
    nearest. Students without prototypes are never chosen; ties go to the lower student number."""
    if not any(p is not None and len(p) for p in prototypes):
        raise InputError("rules", "no student has a prototype prompt", "give at least one student prototype prompts")
    x = _unit(prompts)
    best = torch.full((x.shape[0], len(prototypes)), -math.inf)
    for s, proto in enumerate(prototypes):
        if proto is not None and len(proto):
            best[:, s] = (x @ _unit(proto).T).max(dim=1).values
    return [int(i) for i in best.argmax(dim=1)]  # argmax takes the first maximum


def keyword_student(prompts: Sequence[str], patterns: Dict[int, List[str]], default: int) -> List[int]:
    """The first student (in number order) any of whose regular expressions matches the prompt
    (case-insensitive), else `default`. The patterns are the user's: their matching has MATCH_SECONDS in
    all (the `regex` package's timeout), so a pattern that backtracks without end cannot hang the server."""
    compiled = {}
    for s, pats in patterns.items():
        try:
            compiled[s] = [regex.compile(p, regex.IGNORECASE) for p in pats]
        except regex.error as e:
            raise InputError("rules", f"student {s + 1}: {e} in a pattern", "fix the regular expression") from None
    deadline = time.monotonic() + MATCH_SECONDS

    def matches(s, pattern, i):
        try:
            return pattern.search(prompts[i], timeout=max(deadline - time.monotonic(), 1e-3)) is not None
        except TimeoutError:
            raise InputError("rules", f"student {s + 1}'s pattern {pattern.pattern!r} did not finish matching prompt "
                             f"{i + 1} within {MATCH_SECONDS:g} s", "simplify it: nested repetition such as "
                             "(\\w+\\s?)+ can take forever; plain words (anime|cartoon) are enough") from None

    return [next((s for s in sorted(compiled) if any(matches(s, p, i) for p in compiled[s])), default)
            for i in range(len(prompts))]


def prompts_of_students(assignment: Sequence[int], students: int) -> List[List[int]]:
    """For each student, the prompts (their positions in the list) routed to it: its calibration is made on
    those, the share it serves at run time (a percentile over prompts it never sees would send another
    share than k % to the teacher)."""
    return [[i for i, a in enumerate(assignment) if a == s] for s in range(students)]


def calibration_student_problem(meta: dict, student: Optional[int]) -> Optional[str]:
    """What is wrong with gating student `student`'s samples (2; None: the plain sampler's) with a
    calibration made in a run of several students for another of them, else None. A file made for one
    student alone may serve any slot: the user calibrated that student by itself."""
    made_for, together = meta.get("student"), int(meta.get("students", 1) or 1)
    wanted = f"student {student or 1}"  # as the Calibrate node names it in the file
    if together > 1 and made_for and made_for != wanted:
        return f"was calibrated for {made_for} (one of {together} routed students) but the samples come from {wanted}"
    return None


def nearest_centroid(prompts: torch.Tensor, centroids: torch.Tensor) -> List[int]:
    """Student k serves the prompts nearest (cosine) to centroid k, as it was trained on them."""
    if centroids.shape[-1] != prompts.shape[-1]:
        raise InputError("centroids", f"the centroids are {centroids.shape[-1]}-wide, the prompt embeddings "
                         f"{prompts.shape[-1]}-wide", "make the centroid file with the same text encoder")
    return [int(i) for i in (_unit(prompts) @ _unit(centroids).T).argmax(dim=1)]


def best_of(scores: torch.Tensor) -> List[int]:
    """scores [S, N] of every student's sample of every prompt -> the best student per prompt (ties:
    the lower number). Costs every student's steps on every prompt."""
    return [int(i) for i in scores.float().argmax(dim=0)]


def balanced_assign(dist: torch.Tensor) -> torch.Tensor:
    """Assign each of N points to one of K clusters in groups whose sizes differ by at most one (N // K
    each, N % K of them one more), greedily: the points that would lose most by not getting their
    nearest cluster choose first."""
    n, k = dist.shape
    size, extra = divmod(n, k)  # `extra` clusters, whichever fill first, may take one point more
    ordered = dist.sort(dim=1).values
    regret = (ordered[:, 1] - ordered[:, 0]) if k > 1 else torch.zeros(n)
    labels = torch.empty(n, dtype=torch.long)
    count = [0] * k
    for i in regret.argsort(descending=True, stable=True).tolist():
        for c in dist[i].argsort(stable=True).tolist():
            if count[c] < size or (count[c] == size and extra):
                extra -= count[c] == size
                labels[i], count[c] = c, count[c] + 1
                break
    return labels


def kmeans(x: torch.Tensor, k: int, seed: int = 0, iterations: int = 100,
           balanced: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Spherical K-means (cosine distance) of embeddings [N, D] with k-means++ seeding from `seed`;
    balanced: equal-size groups (sizes differ by at most one), as MSD splits its prompts.
    Returns (labels [N], unit centroids [k, D])."""
    x = _unit(x)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise InputError("k", f"{k} groups of {n} prompts", f"choose k between 1 and {n}")
    g = torch.Generator().manual_seed(int(seed))
    centroids = x[torch.randint(n, (1,), generator=g)]
    while centroids.shape[0] < k:  # k-means++: the next seed far from the chosen ones
        d = (1 - x @ centroids.T).min(dim=1).values.clamp(min=0)
        p = d / d.sum() if d.sum() > 0 else torch.full((n,), 1.0 / n)
        centroids = torch.cat([centroids, x[torch.multinomial(p, 1, generator=g)]])
    labels = None
    for _ in range(iterations):
        dist = 1 - x @ centroids.T
        new = balanced_assign(dist) if balanced else dist.argmin(dim=1)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        centroids = torch.stack([_unit(x[labels == c].mean(0)) if (labels == c).any() else centroids[c]
                                 for c in range(k)])
    return labels, centroids


def write_centroids(path: str, centroids: torch.Tensor, sizes: Sequence[int], encoder: str) -> None:
    """The centroid file a router reads (JSON); refuses to replace an existing file."""
    data = {"format": CENTROIDS_FORMAT, "version": 1, "encoder": encoder, "sizes": [int(s) for s in sizes],
            "centroids": [[round(float(v), 7) for v in row] for row in centroids]}
    with open(path, "x", encoding="utf-8") as f:
        json.dump(data, f)


def read_centroids(path: str) -> Tuple[torch.Tensor, dict]:
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("format") != CENTROIDS_FORMAT:
            raise ValueError("not a centroid file")
        centroids = torch.tensor(data["centroids"], dtype=torch.float32)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError("centroids", f"{name} is not a centroid file ({e})",
                         "make one with tools/split_prompts.py") from None
    if centroids.ndim != 2 or not torch.isfinite(centroids).all():
        raise InputError("centroids", f"{name} holds no usable centroids", "make it again with tools/split_prompts.py")
    return centroids, data

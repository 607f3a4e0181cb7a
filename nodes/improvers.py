"""What every improver (the teacher, a student retry) does around its own sampling: take the samples
the gate sent on as one sub-batch, put the new rows back in batch order, extend their records, decode
only what nobody has decoded yet, and keep each replaced version for a keep-the-better gate."""
import logging
from dataclasses import replace

import torch

import comfy.sample

from ..schedulers.batching import batch_indices, put_rows, take_rows
from ..schedulers.errors import InputError
from ..schedulers.record import (IMAGES_KEY, bare_records, cost_line, decoded_rows, per_student_lines, records_of,
                                 rows_of, stage_line, student_labels, with_records)

log = logging.getLogger("StudentTeacher")


def rows_to_improve(latent, decision, vae):
    """(the rows of `latent` to improve, their records, their images decoded by `vae` or Nones): the gate's
    rejections (the gate must have decided on these very samples), or every sample without a gate."""
    n = int(latent["samples"].shape[0])
    if decision is None:
        records = records_of(latent) or bare_records(batch_indices(latent))
        return list(range(n)), records, list(decoded_rows(latent, vae))
    if decision.batch_size != n or decision.batch_index != batch_indices(latent):
        raise InputError("gate", f"the gate decided on samples {decision.batch_index}, the latent holds "
                         f"{batch_indices(latent)}", "connect the gate that scored this same latent")
    gated = decision.latent["samples"] if decision.latent is not None else latent["samples"]
    if not same_samples(latent["samples"], gated):
        raise InputError("latent", "holds other samples than the gate decided on (a node between them changed "
                         "them, or keep_better restored earlier versions)", "connect the gate's latent output "
                         "here; put nodes that change the samples before the gate")
    return decision.rejected, decision.records, list(decoded_rows(decision.latent or latent, vae))


def warn_one_prompt(positive, records, todo, node):
    """A teacher or retry given one prompt for samples made from several (a prompt list) improves each
    towards that one prompt: legal (a deliberate override), but rarely meant, so it is said."""
    made_from = {records[i].prompt for i in todo} - {None}
    rows = max((int(cond.shape[0]) for cond, _ in positive or ()), default=0)
    if len(made_from) > 1 and rows == 1:
        log.warning("%s: positive holds one prompt, but the samples it improves were made from %d different "
                    "prompts: each is improved towards that one. Connect the Encode Prompt List's conditioning "
                    "to give each sample its own.", node, len(made_from))


def same_samples(a, b) -> bool:
    """The same tensor, or equal values: a gate with keep_better outputs a copy even when it restores
    nothing, and the student's latent wired past the gate holds the same values then."""
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b)))


def source_rows(source_latent, todo, samples, model):
    """Rows `todo` of the latent the student started from (empty, or an encoded image; one row for all
    or one per sample), the start of a regenerate or a retry."""
    n = int(samples.shape[0])
    source = comfy.sample.fix_empty_latent_channels(model, source_latent["samples"])
    if source.shape[0] not in (1, n) or source.shape[1:] != samples.shape[1:]:
        raise InputError("source_latent", f"shape {tuple(source.shape)} does not match the samples' "
                         f"{tuple(samples.shape)}", "use the same latent the student sampled from")
    return take_rows(source, todo, n).expand(len(todo), *source.shape[1:]).contiguous()  # a batch-1 source broadcasts


def put_back(base, todo, records, images, rows, stage, vae, ws=None, new_images=None):
    """The LATENT with `rows` in place of rows `todo` (the others bit-identical), their records extended
    by `stage` (and given the guidance `ws` the new rows were made with), their earlier versions kept;
    and every row's decoded image (decoding only new rows and rows never decoded; `new_images`: the new
    rows' images when another VAE made them, e.g. a teacher of another family)."""
    n = int(base["samples"].shape[0])
    earlier = [None] * n  # only this improver's replacements: the next gate compares with them
    images, records = list(images), list(records)
    samples = base["samples"]
    if todo:
        for j, (i, image) in enumerate(zip(todo, vae.decode(rows) if new_images is None else new_images)):
            earlier[i] = (samples[i], images[i], records[i].w)
            images[i] = image
            records[i] = records[i].then(stage) if ws is None else replace(records[i], w=ws[j]).then(stage)
        samples = put_rows(samples, todo, rows)
    missing = [i for i in range(n) if images[i] is None]
    if missing:
        for i, image in zip(missing, vae.decode(samples[missing])):
            images[i] = image
    return with_records({**base, "samples": samples}, records, images=images, earlier=earlier, decoder=vae)


def report(latent, decision, todo, what, teacher_steps=None):
    """What the improver did; teacher_steps: warn when a budget gate assumed other teacher steps."""
    n = int(latent["samples"].shape[0])
    records = records_of(latent)
    lines = [f"{what} improved {len(todo)}/{n} samples"
             + (f": #{', #'.join(str(records[i].batch_index) for i in todo)}" if todo else "")]
    if records and records[0].last("student"):
        lines += [cost_line(records), stage_line(records)]
    if records and len(student_labels(records)) > 1:
        lines += per_student_lines(records)
    if decision is not None:
        lines.append(f"acceptance rate: {100 * decision.acceptance_rate:.0f}%")
        if teacher_steps is not None and decision.budget_teacher_steps not in (None, teacher_steps):
            lines.append(f"warning: the gate's budget assumed {decision.budget_teacher_steps} teacher steps, "
                         f"this node runs {teacher_steps}")
    return "\n".join(lines)


def images_of(latent):
    """The decoded images a LATENT made by put_back carries, as one IMAGE batch."""
    return torch.stack(list(rows_of(latent, IMAGES_KEY)))

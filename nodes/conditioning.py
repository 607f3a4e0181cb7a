"""A sub-batch's conditioning: every per-sample entry follows its sample."""
from ..schedulers.batching import take_rows, take_sample_entries
from .prompts import PROMPTS_KEY


def _subset_control(control, indices, batch_size):
    if control is None:
        return None
    c = control.copy()
    c.cond_hint_original = take_rows(control.cond_hint_original, indices, batch_size)
    c.set_previous_controlnet(_subset_control(control.previous_controlnet, indices, batch_size))
    return c


def subset_conditioning(conditioning, indices, batch_size):
    """The conditioning of samples `indices` only: every per-sample entry follows its sample (prompt rows,
    their texts, masks, inpaint latents, pooled outputs, ControlNet hints); ComfyUI would otherwise
    give a sub-batch the first rows."""
    out = []
    for cond, extra in conditioning:
        extra = {k: take_sample_entries(v, indices, batch_size) for k, v in extra.items()}
        if PROMPTS_KEY in extra:  # the texts are a tuple (tuples are not per-sample by rule: an area is one)
            extra[PROMPTS_KEY] = take_rows(extra[PROMPTS_KEY], indices, batch_size)
        if extra.get("control") is not None:
            extra["control"] = _subset_control(extra["control"], indices, batch_size)
        out.append([take_rows(cond, indices, batch_size), extra])
    return out

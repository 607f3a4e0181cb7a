"""A student that keeps its own weights, so sharing a checkpoint with the teacher costs no re-patching."""
import copy
import logging
import uuid

import comfy.model_management as mm

from ..schedulers.memory import copy_pays_off, gib, room_for_copy
from .common import CATEGORY

log = logging.getLogger(__name__)


def with_own_weights(model):
    """A clone of `model` (its LoRA and other patches included) on its own copy of the weights, or
    `model` itself when the copy would not fit in memory (with a warning).

    An LCM-LoRA student and its teacher are two clones of one checkpoint's UNet: every queue, loading the
    student patches the LoRA into the shared weights and loading the teacher takes it out again (ComfyUI
    moves the whole UNet to the offload device and back to do so). On its own copy, the student is
    patched once, when it is first loaded, and both stay loaded as long as memory allows."""
    mm.unload_all_models()  # the shared weights back to their originals (no clone's patches in them)
    size = model.model_size()
    where = next(model.model.parameters()).device
    free = mm.get_free_memory(where)
    if not room_for_copy(size, free):
        log.warning("Separate Student Weights: a copy of the UNet (%s) does not fit in the %s free on %s; the "
                    "student shares the teacher's weights and is re-patched on every queue", gib(size), gib(free),
                    where)
        return model
    load = model.load_device
    if load != where:  # a GPU: the copy pays only if student and teacher both stay loaded on it
        free_load = mm.get_free_memory(load)
        if not copy_pays_off(size, free_load):
            log.warning("Separate Student Weights: student and teacher (2 x %s) do not both fit in the %s free on "
                        "%s, so a copy would be moved in and out every queue; the student shares the teacher's "
                        "weights and is re-patched on every queue (faster there)", gib(size), gib(free_load), load)
            return model
    own = model.clone()
    # copied together, so an object patch that wraps the model's own modules (a guided student's w
    # embedding around the time MLP) wraps the copy's, and a LoRA on the copy leaves the original alone
    memo = {}
    own.model = copy.deepcopy(model.model, memo)
    own.object_patches = {key: copy.deepcopy(value, memo) for key, value in model.object_patches.items()}
    own.backup, own.object_patches_backup, own.hook_backup = {}, {}, {}  # a clone shares these with the original
    own.patches_uuid, own.parent = uuid.uuid4(), None
    return own


class SeparateStudentWeights:
    DESCRIPTION = ("Gives the student its own copy of the UNet, so a student made from the teacher's checkpoint "
                   "(an LCM-LoRA on the same model) is not re-patched on every queue: without it, loading the "
                   "student merges the LoRA into the weights the teacher shares and loading the teacher takes it "
                   "out again (3-4 s a queue for full-size SD1.5 on a 2-core CPU, bench/bench_pipeline.py). "
                   "Costs one more UNet in memory (SD1.5 ~1.7 GB, SDXL ~5 GB in fp16), made once and kept while "
                   "the inputs stay the same. The student keeps sharing (a warning says so) when the copy would not "
                   "leave 2 GiB free, or when on a GPU student and teacher would not both stay loaded (FLUX, "
                   "Qwen-Image: moving a 24-40 GB copy in and out costs more than re-patching). The student's "
                   "samples are unchanged.")
    CATEGORY = CATEGORY
    FUNCTION = "separate"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("student",)
    OUTPUT_TOOLTIPS = ("The same student on its own weights; connect it to the Consistency Student Sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The student, e.g. the checkpoint's MODEL after LoraLoaderModelOnly "
                                           "with the LCM-LoRA."}),
        }}

    def separate(self, model):
        return (with_own_weights(model),)

"""Prompt lists: many prompts in one batch, each sample with its own prompt.

The CONDITIONING made here has one row per prompt and carries the prompt texts (under PROMPTS_KEY in
its dict), so the student can write each sample's prompt into its record and the gate scores sample i
against prompt i without the text being wired twice."""
import os

import torch

import comfy.model_management
import comfy.utils
import folder_paths

from ..schedulers.batching import shared_token_length
from ..schedulers.errors import InputError
from ..schedulers.shards import prompt_lines
from .common import CATEGORY, file_signature, full_path

PROMPTS_KEY = "student_teacher_prompts"
PROMPTS_FOLDER = "student_teacher_prompts"
NO_FILE = "none"


def prompt_list(text, prompts_file, limit=0, at_least=1, fix=None):
    """One prompt a line, from the text or from a file of the prompts folders."""
    if prompts_file and prompts_file != NO_FILE:
        path = full_path(PROMPTS_FOLDER, prompts_file, "prompts_file", "a text file with one prompt per line")
        text = read_prompt_file(path)
    prompts = prompt_lines(text)  # as tools/distribute.py counts them to plan its shards
    prompts = prompts[:limit] if limit else prompts
    if len(prompts) < at_least:
        raise InputError("prompts", f"{len(prompts)} prompt(s) given", fix or f"give at least {at_least}, one per line")
    return prompts


def read_prompt_file(path):
    """A prompt file's text: UTF-8, with or without a byte-order mark (Windows editors write one)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError("prompts_file", f"{os.path.basename(path)} is not UTF-8 text (byte {e.start} is "
                         f"0x{data[e.start]:02x})", "save it with the UTF-8 encoding (most editors: Save As, "
                         "Encoding: UTF-8)") from None


def encode_prompts(clip, prompts):
    """CONDITIONING with one row per prompt (pooled outputs too). Encodings of different token lengths
    (prompts over 77 tokens) are repeated to a common length, ComfyUI's own rule when it batches
    conditionings (comfy.conds.CONDCrossAttn.concat): repeating keys and values leaves attention as it is.
    What would grow the conditioning too much (lengths 1..7 chunks -> 420) is refused."""
    encoded, bar = [], comfy.utils.ProgressBar(len(prompts))
    for p in prompts:  # a long list can be cancelled between prompts
        comfy.model_management.throw_exception_if_processing_interrupted()
        encoded.append(clip.encode_from_tokens_scheduled(clip.tokenize(p)))
        bar.update(1)
    if any(len(e) != 1 for e in encoded):
        raise InputError("clip", "the text encoder gave a scheduled (hooked) conditioning", "use a plain CLIP")
    length = shared_token_length([e[0][0].shape[1] for e in encoded])
    rows = [e[0][0].repeat(1, length // e[0][0].shape[1], 1) for e in encoded]
    extra = dict(encoded[0][0][1])
    if "pooled_output" in extra:
        extra["pooled_output"] = torch.cat([e[0][1]["pooled_output"] for e in encoded])
    extra[PROMPTS_KEY] = tuple(prompts)
    return [[torch.cat(rows), extra]]


def prompts_of(conditioning, batch_size, input_name="positive"):
    """The prompt text of each of `batch_size` samples, from conditioning made by encode_prompts
    (None each when the conditioning does not carry its texts)."""
    texts = None
    for _cond, extra in conditioning or ():
        texts = extra.get(PROMPTS_KEY, texts)
    if texts is None:
        return [None] * batch_size
    if len(texts) == 1:
        return list(texts) * batch_size
    if len(texts) != batch_size:
        raise InputError(input_name, f"holds {len(texts)} prompts for {batch_size} samples",
                         "give the Empty Latent Image the prompt list's count as its batch_size")
    return list(texts)


def prompt_embeddings(clip, prompts) -> torch.Tensor:
    """[N, D] text embeddings for routing: the encoder's pooled output (its sentence embedding), or
    the mean over tokens for an encoder without one."""
    out = []
    for p in prompts:
        comfy.model_management.throw_exception_if_processing_interrupted()
        cond, extra = clip.encode_from_tokens_scheduled(clip.tokenize(p))[0]
        pooled = extra.get("pooled_output")
        # on the CPU, where the routing compares them with centroids and prototypes (--gpu-only keeps text there)
        out.append((pooled if pooled is not None else cond.mean(dim=1)).float().cpu().reshape(1, -1))
    return torch.cat(out)


class EncodePrompts:
    DESCRIPTION = ("Encodes a list of prompts (one per line, or a file from the prompts folders) into one "
                   "CONDITIONING with a row per prompt, SD1.5 and SDXL, any prompt length. The texts travel with "
                   "the samples: the Oracle Gate scores sample i against prompt i by itself. With one prompt it is "
                   "a CLIP Text Encode whose text the gate finds.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING", "INT", "STRING")
    RETURN_NAMES = ("conditioning", "count", "prompts")
    OUTPUT_TOOLTIPS = ("One row per prompt; connect to the student (and the teacher).",
                       "The number of prompts: connect to Empty Latent Image's batch_size.",
                       "The prompts, one per line.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip": ("CLIP", {"tooltip": "The text encoder of the student's checkpoint."}),
            "prompts": ("STRING", {"multiline": True, "default": "",
                                   "tooltip": "One prompt per line (ignored when prompts_file is set)."}),
            "prompts_file": ([NO_FILE] + folder_paths.get_filename_list(PROMPTS_FOLDER),
                             {"tooltip": "A prompt list from the pack's prompts/ folder or models/image_reward/prompts/."}),
            "max_prompts": ("INT", {"default": 0, "min": 0, "max": 10000,
                                    "tooltip": "Use only the first N prompts (0 = all)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, prompts_file=NO_FILE, **_):
        return file_signature(PROMPTS_FOLDER, prompts_file) if prompts_file != NO_FILE else ""

    def encode(self, clip, prompts, prompts_file, max_prompts):
        texts = prompt_list(prompts, prompts_file, max_prompts)
        return (encode_prompts(clip, texts), len(texts), "\n".join(texts))

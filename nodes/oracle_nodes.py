"""ImageReward oracle nodes: load the scorer once, score any IMAGE batch."""
import torch

import comfy.model_management as mm
import comfy.model_patcher
import folder_paths

from ..oracle import ImageRewardOracle, OracleLoadError, load_image_reward
from ..oracle.tokenizer import TokenizerError
from ..oracle.checkpoint import DTYPES, WEIGHT_EXTENSIONS
from ..schedulers.errors import InputError
from .common import CATEGORY, ORACLE_TYPE, file_signature, full_path
from .preview import save_previews

ORACLE_FOLDER = "image_reward"


def oracle_files():
    return [f for f in folder_paths.get_filename_list(ORACLE_FOLDER) if f.lower().endswith(WEIGHT_EXTENSIONS)]


class ComfyOracle:
    """The IR_ORACLE value: a scorer whose weights ComfyUI moves to the GPU before each use and
    may offload afterwards, like any model."""

    def __init__(self, scorer, patcher):
        self.scorer = scorer
        self.patcher = patcher
        self.name = scorer.name

    def score(self, images, prompts):
        # always whole: the oracle is plain torch (no comfy.ops casting), so a partial low-VRAM load
        # would leave some weights on the CPU; ComfyUI loads its own text encoders the same way
        mm.load_models_gpu([self.patcher], force_full_load=True)
        return self.scorer.score(images, prompts)


def load_oracle(file, device="auto", dtype="auto", preprocess="exact", batch_size=8):
    path = full_path(ORACLE_FOLDER, file, "oracle_file", "ImageReward.pt (huggingface.co/THUDM/ImageReward)")
    if device == "auto":  # where and how ComfyUI puts its text encoders
        load_device, offload_device = mm.text_encoder_device(), mm.text_encoder_offload_device()
    else:
        load_device = offload_device = torch.device("cpu")
    if dtype == "auto":
        dtype = "fp16" if load_device.type == "cuda" and mm.should_use_fp16(load_device) else "fp32"
    try:
        model = load_image_reward(path, device="cpu", dtype=DTYPES[dtype])
    except OracleLoadError as e:
        raise InputError("oracle_file", e.problem, e.fix) from None
    model.eval().requires_grad_(False)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
    try:
        scorer = ImageRewardOracle(model, preprocess=preprocess, batch_size=batch_size, name=file)
    except TokenizerError as e:
        raise InputError("oracle_file", e.problem, e.fix) from None
    return ComfyOracle(scorer, patcher)


class LoadImageRewardOracle:
    DESCRIPTION = ("Loads ImageReward (Xu et al. 2023) from models/image_reward/ (ImageReward.pt or a "
                   ".safetensors conversion), offline. The model stays loaded between runs and is offloaded "
                   "like other ComfyUI models.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (ORACLE_TYPE,)
    RETURN_NAMES = ("oracle",)
    OUTPUT_TOOLTIPS = ("Scores images against prompts; connect to the Oracle Gate or Score Images.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "oracle_file": (oracle_files(), {"tooltip": "A file in ComfyUI/models/image_reward/ "
                                                        "(ImageReward.pt from THUDM/ImageReward)."}),
            "device": (["auto", "cpu"], {"default": "auto",
                                         "tooltip": "auto: where ComfyUI runs its text encoders (the GPU unless "
                                                    "VRAM is low)."}),
            "dtype": (["auto", "fp32", "fp16", "bf16"], {"default": "auto",
                                                         "tooltip": "auto: fp16 on CUDA, fp32 on CPU."}),
            "preprocess": (["exact", "fast"], {"default": "exact",
                                               "tooltip": "exact: PIL bicubic like the original package. fast: "
                                                          "batched resize on the GPU (tiny score drift)."}),
            "batch_size": ("INT", {"default": 8, "min": 1, "max": 256,
                                   "tooltip": "Images scored per forward pass."}),
        }}

    @classmethod
    def IS_CHANGED(cls, oracle_file="", **_):
        return file_signature(ORACLE_FOLDER, oracle_file)

    def load(self, oracle_file, device, dtype, preprocess, batch_size):
        return (load_oracle(oracle_file, device, dtype, preprocess, batch_size),)


class ScoreImages:
    DESCRIPTION = "Scores each image against a prompt with the oracle; outputs the images sorted by score."
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("images", "scores")
    OUTPUT_TOOLTIPS = ("The images in the chosen order.", "One line per image: original index and score.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Images to score."}),
            "oracle": (ORACLE_TYPE, {"tooltip": "From Load ImageReward Oracle."}),
            "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "The prompt the images should match."}),
            "order": (["best first", "worst first", "as given"], {"default": "best first",
                                                                   "tooltip": "Order of the output images."}),
        }}

    def run(self, images, oracle, prompt, order):
        scores = oracle.score(images, [prompt] * images.shape[0])
        ranking = list(range(len(scores)))
        if order != "as given":
            ranking = sorted(ranking, key=lambda i: float(scores[i]), reverse=order == "best first")
        lines = [f"#{i}: {float(scores[i]):+.4f}" for i in ranking]
        ui = {"images": save_previews(images[ranking], [f"{float(scores[i]):+.3f}" for i in ranking],
                                      [True] * len(ranking), prefix="StudentTeacher_scores")}
        return {"ui": ui, "result": (images[ranking], "\n".join(lines))}

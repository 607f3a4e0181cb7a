"""ImageReward oracle nodes: load the scorer once, score any IMAGE batch."""
import torch

import comfy.model_management
import comfy.model_patcher
import folder_paths

from ..oracle import ImageRewardOracle, OracleLoadError, load_image_reward
from ..schedulers.errors import InputError
from .common import CATEGORY, ORACLE_TYPE
from .preview import save_previews

ORACLE_FOLDER = "image_reward"
WEIGHT_EXTENSIONS = (".pt", ".pth", ".safetensors")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def oracle_files():
    return [f for f in folder_paths.get_filename_list(ORACLE_FOLDER) if f.lower().endswith(WEIGHT_EXTENSIONS)]


class ComfyOracle:
    """The IR_ORACLE value: a scorer whose weights ComfyUI loads to the GPU before each use
    and may offload afterwards, like any model."""

    def __init__(self, scorer, patcher):
        self.scorer = scorer
        self.patcher = patcher
        self.name = scorer.name

    def score(self, images, prompts):
        comfy.model_management.load_models_gpu([self.patcher])
        return self.scorer.score(images, prompts)


def load_oracle(file, device="auto", dtype="auto", preprocess="exact", batch_size=8):
    path = folder_paths.get_full_path(ORACLE_FOLDER, file) if file else None
    if path is None:
        raise InputError("oracle_file", f"{file!r} is not in models/{ORACLE_FOLDER}/",
                         f"download ImageReward.pt (THUDM/ImageReward) into ComfyUI/models/{ORACLE_FOLDER}/")
    load_device = comfy.model_management.get_torch_device() if device == "auto" else torch.device("cpu")
    if dtype == "auto":
        dtype = "fp16" if load_device.type == "cuda" else "fp32"
    try:
        model = load_image_reward(path, device="cpu", dtype=DTYPES[dtype])
    except OracleLoadError as e:
        raise InputError("oracle_file", str(e), f"replace {file} with the original ImageReward.pt") from None
    model.eval().requires_grad_(False)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device,
                                               offload_device=comfy.model_management.unet_offload_device())
    scorer = ImageRewardOracle(model, preprocess=preprocess, batch_size=batch_size, name=file)
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
            "device": (["auto", "cpu"], {"default": "auto", "tooltip": "auto: ComfyUI's GPU when there is one."}),
            "dtype": (["auto", "fp32", "fp16", "bf16"], {"default": "auto",
                                                         "tooltip": "auto: fp16 on CUDA, fp32 on CPU."}),
            "preprocess": (["exact", "fast"], {"default": "exact",
                                               "tooltip": "exact: PIL bicubic like the original package. fast: "
                                                          "batched resize on the GPU (tiny score drift)."}),
            "batch_size": ("INT", {"default": 8, "min": 1, "max": 256,
                                   "tooltip": "Images scored per forward pass."}),
        }}

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

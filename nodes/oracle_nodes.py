"""Oracle nodes: load any supported scorer once, combine several into an ensemble, score IMAGE batches."""
import torch

import comfy.model_management as mm
import comfy.model_patcher
import folder_paths

from ..oracle import OracleLoadError
from ..oracle.calibration import CalibrationError
from ..oracle.checkpoint import DTYPES, WEIGHT_EXTENSIONS
from ..oracle.ensemble import EnsembleOracle, member_from_calibration, other_samples
from ..oracle.loading import (ENCODER_FILE, EXPECTED_FILES, KINDS, ImageEncoderError, KindMismatch,
                              load_oracle as load_oracle_file)
from ..oracle.tokenizer import TokenizerError
from ..schedulers.errors import InputError
from .common import CATEGORY, ORACLE_TYPE, file_signature, full_path
from .gate import NO_CALIBRATION, calibration_choices, calibration_signature, load_calibration, oracle_label
from .preview import save_previews

# models/oracles/ for every kind; models/image_reward/, where ImageReward.pt went before, still read
ORACLE_FOLDERS = ("oracles", "image_reward")
NO_ENCODER = "none"


def oracle_files():
    names = [f for folder in ORACLE_FOLDERS for f in folder_paths.get_filename_list(folder)]
    return [f for f in dict.fromkeys(names) if f.lower().endswith(WEIGHT_EXTENSIONS)]


def oracle_folder(file):
    """The folder holding `file` (models/oracles/ first); "oracles" when none does."""
    return next((folder for folder in ORACLE_FOLDERS if file and folder_paths.get_full_path(folder, file)),
                ORACLE_FOLDERS[0])


class ComfyOracle:
    """The oracle value: a scorer whose weights ComfyUI moves to the GPU before each use and may
    offload afterwards, like any model."""

    def __init__(self, scorer, patcher):
        self.scorer = scorer
        self.patcher = patcher
        self.name, self.kind, self.fingerprint = scorer.name, scorer.kind, scorer.fingerprint

    def score(self, images, prompts):
        # always whole: the oracle is plain torch (no comfy.ops casting), so a partial low-VRAM load
        # would leave some weights on the CPU; ComfyUI loads its own text encoders the same way
        mm.load_models_gpu([self.patcher], force_full_load=True)
        return self.scorer.score(images, prompts)


def encoder_chosen(image_encoder) -> bool:
    return bool(image_encoder) and image_encoder != NO_ENCODER


def encoder_path(image_encoder):
    """The image_encoder file's path; None when none is chosen or the chosen one is missing."""
    if not encoder_chosen(image_encoder):
        return None
    return folder_paths.get_full_path(oracle_folder(image_encoder), image_encoder)


def load_oracle(file, device="auto", dtype="auto", preprocess="auto", batch_size=8, kind="auto",
                image_encoder=NO_ENCODER):
    path = full_path(oracle_folder(file), file, "oracle_file", EXPECTED_FILES)
    if device == "auto":  # where and how ComfyUI puts its text encoders
        load_device, offload_device = mm.text_encoder_device(), mm.text_encoder_offload_device()
    else:
        load_device = offload_device = torch.device("cpu")
    if dtype == "auto":
        dtype = "fp16" if load_device.type == "cuda" and mm.should_use_fp16(load_device) else "fp32"
    try:
        scorer = load_oracle_file(path, kind, device="cpu", dtype=DTYPES[dtype], preprocess=preprocess,
                                  batch_size=batch_size, name=file, image_encoder=encoder_path(image_encoder))
    except KindMismatch as e:
        raise InputError("kind", e.problem, e.fix) from None
    except ImageEncoderError as e:
        if encoder_chosen(image_encoder):  # chosen but not there: name the folder it was looked for in
            full_path(oracle_folder(image_encoder), image_encoder, "image_encoder", ENCODER_FILE)
        raise InputError("image_encoder", e.problem, e.fix) from None
    except (OracleLoadError, TokenizerError) as e:
        raise InputError("oracle_file", e.problem, e.fix) from None
    # ModelPatcher sets attributes such as `device` on the module it manages, which transformers' models
    # refuse (a read-only property): it manages a plain container of the scorer's model instead
    holder = torch.nn.ModuleList([scorer.model])
    patcher = comfy.model_patcher.ModelPatcher(holder, load_device=load_device, offload_device=offload_device)
    return ComfyOracle(scorer, patcher)


class LoadImageRewardOracle:
    DESCRIPTION = ("Loads a reward oracle from models/oracles/ (or models/image_reward/), offline, and recognises "
                   "it from the file's keys: ImageReward (Xu et al. 2023), PickScore (Kirstain et al. 2023), HPSv2 / "
                   "HPSv2.1 (Wu et al. 2023), a CLIP model for the CLIP score (OpenAI ViT-L/14, OpenCLIP "
                   "ViT-bigG-14), or LAION's aesthetic predictor (image only, ~1..10; with a CLIP ViT-L/14 as "
                   "image_encoder). The model stays loaded between runs and is offloaded like other ComfyUI models.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (ORACLE_TYPE,)
    RETURN_NAMES = ("oracle",)
    OUTPUT_TOOLTIPS = ("Scores images against prompts; connect to the Oracle Gate, Score Images or Calibrate.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "oracle_file": (oracle_files(), {"tooltip": "A file in ComfyUI/models/oracles/ (or models/image_reward/): "
                                                        "ImageReward.pt, PickScore_v1's model.safetensors, "
                                                        "HPS_v2.1_compressed.pt, a CLIP model's weights, or the "
                                                        "aesthetic predictor sac+logos+ava1-l14-linearMSE.pth."}),
            "device": (["auto", "cpu"], {"default": "auto",
                                         "tooltip": "auto: where ComfyUI runs its text encoders (the GPU unless "
                                                    "VRAM is low)."}),
            "dtype": (["auto", "fp32", "fp16", "bf16"], {"default": "auto",
                                                         "tooltip": "auto: fp16 on CUDA, fp32 on CPU."}),
            "preprocess": (["auto", "exact", "fast"], {"default": "auto",
                                                       "tooltip": "How images are resized for the oracle; both give "
                                                                  "the reference's pixels bit for bit. exact: PIL, "
                                                                  "image by image. fast: the same resampling batched "
                                                                  "in torch on the oracle's device. auto: exact on "
                                                                  "the CPU, fast on a GPU."}),
            "batch_size": ("INT", {"default": 8, "min": 1, "max": 256,
                                   "tooltip": "Images scored per forward pass."}),
        }, "optional": {
            "kind": (["auto", *KINDS], {"default": "auto",
                                        "tooltip": "What the file is. auto: ImageReward and the aesthetic predictor "
                                                   "from their keys; a CLIP-family file by its name ('pick' -> "
                                                   "PickScore, 'hps' -> HPSv2, else CLIP score). Set it when a renamed "
                                                   "file is read as the wrong kind."}),
            "image_encoder": ([NO_ENCODER, *oracle_files()], {
                "default": NO_ENCODER,
                "tooltip": "Aesthetic predictor only: the CLIP ViT-L/14 whose image embeddings it reads, a file in "
                           "ComfyUI/models/oracles/ (openai/clip-vit-large-patch14's model.safetensors, or the same "
                           "model in open_clip's layout). Ignored by the other oracles."}),
        }}

    @classmethod
    def IS_CHANGED(cls, oracle_file="", image_encoder=NO_ENCODER, **_):
        signature = file_signature(oracle_folder(oracle_file), oracle_file)
        if encoder_chosen(image_encoder):
            signature += "|" + file_signature(oracle_folder(image_encoder), image_encoder)
        return signature

    def load(self, oracle_file, device, dtype, preprocess, batch_size, kind="auto", image_encoder=NO_ENCODER):
        return (load_oracle(oracle_file, device, dtype, preprocess, batch_size, kind, image_encoder),)


class EnsembleOracles:
    DESCRIPTION = ("Combines two to four oracles into one (e.g. ImageReward + PickScore), for when one judge is not "
                   "trusted: each score is standardised with the mean and spread of that oracle's own calibration "
                   "of the student, and the ensemble scores the weighted mean of these z-scores (0 = the student's "
                   "average sample). Gate and calibrate it like any oracle.")
    CATEGORY = CATEGORY
    FUNCTION = "combine"
    RETURN_TYPES = (ORACLE_TYPE,)
    RETURN_NAMES = ("oracle",)
    OUTPUT_TOOLTIPS = ("The ensemble, an oracle of kind Ensemble; calibrate it with the Calibrate node to gate by "
                       "percentile.",)

    @classmethod
    def INPUT_TYPES(cls):
        def member(i):
            return {
                f"oracle_{i}": (ORACLE_TYPE, {"tooltip": f"Oracle {i}, from Load Oracle."}),
                f"calibration_{i}": (calibration_choices(), {"tooltip": f"A calibration made with oracle {i} (the "
                                                                        "Calibrate node): its scores' mean and spread "
                                                                        f"standardise oracle {i}'s scores."}),
                f"weight_{i}": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.1,
                                          "tooltip": f"Oracle {i}'s weight in the mean of z-scores (0 = left out: not run, "
                                                     "needs no calibration)."}),
            }
        return {"required": {**member(1), **member(2)}, "optional": {**member(3), **member(4)}}

    @classmethod
    def IS_CHANGED(cls, calibration_1=NO_CALIBRATION, **inputs):
        return calibration_signature(cls, calibration_1, **inputs)

    def combine(self, oracle_1, calibration_1, weight_1, oracle_2, calibration_2, weight_2, **more):
        given = {1: (oracle_1, calibration_1, weight_1), 2: (oracle_2, calibration_2, weight_2)}
        for i in (3, 4):
            if more.get(f"oracle_{i}") is not None:
                given[i] = (more[f"oracle_{i}"], more.get(f"calibration_{i}", NO_CALIBRATION),
                            more.get(f"weight_{i}", 1.0))
        members, first = [], None
        for i, (oracle, calibration, weight) in given.items():
            if weight == 0:  # left out: neither run nor calibrated
                continue
            taus, meta = load_calibration(calibration, f"calibration_{i}")
            if taus is None:
                raise InputError(f"calibration_{i}", f"oracle {i} has no calibration", "choose the calibration made "
                                 f"with oracle {i} (its scale is what the ensemble standardises)")
            first = first or meta
            problem = other_samples(meta, first)
            if problem:
                raise InputError(f"calibration_{i}", f"{calibration} {problem}", "calibrate every member on the same "
                                 "student, settings and prompts (one Calibrate run per oracle)")
            try:
                members.append(member_from_calibration(oracle, meta, calibration, float(weight)))
            except CalibrationError as e:
                raise InputError(f"calibration_{i}", str(e), f"choose a calibration made with oracle {i}") from None
        if not members:
            raise InputError("weight_1", "every weight is 0", "give at least one oracle a weight above 0")
        return (EnsembleOracle(members),)


class ScoreImages:
    DESCRIPTION = ("Scores each image against a prompt with any oracle (ImageReward, PickScore, HPSv2, CLIP score, "
                   "the aesthetic predictor, which ignores the prompt, an ensemble); outputs the images sorted by "
                   "score.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("images", "scores")
    OUTPUT_TOOLTIPS = ("The images in the chosen order.", "One line per image: original index and score.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Images to score."}),
            "oracle": (ORACLE_TYPE, {"tooltip": "From Load Oracle (or Ensemble Oracles)."}),
            "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "The prompt the images should match."}),
            "order": (["best first", "worst first", "as given"], {"default": "best first",
                                                                   "tooltip": "Order of the output images."}),
        }}

    def run(self, images, oracle, prompt, order):
        scores = oracle.score(images, [prompt] * images.shape[0])
        ranking = list(range(len(scores)))
        if order != "as given":
            ranking = sorted(ranking, key=lambda i: float(scores[i]), reverse=order == "best first")
        lines = [f"oracle: {oracle_label(oracle)}"] + [f"#{i}: {float(scores[i]):+.4f}" for i in ranking]
        ui = {"images": save_previews(images[ranking], [f"{float(scores[i]):+.3f}" for i in ranking],
                                      [True] * len(ranking), prefix="StudentTeacher_scores")}
        return {"ui": ui, "result": (images[ranking], "\n".join(lines))}

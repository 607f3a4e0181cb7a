"""Reward oracles for the node pack: ImageReward (Xu et al. 2023) reimplemented in plain torch.

Host-free: never imports ComfyUI; needs only torch, numpy, PIL, safetensors and tokenizers.
"""
from .base import Oracle
from .calibration import (CalibrationError, CalibrationExists, percentile_thresholds, read_calibration,
                          save_calibration_as, write_calibration)
from .histogram import render_histogram
from .checkpoint import OPTIONAL_KEYS, OracleLoadError, load_image_reward, read_state_dict
from .image_reward import ImageReward, ImageRewardConfig
from .scorer import ImageRewardOracle
from .tokenizer import BertTokenizer

__all__ = [
    "ImageRewardConfig", "ImageReward", "load_image_reward", "ImageRewardOracle",
    "OracleLoadError", "Oracle", "CalibrationError", "BertTokenizer", "OPTIONAL_KEYS",
    "read_state_dict", "percentile_thresholds", "write_calibration", "save_calibration_as",
    "CalibrationExists", "read_calibration", "render_histogram",
]

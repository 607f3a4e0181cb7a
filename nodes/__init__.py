"""ComfyUI adapters: read inputs, call the host-free core, call ComfyUI's samplers and VAE."""
from .adaptive import AdaptiveSampler
from .calibrate import CalibrateThreshold
from .common import PREFIX
from .gate import OracleGate
from .oracle_nodes import LoadImageRewardOracle, ScoreImages
from .rollback import RollbackNoise
from .student import ConsistencySampler
from .teacher import TeacherImprove

_NODES = {
    "ConsistencySampler": (ConsistencySampler, "Consistency Student Sampler"),
    "LoadImageRewardOracle": (LoadImageRewardOracle, "Load ImageReward Oracle"),
    "OracleGate": (OracleGate, "Oracle Gate (student/teacher)"),
    "Improve": (TeacherImprove, "Teacher Improve (refine / regenerate)"),
    "RollbackNoise": (RollbackNoise, "Rollback Noise (student -> teacher)"),
    "AdaptiveSampler": (AdaptiveSampler, "Adaptive Student-Teacher Sampler"),
    "ScoreImages": (ScoreImages, "Score Images (ImageReward)"),
    "CalibrateThreshold": (CalibrateThreshold, "Calibrate Oracle Threshold"),
}

NODE_CLASS_MAPPINGS = {PREFIX + key: cls for key, (cls, _) in _NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {PREFIX + key: name for key, (_, name) in _NODES.items()}

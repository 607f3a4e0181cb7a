"""ComfyUI adapters: read inputs, call the host-free core, call ComfyUI's samplers and VAE."""
from .adaptive import AdaptiveSampler
from .calibrate import CalibrateThreshold, MergeCalibrations
from .common import PREFIX, rejecting_nonfinite_floats
from .gate import OracleGate
from .guidance import AttachGuidanceEmbedding, LoadGuidedStudent
from .measure import MeasureStudentVsTeacher
from .oracle_nodes import EnsembleOracles, LoadImageRewardOracle, ScoreImages
from .prompts import EncodePrompts
from .retry import StudentRetry
from .rollback import RollbackNoise
from .routing import RouteStudents
from .student import ConsistencySampler
from .teacher import Improve
from .weights import SeparateStudentWeights

# node id = PREFIX + class name; display names as the menu shows them
_NODES = {
    EncodePrompts: "Encode Prompt List",
    SeparateStudentWeights: "Separate Student Weights (no re-patching)",
    ConsistencySampler: "Consistency Student Sampler",
    LoadGuidedStudent: "Load Guidance-Embedded Student",
    AttachGuidanceEmbedding: "Attach Guidance Embedding (w)",
    RouteStudents: "Route Prompts to Students",
    LoadImageRewardOracle: "Load Oracle (ImageReward, PickScore, HPSv2, CLIP)",
    EnsembleOracles: "Ensemble Oracles (calibrated z-scores)",
    OracleGate: "Oracle Gate (student/teacher)",
    Improve: "Teacher Improve (refine / regenerate)",
    StudentRetry: "Student Retry (before the teacher)",
    RollbackNoise: "Rollback Noise (student -> teacher)",
    AdaptiveSampler: "Adaptive Student-Teacher Sampler",
    ScoreImages: "Score Images (oracle)",
    CalibrateThreshold: "Calibrate Oracle Threshold",
    MergeCalibrations: "Merge Calibrations (shards)",
    MeasureStudentVsTeacher: "Measure Student vs Teacher",
}

NODE_CLASS_MAPPINGS = {PREFIX + cls.__name__: rejecting_nonfinite_floats(cls) for cls in _NODES}
NODE_DISPLAY_NAME_MAPPINGS = {PREFIX + cls.__name__: name for cls, name in _NODES.items()}

"""Names and input specs shared by the pack's nodes."""
CATEGORY = "sampling/student_teacher"
PREFIX = "StudentTeacher"
STUDENT_META = "student_teacher"   # key the student sampler adds to its LATENT

GATE_TYPE = "ST_GATE"
ORACLE_TYPE = "IR_ORACLE"

SEED = ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                "tooltip": "Noise seed. A sample's noise depends only on this seed and its batch index."})

"""Student-Teacher for ComfyUI: a consistency student samples, ImageReward scores, and the teacher
improves only the samples the oracle rejects (Starodubcev et al., arXiv 2312.10835)."""
try:
    import folder_paths
except ImportError:  # imported outside ComfyUI (e.g. pytest collecting this folder): nothing to register
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
else:
    import os

    from .oracle.checkpoint import WEIGHT_EXTENSIONS

    PACK_DIR = os.path.dirname(os.path.abspath(__file__))
    MODELS = folder_paths.models_dir

    def _register_folder(name, path, extensions):
        """Add a model folder without clobbering what extra_model_paths.yaml already set."""
        paths, exts = folder_paths.folder_names_and_paths.get(name, ([], set()))
        paths = list(paths) + ([path] if path not in paths else [])
        folder_paths.folder_names_and_paths[name] = (paths, set(exts) | set(extensions))

    _register_folder("oracles", os.path.join(MODELS, "oracles"), WEIGHT_EXTENSIONS)
    _register_folder("image_reward", os.path.join(MODELS, "image_reward"), WEIGHT_EXTENSIONS)  # read too
    _register_folder("image_reward_calibration", os.path.join(MODELS, "image_reward", "calibration"), {".json"})
    _register_folder("image_reward_calibration", os.path.join(PACK_DIR, "calibration"), {".json"})
    _register_folder("student_teacher_prompts", os.path.join(PACK_DIR, "prompts"), {".txt"})
    _register_folder("student_teacher_prompts", os.path.join(MODELS, "image_reward", "prompts"), {".txt"})
    _register_folder("student_teacher_routing", os.path.join(MODELS, "student_teacher_routing"), {".json"})

    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]

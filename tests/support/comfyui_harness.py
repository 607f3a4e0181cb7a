"""Tier-2 test harness: this pack loaded into a real ComfyUI, in this process, on the CPU.

Tier 2 runs when the environment variable COMFYUI_PATH names a ComfyUI checkout (0.3.64) whose
Python requirements are installed in the interpreter running pytest; without it every tier-2
test skips with SKIP_REASON. Importing this module never imports ComfyUI (tier 1 stays
host-free); `start()` / the `comfy` fixture does.

Fixtures (tests/conftest.py imports them):
  comfy        (session) -> ComfyHost: ComfyUI booted by tools/comfyui_boot.py (CPU, temp
                  output/input/temp/user dirs, input/example.png 64x64, core nodes, the pack loaded
                  and checked registered: host.pack_nodes), a models root registered first for
                  checkpoints, loras, controlnet, vae and image_reward (merged with existing entries).
  tiny_models  (session) -> {file name: path} of every tiny model (tests/support/tiny_models.py).
  fresh_comfy  (function) -> the host with its output caches reset.
Functions / methods:
  run_prompt(comfy, api_prompt, *, check=True, fresh=False, outputs=None, extra_data=None)
      -> PromptRun(success, error, ui, executed, cached, values, messages, node_errors, seconds)
         with .output(node_id, slot=0, index=0), .outputs(node_id), .ran(node_id), .images(node_id)
      comfy.run(prompt, **kw) is the same; comfy.reset_caches(); comfy.free_memory()
  comfy.tiny(name) -> name          builds tiny model `name` on first use (build_tiny_model)
  comfy.model_path(folder, name), comfy.node_info(class_type)
  api_txt2img(ckpt_name, ...) -> dict   the core txt2img API prompt (nodes "1".."7")
  capture_logs(level) -> list           log lines emitted inside the `with` block

Environment:
  COMFYUI_PATH      ComfyUI checkout; tier 2 is skipped without it.
  TINY_MODELS_DIR   optional persistent models root (checkpoints/, loras/, ...) for the tiny
                    models, reused across sessions (rebuilt when BUILDER_VERSION changes);
                    default: a per-session temp dir.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO_ROOT not in sys.path:  # for `tools` and the host-free packages
    sys.path.append(REPO_ROOT)
from tools.comfyui_boot import PACK_PREFIX as PACK_NODE_PREFIX  # noqa: E402,F401  (for the tests)
from tools.comfyui_boot import boot, free_memory, object_info  # noqa: E402
from tiny_models import TINY_MODELS, build_tiny_models  # noqa: E402

ENV_VAR = "COMFYUI_PATH"
MODELS_ENV_VAR = "TINY_MODELS_DIR"
SKIP_REASON = "tier 2 needs COMFYUI_PATH=<ComfyUI checkout> (see README, 'Tests')"

# model folders the harness registers under its models root (merged with existing entries)
MODEL_FOLDERS = ("checkpoints", "diffusion_models", "loras", "controlnet", "vae", "text_encoders", "image_reward",
                 "oracles")


def comfyui_path() -> Optional[str]:
    """The ComfyUI checkout named by COMFYUI_PATH, or None (tier 2 off)."""
    p = os.environ.get(ENV_VAR, "").strip()
    return os.path.abspath(os.path.expanduser(p)) if p else None


def tier2_enabled() -> bool:
    return comfyui_path() is not None


# --------------------------------------------------------------------------------------------
# the host
# --------------------------------------------------------------------------------------------

@dataclass
class PromptRun:
    """What one prompt did. `ui`: per-node UI outputs ({"images": [...]} etc.), as /history
    shows them; `executed`: node ids that really ran in this prompt, in order (cached nodes did
    not run: they are in `cached`); `values`: per node, ComfyUI's cached output data (one list
    per output slot, each holding one value per list-mapped call: `output(id, slot)` unwraps the
    usual single call); `messages`: every (event, data) the executor sent."""
    prompt_id: str
    prompt: Dict[str, Any]
    success: bool
    error: Optional[str]
    ui: Dict[str, Any] = field(default_factory=dict)
    executed: List[str] = field(default_factory=list)
    cached: List[str] = field(default_factory=list)
    values: Dict[str, Any] = field(default_factory=dict)
    messages: List[tuple] = field(default_factory=list)
    node_errors: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def ran(self, node_id) -> bool:
        return str(node_id) in self.executed

    def outputs(self, node_id) -> list:
        node_id = str(node_id)
        if self.values.get(node_id) is None:
            raise KeyError(f"node {node_id} has no output values (not in the prompt, failed, or an output node "
                           f"without outputs); have: {sorted(k for k, v in self.values.items() if v is not None)}")
        return self.values[node_id]

    def output(self, node_id, slot: int = 0, index: int = 0):
        """The value of output `slot` of `node_id` (call `index` for list-mapped nodes)."""
        return self.outputs(node_id)[slot][index]

    def images(self, node_id=None) -> List[str]:
        """Paths of the image files saved by `node_id` (all nodes when None)."""
        import folder_paths
        out = []
        for nid, ui in self.ui.items():
            if node_id is not None and nid != str(node_id):
                continue
            for im in ui.get("images", []) or []:
                base = folder_paths.get_directory_by_type(im.get("type", "output"))
                out.append(os.path.join(base, im.get("subfolder", ""), im["filename"]))
        return out


class ComfyHost:
    """A ComfyUI booted in this process with the pack loaded (use `start()`, not this)."""

    def __init__(self, path: str, work_dir: str, models_root: str, pack_root: str):
        self.path = path
        self.work_dir = work_dir
        self.models_root = models_root
        self.pack_root = pack_root
        self.dirs: Dict[str, str] = {}
        self.booted = None      # tools.comfyui_boot.Booted
        self.executor = None
        self.boot_seconds = 0.0
        self._messages: Optional[list] = None
        self._built: Dict[str, str] = {}
        self.build_log: Dict[str, dict] = {}
        self.owns_models_root = False  # a per-session temp models root, removed at the end

    def __getattr__(self, name):  # loop, server, pack_module, pack_nodes, ... of the boot
        if name.startswith("_") or self.__dict__.get("booted") is None:
            raise AttributeError(name)
        return getattr(self.booted, name)

    @property
    def folder_paths(self):
        import folder_paths
        return folder_paths

    def record_message(self, event, data, sid=None):
        if self._messages is not None:
            self._messages.append((event, data))

    def run(self, prompt: dict, **kw) -> PromptRun:
        return run_prompt(self, prompt, **kw)

    def reset_caches(self):
        """Forget every cached node output (the next prompt runs every node again)."""
        self.executor.reset()

    def free_memory(self):
        """Drop cached outputs and loaded models, then collect garbage."""
        free_memory(self.executor)

    def tiny(self, name: str) -> str:
        """File name of tiny model `name`, built on first use (returns `name`)."""
        build_tiny_model(self, name)
        return name

    def model_path(self, folder: str, name: str) -> str:
        return self.folder_paths.get_full_path_or_raise(folder, name)

    def node_info(self, class_type: str) -> dict:
        return object_info(self.booted, [class_type])[class_type]


_HOST: Optional[ComfyHost] = None
_START_ERROR: Optional[str] = None


class _LogCapture(logging.Handler):
    def __init__(self, level=logging.WARNING):
        super().__init__(level)
        self.lines: List[str] = []

    def emit(self, record):
        try:
            self.lines.append(f"{record.levelname}: {record.getMessage()}")
        except Exception:  # pragma: no cover
            pass


@contextlib.contextmanager
def capture_logs(level=logging.WARNING):
    """Collect log lines (root logger) of `level` and above: `with capture_logs() as lines:`."""
    h = _LogCapture(level)
    root = logging.getLogger()
    old = root.level
    root.addHandler(h)
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)
    try:
        yield h.lines
    finally:
        root.removeHandler(h)
        root.setLevel(old)


def register_models_root(models_root: str):
    """Register `models_root/<folder>` for MODEL_FOLDERS, first in each list, merged with what
    ComfyUI, an extra_model_paths.yaml or the pack already registered (their extensions are
    kept; a folder nobody registered gets ComfyUI's model extensions)."""
    import folder_paths
    for folder in MODEL_FOLDERS:
        d = os.path.join(models_root, folder)
        os.makedirs(d, exist_ok=True)
        entry = folder_paths.folder_names_and_paths.get(folder)
        if entry is None:
            folder_paths.folder_names_and_paths[folder] = ([d], set(folder_paths.supported_pt_extensions))
        else:
            paths, exts = entry
            if d in paths:
                paths.remove(d)
            paths.insert(0, d)
            if not exts:  # add_model_folder_path makes an empty set for a new folder: allow models
                folder_paths.folder_names_and_paths[folder] = (paths, set(folder_paths.supported_pt_extensions))
        folder_paths.filename_list_cache.pop(folder, None)


def start(path: Optional[str] = None, work_dir: Optional[str] = None, models_root: Optional[str] = None,
          pack_root: Optional[str] = None) -> ComfyHost:
    """Boot ComfyUI in this process (once per process) and load the pack. Later calls return the
    same host. Raises RuntimeError if COMFYUI_PATH is unset or the pack fails to import."""
    global _START_ERROR
    if _HOST is not None:
        return _HOST
    if _START_ERROR is not None:  # ComfyUI is half-imported: do not try again in this process
        raise RuntimeError(_START_ERROR)
    try:
        return _start(path, work_dir, models_root, pack_root)
    except Exception as e:
        _START_ERROR = f"{type(e).__name__}: {e}" if not isinstance(e, RuntimeError) else str(e)
        raise RuntimeError(_START_ERROR) from e


def _start(path, work_dir, models_root, pack_root) -> ComfyHost:
    global _HOST
    path = path or comfyui_path()
    if not path:
        raise RuntimeError(SKIP_REASON)
    t0 = time.perf_counter()
    if work_dir is None:  # the harness's own temp dir: removed when the process exits
        import atexit
        import shutil
        work_dir = tempfile.mkdtemp(prefix="st_comfy_")
        atexit.register(shutil.rmtree, work_dir, True)
    own_models = not (models_root or os.environ.get(MODELS_ENV_VAR))
    models_root = models_root or os.environ.get(MODELS_ENV_VAR) or os.path.join(work_dir, "models")
    host = ComfyHost(path, work_dir, os.path.abspath(models_root), os.path.abspath(pack_root or REPO_ROOT))
    host.owns_models_root = own_models
    for k, v in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("DO_NOT_TRACK", "1"),
                 ("TQDM_DISABLE", "1")):  # no network, no telemetry, quiet progress bars
        os.environ.setdefault(k, v)
    host.dirs = {name: os.path.join(work_dir, name) for name in ("output", "input", "temp", "user")}
    booted = boot(path, pack=host.pack_root, dirs=host.dirs)
    _write_example_png(os.path.join(host.dirs["input"], "example.png"))
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    host.booted = booted
    host.server.send_sync = host.record_message  # record instead of queueing for websockets
    register_models_root(host.models_root)
    # calibrations the tests make land in the session's folder, never in the ComfyUI checkout
    calibrations = os.path.join(work_dir, "calibration")
    os.makedirs(calibrations, exist_ok=True)
    paths, exts = host.folder_paths.folder_names_and_paths["image_reward_calibration"]
    host.folder_paths.folder_names_and_paths["image_reward_calibration"] = ([calibrations] + list(paths), exts)
    host.executor = host.execution.PromptExecutor(host.server, cache_type=host.execution.CacheType.CLASSIC)
    host.boot_seconds = time.perf_counter() - t0
    _HOST = host
    return host


def _write_example_png(path: str):
    if os.path.exists(path):
        return
    from PIL import Image
    Image.linear_gradient("L").resize((64, 64)).convert("RGB").save(path)


# --------------------------------------------------------------------------------------------
# running prompts
# --------------------------------------------------------------------------------------------

def _format_validation(error, node_errors, prompt) -> str:
    lines = []
    if error:
        if isinstance(error, dict):
            lines.append(f"prompt rejected: {error.get('type')}: {error.get('message')}"
                         f"{(' - ' + str(error.get('details'))) if error.get('details') else ''}")
        else:
            lines.append(f"prompt rejected: {error}")
    for nid, ne in (node_errors or {}).items():
        for e in ne.get("errors", []):
            lines.append(f"  #{nid} {ne.get('class_type', prompt.get(nid, {}).get('class_type'))}: "
                         f"{e.get('message')}{(': ' + str(e.get('details'))) if e.get('details') else ''}")
    return "\n".join(lines)


def run_prompt(comfy: ComfyHost, api_prompt: dict, *, check: bool = True, fresh: bool = False,
               outputs: Optional[Iterable] = None, extra_data: Optional[dict] = None) -> PromptRun:
    """Validate and execute an API-format prompt ({"id": {"class_type", "inputs"}}).

    check: raise AssertionError with the validation/execution error text on failure (else the
      returned PromptRun has success=False and `error`).
    fresh: reset the output caches first, so every node runs (a cached node is not re-executed
      and is absent from `executed`).
    outputs: output node ids to execute (default: every valid output node, like /prompt).
    """
    execution = comfy.execution
    prompt = {str(k): copy.deepcopy(v) for k, v in api_prompt.items()}
    prompt_id = uuid.uuid4().hex
    if fresh:
        comfy.reset_caches()
    t0 = time.perf_counter()
    valid = comfy.loop.run_until_complete(execution.validate_prompt(prompt_id, prompt, None))
    ok, error, good_outputs, node_errors = valid[0], valid[1], valid[2], valid[3]
    run = PromptRun(prompt_id=prompt_id, prompt=prompt, success=False, error=None, node_errors=node_errors or {})
    if not ok:
        run.error = _format_validation(error, node_errors, prompt)
        if check:
            raise AssertionError(run.error)
        return run
    if outputs is not None:
        good_outputs = [str(o) for o in outputs]
    extra = {"client_id": "st-harness"}
    extra.update(extra_data or {})
    msgs: list = []
    comfy._messages = msgs
    try:
        comfy.loop.run_until_complete(comfy.executor.execute_async(prompt, prompt_id, extra, good_outputs))
    finally:
        comfy._messages = None
        comfy.server.client_id = None
    run.seconds = time.perf_counter() - t0
    run.messages = msgs
    run.success = bool(comfy.executor.success) and not any(e in ("execution_error", "execution_interrupted")
                                                           for e, _ in msgs)
    for e, d in msgs:  # a lazy node re-entered after its inputs ran is listed once
        if e == "executing" and d.get("node") is not None and d["node"] not in run.executed:
            run.executed.append(d["node"])
    for e, d in msgs:
        if e == "execution_cached":
            run.cached = [str(n) for n in d.get("nodes", [])]
    run.ui = dict(comfy.executor.history_result.get("outputs", {}))
    for nid in prompt:
        try:
            run.values[nid] = comfy.executor.caches.outputs.get(nid)
        except Exception:  # pragma: no cover
            run.values[nid] = None
    if not run.success:
        err = next((d for e, d in msgs if e in ("execution_error", "execution_interrupted")), {})
        tb = "".join(err.get("traceback", []) or [])
        run.error = (f"execution failed at #{err.get('node_id')} {err.get('node_type')}: "
                     f"{err.get('exception_type', 'interrupted')}: {str(err.get('exception_message', '')).strip()}"
                     + (f"\n{tb}" if tb else ""))
        if check:
            raise AssertionError(run.error)
    return run


def api_txt2img(ckpt_name: str, *, seed: int = 0, steps: int = 2, cfg: float = 7.0, width: int = 64,
                height: int = 64, batch_size: int = 1, sampler_name: str = "euler", scheduler: str = "normal",
                positive: str = "a red cube on a table", negative: str = "blurry",
                filename_prefix: str = "st_test") -> dict:
    """The core txt2img API prompt: CheckpointLoaderSimple -> CLIPTextEncode x2 ->
    EmptyLatentImage -> KSampler -> VAEDecode -> SaveImage (node ids "1".."7")."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch_size}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler_name, "scheduler": scheduler,
            "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": filename_prefix}},
    }


# --------------------------------------------------------------------------------------------
# tiny models (tests/support/tiny_models.py builds them)
# --------------------------------------------------------------------------------------------

def build_tiny_model(comfy: ComfyHost, name: str) -> str:
    """Path of tiny model `name` under the host's models root, built on first use."""
    if name not in comfy._built:
        info = build_tiny_models(comfy.models_root, [name])[name]
        comfy.build_log[name] = info
        comfy._built[name] = info["path"]
        comfy.folder_paths.filename_list_cache.pop(TINY_MODELS[name][0], None)
    return comfy._built[name]


# --------------------------------------------------------------------------------------------
# pytest fixtures (imported by tests/conftest.py)
# --------------------------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - the module is also used by tools without pytest
    pytest = None

if pytest is not None:
    @pytest.fixture(scope="session")
    def comfy(tmp_path_factory) -> ComfyHost:
        """ComfyUI booted in-process with the pack loaded; skips without COMFYUI_PATH."""
        if not tier2_enabled():
            pytest.skip(SKIP_REASON)
        host = _HOST
        if host is None:
            try:
                host = start(work_dir=str(tmp_path_factory.mktemp("comfyui")))
            except RuntimeError as e:
                pytest.fail(f"tier 2: could not start ComfyUI with the pack: {e}", pytrace=False)
        yield host
        with contextlib.suppress(Exception):
            host.free_memory()
        if getattr(host, "owns_models_root", False):  # GBs of tiny models in the session's temp dir
            import shutil
            shutil.rmtree(host.models_root, ignore_errors=True)

    @pytest.fixture(scope="session")
    def tiny_models(comfy) -> Dict[str, str]:
        """Every tiny model built (once): {file name: path}."""
        return {name: build_tiny_model(comfy, name) for name in TINY_MODELS}

    @pytest.fixture
    def fresh_comfy(comfy) -> ComfyHost:
        """The host with empty output caches (every node of the next prompt runs)."""
        comfy.reset_caches()
        return comfy

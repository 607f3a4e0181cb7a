"""Tier-2 test harness: this pack loaded into a real ComfyUI, in this process, on the CPU.

Tier 2 runs when the environment variable COMFYUI_PATH names a ComfyUI checkout (0.3.64) whose
Python requirements are installed in the interpreter running pytest; without it every tier-2
test skips with SKIP_REASON. Importing this module never imports ComfyUI (tier 1 stays
host-free); `start()` / the `comfy` fixture does.

Fixtures (tests/conftest.py imports them):
  comfy        (session) -> ComfyHost: ComfyUI booted (args.cpu, temp output/input/temp/user dirs,
                  input/example.png 64x64), core + comfy_extras nodes, the pack loaded with
                  nodes.load_custom_node(<repo root>) and asserted imported (host.pack_nodes is its
                  NODE_CLASS_MAPPINGS), a models root registered first for checkpoints, loras,
                  controlnet, vae and image_reward (merged with existing entries).
  tiny_models  (session) -> {file name: path} of every tiny model (built once, see TINY_MODELS).
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
  build_tiny_models(models_root, names=None) -> {name: {"path", "bytes", "seconds", "built"}}
      (ComfyUI must be started); tests/make_tiny_models.py DIR does this from the command line
  pack_object_info(comfy) -> dict       the pack's /object_info entries, normalised

Environment:
  COMFYUI_PATH      ComfyUI checkout; tier 2 is skipped without it.
  TINY_MODELS_DIR   optional persistent models root (checkpoints/, loras/, ...) for the tiny
                    models, reused across sessions (rebuilt when BUILDER_VERSION changes);
                    default: a per-session temp dir.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_VAR = "COMFYUI_PATH"
MODELS_ENV_VAR = "TINY_MODELS_DIR"
SKIP_REASON = "tier 2 needs COMFYUI_PATH=<ComfyUI checkout> (see README, 'Tests')"
PACK_NODE_PREFIX = "StudentTeacher"

# model folders the harness registers under its models root (merged with existing entries)
MODEL_FOLDERS = ("checkpoints", "loras", "controlnet", "vae", "image_reward")

TINY_SD15 = "tiny_sd15.safetensors"
TINY_SDXL = "tiny_sdxl.safetensors"
TINY_SDXL_REFINER = "tiny_sdxl_refiner.safetensors"
TINY_CONTROLNET_SD15 = "tiny_controlnet_sd15.safetensors"
TINY_LCM_LORA_SD15 = "tiny_lcm_lora_sd15.safetensors"
TINY_LCM_LORA_SDXL = "tiny_lcm_lora_sdxl.safetensors"
TINY_IMAGE_REWARD = "tiny_image_reward.safetensors"

# bump when a builder changes: files in a persistent TINY_MODELS_DIR are then rebuilt
BUILDER_VERSION = 2
SEED = 20240607

# ComfyUI's top-level modules/packages (a pack or test module of the same name would shadow them)
_COMFY_TOPLEVEL = (
    "nodes", "utils", "server", "execution", "folder_paths", "main", "app", "comfy", "comfy_extras",
    "comfy_execution", "comfy_api", "comfy_api_nodes", "comfy_config", "latent_preview", "node_helpers",
    "protocol", "middleware", "api_server", "alembic_db", "new_updater", "cuda_malloc",
    "hook_breaker_ac10a0", "comfyui_version",
)


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
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.server = None
        self.executor = None
        self.pack_module = None
        self.pack_nodes: Dict[str, type] = {}
        self.pack_display_names: Dict[str, str] = {}
        self.pack_load_log: List[str] = []
        self.core_node_names: set = set()
        self.boot_seconds = 0.0
        self._messages: Optional[list] = None
        self._built: Dict[str, str] = {}
        self.build_log: Dict[str, dict] = {}
        self.owns_models_root = False  # a per-session temp models root, removed at the end

    # modules, imported lazily so that this file imports without ComfyUI
    @property
    def nodes(self):
        import nodes
        return nodes

    @property
    def execution(self):
        import execution
        return execution

    @property
    def folder_paths(self):
        import folder_paths
        return folder_paths

    def run(self, prompt: dict, **kw) -> PromptRun:
        return run_prompt(self, prompt, **kw)

    def reset_caches(self):
        """Forget every cached node output (the next prompt runs every node again)."""
        self.executor.reset()

    def free_memory(self):
        """Drop cached outputs and loaded models, then collect garbage."""
        import comfy.model_management
        self.executor.reset()
        comfy.model_management.unload_all_models()
        comfy.model_management.cleanup_models_gc()
        gc.collect()
        comfy.model_management.soft_empty_cache()

    def tiny(self, name: str) -> str:
        """File name of tiny model `name`, built on first use (returns `name`)."""
        build_tiny_model(self, name)
        return name

    def model_path(self, folder: str, name: str) -> str:
        return self.folder_paths.get_full_path_or_raise(folder, name)

    def node_info(self, class_type: str) -> dict:
        return _object_info(self, [class_type])[class_type]


_HOST: Optional[ComfyHost] = None
_START_ERROR: Optional[str] = None


def _clear_shadowing_modules(comfy_root: str):
    """Drop non-ComfyUI modules that would shadow ComfyUI's top-level names (e.g. a `nodes`
    package of this repo imported by an earlier test) and put ComfyUI first on sys.path."""
    root = os.path.realpath(comfy_root)
    for name in list(sys.modules):
        top = name.split(".")[0]
        if top not in _COMFY_TOPLEVEL:
            continue
        mod = sys.modules[name]
        locs = []
        f = getattr(mod, "__file__", None)
        if f:
            locs.append(f)
        locs += list(getattr(mod, "__path__", []) or [])
        if locs and not any(os.path.realpath(p).startswith(root + os.sep) for p in locs):
            del sys.modules[name]
    while comfy_root in sys.path:
        sys.path.remove(comfy_root)
    sys.path.insert(0, comfy_root)


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


def register_models_root(models_root: str, only_existing: bool = False):
    """Register `models_root/<folder>` for MODEL_FOLDERS, first in each list, merged with what
    ComfyUI, an extra_model_paths.yaml or the pack already registered (their extensions are
    kept; a folder nobody registered gets ComfyUI's model extensions unless only_existing)."""
    import folder_paths
    for folder in MODEL_FOLDERS:
        d = os.path.join(models_root, folder)
        os.makedirs(d, exist_ok=True)
        entry = folder_paths.folder_names_and_paths.get(folder)
        if entry is None:
            if only_existing:
                continue
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
    global _HOST, _START_ERROR
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
    if not os.path.isfile(os.path.join(path, "nodes.py")) or not os.path.isdir(os.path.join(path, "comfy")):
        raise RuntimeError(f"{ENV_VAR}={path} is not a ComfyUI checkout (no nodes.py / comfy/)")
    t0 = time.perf_counter()
    if work_dir is None:  # the harness's own temp dir: removed when the process exits
        import atexit
        import shutil
        work_dir = tempfile.mkdtemp(prefix="st_comfy_")
        atexit.register(shutil.rmtree, work_dir, True)
    own_models = not (models_root or os.environ.get(MODELS_ENV_VAR))
    models_root = models_root or os.environ.get(MODELS_ENV_VAR) or os.path.join(work_dir, "models")
    pack_root = os.path.abspath(pack_root or REPO_ROOT)
    host = ComfyHost(path, work_dir, os.path.abspath(models_root), pack_root)
    host.owns_models_root = own_models

    # no network, no telemetry, quiet progress bars
    for k, v in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"),
                 ("DO_NOT_TRACK", "1"), ("TQDM_DISABLE", "1")):
        os.environ.setdefault(k, v)

    _clear_shadowing_modules(path)

    # 1. command-line args BEFORE comfy.model_management is imported
    import comfy.options  # noqa: F401  (args parsing stays off: argv is pytest's)
    from comfy.cli_args import args
    for name in ("output", "input", "temp", "user"):
        host.dirs[name] = os.path.join(work_dir, name)
        os.makedirs(host.dirs[name], exist_ok=True)
    args.cpu = True
    args.disable_api_nodes = True
    args.disable_all_custom_nodes = True
    args.output_directory = host.dirs["output"]
    args.input_directory = host.dirs["input"]
    args.temp_directory = host.dirs["temp"]
    args.user_directory = host.dirs["user"]
    args.disable_auto_launch = True
    args.dont_print_server = True

    # 2. folder_paths and ComfyUI's `utils` package BEFORE nodes (nodes.py shadows `utils`)
    import folder_paths
    import utils.extra_config  # noqa: F401
    import utils.install_util  # noqa: F401
    folder_paths.set_output_directory(host.dirs["output"])
    folder_paths.set_input_directory(host.dirs["input"])
    folder_paths.set_temp_directory(host.dirs["temp"])
    folder_paths.set_user_directory(host.dirs["user"])
    _write_example_png(os.path.join(host.dirs["input"], "example.png"))

    import comfy.model_management  # noqa: F401  (after args.cpu)
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False

    import nodes
    import execution
    import server

    # 3. an event loop and a PromptServer that never listens
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    host.loop = loop
    ps = server.PromptServer(loop)
    host.server = ps

    def send_sync(event, data, sid=None):
        if host._messages is not None:
            host._messages.append((event, data))

    ps.send_sync = send_sync  # record instead of queueing for websockets

    # 4. core nodes (comfy_extras) without API nodes or ComfyUI's own custom_nodes/
    register_models_root(host.models_root, only_existing=True)  # the pack defines its own folders
    loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    host.core_node_names = set(nodes.NODE_CLASS_MAPPINGS)

    # 5. the pack, the way ComfyUI loads a custom_nodes/ folder
    init_py = os.path.join(pack_root, "__init__.py")
    if not os.path.isfile(init_py):
        raise RuntimeError(f"the pack has no {init_py}: ComfyUI cannot load it as a custom node folder")
    sys_module_name = pack_root.replace(".", "_x_")
    with capture_logs(logging.WARNING) as lines:
        ok = loop.run_until_complete(nodes.load_custom_node(pack_root, ignore=set(host.core_node_names)))
    host.pack_load_log = list(lines)
    module = sys.modules.get(sys_module_name)
    if not ok or module is None:
        raise RuntimeError("the pack failed to load into ComfyUI (load_custom_node returned "
                           f"{ok}):\n" + "\n".join(lines))
    host.pack_module = module
    mapping = getattr(module, "NODE_CLASS_MAPPINGS", None) or {}
    clashes = sorted(set(mapping) & host.core_node_names)
    if clashes:
        raise RuntimeError(f"pack node names clash with core nodes (ComfyUI skips them): {clashes}")
    missing = [k for k, v in mapping.items() if nodes.NODE_CLASS_MAPPINGS.get(k) is not v]
    if missing:
        raise RuntimeError(f"pack nodes not registered in ComfyUI: {missing}")
    host.pack_nodes = dict(mapping)
    host.pack_display_names = dict(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})
    register_models_root(host.models_root)  # again: the pack may have (re)defined folders

    host.executor = execution.PromptExecutor(ps, cache_type=execution.CacheType.CLASSIC)
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
# object_info of the pack
# --------------------------------------------------------------------------------------------

class _FakeRequest:
    def __init__(self, match_info=None):
        self.match_info = match_info or {}
        self.rel_url = None


def _object_info(comfy: ComfyHost, classes: Iterable[str]) -> dict:
    """What GET /object_info/{class} serves, through ComfyUI's own route handler."""
    handler = None
    for route in comfy.server.routes:
        if getattr(route, "method", None) == "GET" and getattr(route, "path", None) == "/object_info/{node_class}":
            handler = route.handler
    if handler is None:  # pragma: no cover
        raise RuntimeError("ComfyUI's /object_info/{node_class} route not found")
    out = {}
    for c in classes:
        resp = comfy.loop.run_until_complete(handler(_FakeRequest({"node_class": c})))
        out.update(json.loads(resp.body))
    return out


PACK_PYTHON_MODULE = "custom_nodes.<pack>"


def pack_object_info(comfy: ComfyHost) -> dict:
    """The /object_info entries of every node in the pack's NODE_CLASS_MAPPINGS, normalised so
    they do not depend on the install: `python_module` (custom_nodes.<folder name>) is replaced
    by PACK_PYTHON_MODULE, and file combos list only files shipped inside the pack (every model
    folder outside the pack is swapped for an empty one while the schemas are read)."""
    import folder_paths
    saved = {k: (list(v[0]), v[1]) for k, v in folder_paths.folder_names_and_paths.items()}
    empty = tempfile.mkdtemp(prefix="st_empty_models_")
    pack = os.path.realpath(comfy.pack_root) + os.sep
    try:
        for k, (paths, exts) in list(folder_paths.folder_names_and_paths.items()):
            if k == "custom_nodes":
                continue
            inside = [p for p in paths if os.path.realpath(p).startswith(pack)]
            folder_paths.folder_names_and_paths[k] = (inside + [empty], exts)
        folder_paths.filename_list_cache.clear()
        info = _object_info(comfy, sorted(comfy.pack_nodes))
    finally:
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update(saved)
        folder_paths.filename_list_cache.clear()
        os.rmdir(empty)
    for v in info.values():
        if "python_module" in v:
            v["python_module"] = PACK_PYTHON_MODULE
    return json.loads(json.dumps(info, sort_keys=True))


# --------------------------------------------------------------------------------------------
# tiny models (random weights, ComfyUI's own classes; fp16 files)
# --------------------------------------------------------------------------------------------

def _init_module_(module, seed: int):
    """Deterministic sane weights for a module built from ComfyUI's ops (whose
    reset_parameters does nothing, leaving torch.empty memory): every parameter first gets
    N(0, 0.02), then each torch.nn layer runs torch's own reset_parameters (Linear/Conv: kaiming
    uniform, norms: 1/0, Embedding: N(0,1))."""
    import torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in module.parameters():
                p.normal_(0.0, 0.02)
            for m in module.modules():
                for cls in type(m).__mro__:
                    if cls.__module__.startswith("torch.nn.modules") and "reset_parameters" in cls.__dict__:
                        cls.reset_parameters(m)
                        break
    return module


def _save(sd: dict, path: str, metadata: Optional[dict] = None, dtype=None):
    import torch
    import safetensors.torch
    out = {}
    for k, t in sd.items():
        t = t.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[k] = t.contiguous()
    tmp = path + ".part"
    safetensors.torch.save_file(out, tmp, metadata=metadata or {})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _unet_config(base: dict, **kw) -> dict:
    cfg = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
           "legacy": False, "in_channels": 4, "use_temporal_attention": False, "use_temporal_resblock": False}
    cfg.update(base)
    cfg.update(kw)
    return cfg


# SD1.5: detected by model_channels 320, context_dim 768, conv proj; depth is free
SD15_UNET = _unet_config({"adm_in_channels": None, "model_channels": 320, "num_res_blocks": [1],
                          "transformer_depth": [1], "transformer_depth_output": [1, 1], "channel_mult": [1],
                          "transformer_depth_middle": -2, "use_linear_in_transformer": False,
                          "context_dim": 768, "num_heads": 8})
# SDXL base: detection needs transformer_depth [0,0,2,2,10,10] (3 levels x 2 res blocks), 320
# channels, context 2048, adm 2816; channel_mult, output and middle depths are free
SDXL_UNET = _unet_config({"num_classes": "sequential", "adm_in_channels": 2816, "model_channels": 320,
                          "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
                          "channel_mult": [1, 1, 1], "transformer_depth_middle": -2,
                          "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
                          "transformer_depth_output": [0] * 9})
# SDXL refiner: transformer_depth [0,0,4,4,4,4,0,0], 384 channels, context 1280, adm 2560
SDXL_REFINER_UNET = _unet_config({"num_classes": "sequential", "adm_in_channels": 2560, "model_channels": 384,
                                  "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [0, 0, 4, 4, 4, 4, 0, 0],
                                  "channel_mult": [1, 1, 1, 1], "transformer_depth_middle": -2,
                                  "use_linear_in_transformer": True, "context_dim": 1280,
                                  "num_head_channels": 64, "transformer_depth_output": [0] * 12})


def _diffusion_model_sd(model_config_cls, unet_cfg: dict, seed: int):
    """(model_config, base model) with initialised weights."""
    model_config = model_config_cls(dict(unet_cfg))
    model = model_config.get_model({})
    _init_module_(model.diffusion_model, seed)
    return model_config, model


def _taesd_sd(seed: int, latent_format) -> dict:
    """TAESD weights as a checkpoint's VAE; vae_scale/vae_shift as ComfyUI's VAELoader sets them
    for taesd/taesdxl (the latent format's scale and shift)."""
    import torch
    import comfy.taesd.taesd
    taesd = _init_module_(comfy.taesd.taesd.TAESD(latent_channels=4), seed)
    # a random decoder's output is ~0 (all-black images every sample): widen its last layer
    # so images are mid-grey and differ from latent to latent, as an oracle needs
    last = [m for m in taesd.taesd_decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(200.0)
        last.bias.fill_(0.5)
    sd = dict(taesd.state_dict())
    sd["vae_scale"] = torch.tensor(float(latent_format.scale_factor))
    sd["vae_shift"] = torch.tensor(float(getattr(latent_format, "shift_factor", 0.0) or 0.0))
    return sd


def _build_checkpoint(path: str, model_config_cls, unet_cfg: dict, clip_cls, seed: int):
    import torch
    model_config, model = _diffusion_model_sd(model_config_cls, unet_cfg, seed)
    clip = _init_module_(clip_cls(device="cpu", dtype=torch.float16), seed + 1)
    clip_sd = clip.state_dict()
    # ComfyUI's own saving conversion (what CheckpointSave writes)
    sd = model.state_dict_for_saving(clip_sd, _taesd_sd(seed + 2, model_config.latent_format))
    sd = {k: v for k, v in sd.items() if k.startswith(("model.", "cond_stage_model.", "conditioner.",
                                                       "first_stage_model."))}
    _save(sd, path, {"st_tiny": f"v{BUILDER_VERSION}"}, dtype=torch.float16)
    del model, clip, clip_sd, sd
    gc.collect()


def _build_sd15(path):
    import comfy.supported_models
    import comfy.sd1_clip
    _build_checkpoint(path, comfy.supported_models.SD15, SD15_UNET, comfy.sd1_clip.SD1ClipModel, SEED)


def _build_sdxl(path):
    import comfy.supported_models
    import comfy.sdxl_clip
    _build_checkpoint(path, comfy.supported_models.SDXL, SDXL_UNET, comfy.sdxl_clip.SDXLClipModel, SEED + 10)


def _build_sdxl_refiner(path):
    import comfy.supported_models
    import comfy.sdxl_clip
    _build_checkpoint(path, comfy.supported_models.SDXLRefiner, SDXL_REFINER_UNET,
                      comfy.sdxl_clip.SDXLRefinerClipModel, SEED + 20)


def _build_controlnet_sd15(path):
    """comfy.cldm.cldm.ControlNet with tiny_sd15's UNet config, `control_model.*` keys."""
    import torch
    import comfy.cldm.cldm
    import comfy.ops
    import comfy.supported_models
    cfg = dict(comfy.supported_models.SD15(dict(SD15_UNET)).unet_config)
    cfg.pop("out_channels", None)
    cfg.update(hint_channels=3, operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="cpu")
    cn = _init_module_(comfy.cldm.cldm.ControlNet(**cfg), SEED + 30)
    sd = {"control_model." + k: v for k, v in cn.state_dict().items()}
    _save(sd, path, {"st_tiny": f"v{BUILDER_VERSION}"}, dtype=torch.float16)


# the LoRAs patch these diffusers-named UNet layers (kohya keys, like the real LCM-LoRA files)
LORA_TARGETS = (
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q",
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2",
    "up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k",
    "up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v",
)
LORA_TARGETS_SDXL = (
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_v",
    "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k",
    "down_blocks.2.attentions.0.transformer_blocks.0.attn2.to_v",
    "down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2",
    "down_blocks.2.attentions.1.transformer_blocks.9.attn1.to_out.0",
)
LORA_RANK = 4


def _build_lora(path, model_config_cls, unet_cfg, targets, seed):
    """A rank-4 LoRA on a few linear layers, in the kohya `lora_unet_<diffusers name>` format
    (lora_down/lora_up/alpha) of the real LCM-LoRA files; every key is checked against ComfyUI's
    own LoRA key map for that model, so LoraLoader loads all of them."""
    import torch
    import comfy.lora
    model_config = model_config_cls(dict(unet_cfg))
    with torch.device("meta"):
        model = model_config.get_model({}, device="meta")
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    sd = {}
    g = torch.Generator().manual_seed(seed)
    for target in targets:
        key = "lora_unet_" + target.replace(".", "_")
        if key not in key_map:
            raise RuntimeError(f"LoRA key {key} is not in ComfyUI's key map for {os.path.basename(path)}")
        out_f, in_f = shapes[key_map[key]][:2]
        sd[f"{key}.lora_down.weight"] = torch.randn(LORA_RANK, in_f, generator=g) * 0.05
        sd[f"{key}.lora_up.weight"] = torch.randn(out_f, LORA_RANK, generator=g) * 0.05
        sd[f"{key}.alpha"] = torch.tensor(float(LORA_RANK))
    _save(sd, path, {"st_tiny": f"v{BUILDER_VERSION}"}, dtype=torch.float16)
    del model


def _build_lcm_lora_sd15(path):
    import comfy.supported_models
    _build_lora(path, comfy.supported_models.SD15, SD15_UNET, LORA_TARGETS, SEED + 40)


def _build_lcm_lora_sdxl(path):
    import comfy.supported_models
    _build_lora(path, comfy.supported_models.SDXL, SDXL_UNET, LORA_TARGETS_SDXL, SEED + 45)


def _build_image_reward(path):
    """ImageReward(ImageRewardConfig.tiny()) from the pack's oracle, fixed seed."""
    import torch
    if REPO_ROOT not in sys.path:
        sys.path.append(REPO_ROOT)
    from oracle import ImageReward, ImageRewardConfig
    # the stand-in initialisation of ../shared/tools (weights ~ N(0, 1/fan_in)) over the tiny
    # shapes: a default init gives the same score to every image
    sys.path.insert(0, os.path.join(os.path.dirname(REPO_ROOT), "shared", "tools"))
    from imagereward_test_weights import make_state_dict
    model = ImageReward(ImageRewardConfig.tiny())
    spec = {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
            for k, v in model.state_dict().items()}
    sd = make_state_dict(spec, seed=SEED % 1000)
    _save(sd, path, {"st_tiny": f"v{BUILDER_VERSION}"})


# name -> (model folder, builder)
TINY_MODELS: Dict[str, tuple] = {
    TINY_SD15: ("checkpoints", _build_sd15),
    TINY_SDXL: ("checkpoints", _build_sdxl),
    TINY_SDXL_REFINER: ("checkpoints", _build_sdxl_refiner),
    TINY_CONTROLNET_SD15: ("controlnet", _build_controlnet_sd15),
    TINY_LCM_LORA_SD15: ("loras", _build_lcm_lora_sd15),
    TINY_LCM_LORA_SDXL: ("loras", _build_lcm_lora_sdxl),
    TINY_IMAGE_REWARD: ("image_reward", _build_image_reward),
}


def _manifest_path(models_root):
    return os.path.join(models_root, "tiny_models.json")


def _read_manifest(models_root) -> dict:
    try:
        with open(_manifest_path(models_root)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def build_tiny_models(models_root: str, names: Optional[Iterable[str]] = None,
                      log: Callable[[str], None] = lambda s: None) -> Dict[str, dict]:
    """Build tiny models under models_root/<folder>/ (skipping files the manifest says are
    current). Needs ComfyUI importable (a started host, or ComfyUI on sys.path with args.cpu
    set). Returns {name: {"path", "bytes", "seconds", "built"}}."""
    manifest = _read_manifest(models_root)
    result = {}
    for name in (list(names) if names is not None else list(TINY_MODELS)):
        folder, builder = TINY_MODELS[name]
        d = os.path.join(models_root, folder)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, name)
        entry = manifest.get(name, {})
        if os.path.isfile(path) and entry.get("version") == BUILDER_VERSION and \
                entry.get("bytes") == os.path.getsize(path):
            result[name] = {"path": path, "bytes": entry["bytes"], "seconds": entry.get("seconds"), "built": False}
            continue
        t0 = time.perf_counter()
        builder(path)
        gc.collect()
        dt = time.perf_counter() - t0
        size = os.path.getsize(path)
        manifest[name] = {"version": BUILDER_VERSION, "bytes": size, "seconds": round(dt, 2)}
        with open(_manifest_path(models_root) + ".part", "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        os.replace(_manifest_path(models_root) + ".part", _manifest_path(models_root))
        log(f"built {folder}/{name}: {size / 2**20:.1f} MiB in {dt:.1f} s")
        result[name] = {"path": path, "bytes": size, "seconds": dt, "built": True}
    return result


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

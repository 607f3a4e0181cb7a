"""Start ComfyUI in this process with the pack loaded: the one start-up used by the tools
(calibration, workflow and schema generators) and by the tier-2 test harness.

    from tools.comfyui_boot import boot, object_info
    comfy = boot("/path/to/ComfyUI", dirs={"output": ..., "input": ...})
    comfy.nodes, comfy.execution, comfy.loop, comfy.server, comfy.pack_nodes

What ComfyUI 0.3.64 needs, in this order: its root first on sys.path (and no module of ours
shadowing its top-level names), `args` set before anything imports comfy.model_management,
folder_paths and ComfyUI's `utils` package imported before `nodes` (nodes.py shadows `utils`),
a PromptServer (never listening) before the nodes load. A pack that fails to import does not
fail ComfyUI's own start-up, so `boot` checks that every node of the pack was registered.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_PREFIX = "StudentTeacher"

# ComfyUI's top-level modules (a module of ours with one of these names would shadow them)
COMFY_TOPLEVEL = (
    "nodes", "utils", "server", "execution", "folder_paths", "main", "app", "comfy", "comfy_extras",
    "comfy_execution", "comfy_api", "comfy_api_nodes", "comfy_config", "latent_preview", "node_helpers",
    "protocol", "middleware", "api_server", "alembic_db", "new_updater", "cuda_malloc",
    "hook_breaker_ac10a0", "comfyui_version",
)


@dataclass
class Booted:
    path: str
    loop: asyncio.AbstractEventLoop
    server: object
    pack_module: object
    pack_nodes: Dict[str, type]
    pack_display_names: Dict[str, str]
    core_node_names: set
    pack_load_log: list = field(default_factory=list)

    @property
    def nodes(self):
        import nodes
        return nodes

    @property
    def execution(self):
        import execution
        return execution


_BOOTED: Optional[Booted] = None


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(f"{record.levelname}: {record.getMessage()}")


def _put_comfyui_first(root: str):
    real = os.path.realpath(root)
    for name in list(sys.modules):
        if name.split(".")[0] not in COMFY_TOPLEVEL:
            continue
        mod = sys.modules[name]
        where = [getattr(mod, "__file__", None)] + list(getattr(mod, "__path__", []) or [])
        where = [w for w in where if w]
        if where and not any(os.path.realpath(w).startswith(real + os.sep) for w in where):
            del sys.modules[name]
    while root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)


def boot(comfyui: str, *, pack: Optional[str] = REPO, cpu: bool = True, dirs: Optional[Dict[str, str]] = None,
         extra_model_paths: Iterable[str] = ()) -> Booted:
    """ComfyUI at `comfyui`, booted once per process, core nodes (no API nodes, none of ComfyUI's own
    custom_nodes/) plus the pack at `pack`. `dirs` may set "output", "input", "temp", "user";
    `extra_model_paths` are extra_model_paths.yaml files, read as ComfyUI reads them."""
    global _BOOTED
    if _BOOTED is not None:
        return _BOOTED
    comfyui = os.path.abspath(comfyui)
    if not os.path.isfile(os.path.join(comfyui, "nodes.py")) or not os.path.isdir(os.path.join(comfyui, "comfy")):
        raise RuntimeError(f"{comfyui} is not a ComfyUI folder (no nodes.py / comfy/)")
    _put_comfyui_first(comfyui)

    import comfy.options  # noqa: F401  (keeps ComfyUI from parsing our argv)
    from comfy.cli_args import args
    args.cpu = cpu
    args.disable_api_nodes = True
    args.disable_all_custom_nodes = True
    args.disable_auto_launch = True
    args.dont_print_server = True
    for kind, path in (dirs or {}).items():
        os.makedirs(path, exist_ok=True)
        setattr(args, f"{kind}_directory", path)

    import folder_paths
    import utils.extra_config
    import utils.install_util  # noqa: F401
    for kind, path in (dirs or {}).items():
        getattr(folder_paths, f"set_{kind}_directory")(path)
    for config in extra_model_paths:
        utils.extra_config.load_extra_path_config(config)

    import comfy.model_management  # noqa: F401  (only after args.cpu is set)
    import nodes
    import server

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    srv = server.PromptServer(loop)
    loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    core = set(nodes.NODE_CLASS_MAPPINGS)
    module, mapping, log = None, {}, []
    if pack:
        module, mapping, log = _load_pack(loop, nodes, os.path.abspath(pack), core)
    _BOOTED = Booted(comfyui, loop, srv, module, mapping,
                     dict(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}), core, log)
    return _BOOTED


def _load_pack(loop, nodes, pack, core):
    if not os.path.isfile(os.path.join(pack, "__init__.py")):
        raise RuntimeError(f"{pack} has no __init__.py: ComfyUI cannot load it as a custom node folder")
    handler = _Lines()
    logging.getLogger().addHandler(handler)
    try:
        ok = loop.run_until_complete(nodes.load_custom_node(pack, ignore=set(core)))
    finally:
        logging.getLogger().removeHandler(handler)
    module = sys.modules.get(pack.replace(".", "_x_"))
    if not ok or module is None:
        raise RuntimeError("the pack failed to load into ComfyUI:\n" + "\n".join(handler.lines))
    mapping = dict(getattr(module, "NODE_CLASS_MAPPINGS", None) or {})
    clashes = sorted(set(mapping) & core)
    if clashes:
        raise RuntimeError(f"pack node names clash with core nodes (ComfyUI skips them): {clashes}")
    missing = [k for k, v in mapping.items() if nodes.NODE_CLASS_MAPPINGS.get(k) is not v]
    if missing:
        raise RuntimeError(f"pack nodes not registered in ComfyUI: {missing}")
    return module, mapping, handler.lines


def free_memory(executor):
    """Drop `executor`'s cached outputs and every loaded model, then collect garbage."""
    import gc

    import comfy.model_management as mm
    executor.reset()
    mm.unload_all_models()
    mm.cleanup_models_gc()
    gc.collect()
    mm.soft_empty_cache()


class _Request:
    def __init__(self, node_class):
        self.match_info = {"node_class": node_class}
        self.rel_url = None


def object_info(comfy: Booted, classes: Iterable[str]) -> dict:
    """What GET /object_info/{class} serves, through ComfyUI's own route handler."""
    handler = next((r.handler for r in comfy.server.routes
                    if getattr(r, "method", None) == "GET" and getattr(r, "path", None) == "/object_info/{node_class}"),
                   None)
    if handler is None:
        raise RuntimeError("ComfyUI's /object_info/{node_class} route not found")
    out = {}
    for c in classes:
        out.update(json.loads(comfy.loop.run_until_complete(handler(_Request(c))).body))
    return out

"""Tier 2: tools/distribute.py against two real ComfyUI servers (main.py on loopback, tiny models, as
tests/support/http_bad_inputs.py starts them). A calibration over 15 prompts in shards of 3 gives the same
bytes on one server as on two, also when one of the two is killed mid-shard (its shard is redone on the
other), and an interrupted run resumes without running its finished shards again."""
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from tiny_models import TINY_IMAGE_REWARD, TINY_SD15

# the HTTP client ComfyUI installs; CI's test environment (tier 1) has no ComfyUI and no aiohttp
aiohttp = pytest.importorskip("aiohttp", reason="tier 2: needs ComfyUI's Python (aiohttp)")
from http_bad_inputs import Client, free_port, start_server  # noqa: E402  (imports aiohttp)

PROMPTS = [f"a {colour} {thing}" for colour in ("red", "blue", "green", "white", "black")
           for thing in ("cube", "ball", "cat")]
SHARD = 3  # 5 shards
SHARDS = len(PROMPTS) // SHARD


def calibrate_workflow():
    """What Export (API) gives for checkpoint -> oracle -> Calibrate Oracle Threshold (its prompt inputs are
    set per shard by the CLI)."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD15}},
        "5": {"class_type": "StudentTeacherLoadImageRewardOracle",
              "inputs": {"oracle_file": TINY_IMAGE_REWARD, "device": "cpu", "dtype": "fp32", "preprocess": "exact",
                         "batch_size": 8}},
        "9": {"class_type": "StudentTeacherCalibrateThreshold",
              "inputs": {"model": ["4", 0], "clip": ["4", 1], "vae": ["4", 2], "oracle": ["5", 0],
                         "prompts": "", "prompts_file": "none", "max_prompts": 0, "negative_prompt": "",
                         "width": 64, "height": 64, "steps": 1, "cfg": 1.0, "schedule": "lcm", "seed": 7,
                         "batch_size": 2, "filename": "exported"}},
    }


@pytest.fixture(scope="module")
def servers(comfy, tmp_path_factory):
    """Two ComfyUI servers with the pack and the tiny models, one torch thread each (2 cores)."""
    comfy.tiny(TINY_SD15), comfy.tiny(TINY_IMAGE_REWARD)
    started, threads = [], os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the servers only: restored below
    try:
        for name in ("a", "b"):
            work, port = str(tmp_path_factory.mktemp(f"server_{name}")), free_port()
            proc, log = start_server(comfy.path, sys.executable, comfy.models_root, work, port, comfy.pack_root)
            started.append(SimpleNamespace(name=name, url=f"http://127.0.0.1:{port}", proc=proc, log=log, work=work))
    finally:
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = threads

    async def ready():
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(Client(session, s.url).wait_ready(s.proc, timeout=300) for s in started))
    try:
        print("servers ready in", ", ".join(f"{t:.0f} s" for t in asyncio.run(ready())))
        yield {s.name: s for s in started}
    finally:
        for s in started:
            s.proc.terminate()
            try:
                s.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                s.proc.kill()
            s.log.close()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distribute")
    (folder / "workflow_api.json").write_text(json.dumps(calibrate_workflow(), indent=1))
    (folder / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return folder


def command(job, servers, name):
    return [sys.executable, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "tools",
                                         "distribute.py"),
            "--workflow", str(job / "workflow_api.json"), "--prompts", str(job / "prompts.txt"),
            "--servers", ",".join(s.url for s in servers), "--shard-size", str(SHARD),
            "--work-dir", str(job / f"work_{name}"), "--output", str(job / f"{name}.json")]


def show(title, done):
    print(f"--- {title}: exit {done.returncode}\n{done.stdout}{done.stderr}")


@pytest.fixture(scope="module")
def one_server_file(job, servers):
    done = subprocess.run(command(job, [servers["a"]], "one"), capture_output=True, text=True, timeout=600)
    show("one server", done)
    assert done.returncode == 0, done.stderr
    return (job / "one.json").read_bytes()


def history(url):
    """This server's prompts: [(filename the CLI gave the shard, first_prompt, status)]."""
    async def get():
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/history") as r:
                return await r.json()
    return [(e["prompt"][2]["9"]["inputs"]["filename"], e["prompt"][2]["9"]["inputs"]["first_prompt"],
             (e.get("status") or {}).get("status_str")) for e in asyncio.run(get()).values()]


def queued(url):
    """first_prompt of each prompt running or waiting on this server, by the CLI's file name."""
    async def get():
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/queue") as r:
                return await r.json()
    q = asyncio.run(get())
    return [(item[2]["9"]["inputs"]["filename"], item[2]["9"]["inputs"]["first_prompt"])
            for item in q["queue_running"] + q["queue_pending"]]


def test_two_servers_one_killed_mid_run_give_the_one_server_file(job, servers, one_server_file):
    a, b = servers["a"], servers["b"]
    cli = subprocess.Popen(command(job, [a, b], "two"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # once b has finished a shard, kill it as soon as it is sent the next one
    finished_on_b, t0 = [], time.time()
    while time.time() - t0 < 300 and cli.poll() is None:
        finished_on_b = [first for name, first, status in history(b.url) if name.startswith("two_") and
                         status == "success"]
        running = [first for name, first in queued(b.url) if name.startswith("two_") and first not in finished_on_b]
        if finished_on_b and running:
            b.proc.kill()
            b.proc.wait()
            killed = running[0]
            break
        time.sleep(0.05)
    else:
        cli.kill()
        pytest.fail(f"server b never ran a second shard: {cli.communicate()}")
    out, err = cli.communicate(timeout=600)
    show(f"two servers, b killed while it ran the shard from prompt {killed} (it had finished {finished_on_b})",
         SimpleNamespace(returncode=cli.returncode, stdout=out, stderr=err))
    assert cli.returncode == 0, err
    assert (job / "two.json").read_bytes() == one_server_file
    lost = f"shard {killed // SHARD:04d} (prompts {killed}-{killed + SHARD - 1})"
    assert f"{b.url} does not answer" in err and f"{lost} goes back to the queue" in err
    redone = [status for name, first, status in history(a.url) if name.startswith("two_") and first == killed]
    assert redone == ["success"], "the killed server's shard was not redone on the other"
    assert f"{b.url}: {len(finished_on_b)} shard(s)" in out
    assert f"{a.url}: {SHARDS - len(finished_on_b)} shard(s)" in out


def test_an_interrupted_run_resumes_without_running_finished_shards_again(job, servers, one_server_file):
    a = servers["a"]
    work = job / "work_resumed"
    cli = subprocess.Popen(command(job, [a], "resumed"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (work / "shard_0001.json").exists() and cli.poll() is None and time.time() - t0 < 300:
        time.sleep(0.05)
    cli.send_signal(signal.SIGINT)  # Ctrl-C
    out, err = cli.communicate(timeout=120)
    show("interrupted", SimpleNamespace(returncode=cli.returncode, stdout=out, stderr=err))
    assert cli.returncode == 130 and "run the same command again to resume" in err
    kept = sorted(p.name for p in work.glob("shard_*.json"))
    assert 2 <= len(kept) < SHARDS and not (job / "resumed.json").exists()

    done = subprocess.run(command(job, [a], "resumed"), capture_output=True, text=True, timeout=600)
    show("resumed", done)
    assert done.returncode == 0, done.stderr
    assert f"resuming: {len(kept)} of them done" in done.stderr
    assert f"{a.url}: {SHARDS - len(kept)} shard(s)" in done.stdout
    assert (job / "resumed.json").read_bytes() == one_server_file
    # every shard ran to the end once on the server, over both runs: the kept ones were not run again
    runs = collections.Counter(first for name, first, status in history(a.url)
                               if name.startswith("resumed_") and status == "success")
    assert runs == {i * SHARD: 1 for i in range(SHARDS)}

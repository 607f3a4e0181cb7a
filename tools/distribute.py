#!/usr/bin/env python
"""Run a calibration or a measurement over a long prompt list on several ComfyUI servers at once.

    python tools/distribute.py --workflow my_api.json --prompts prompts.txt \\
        --servers http://gpu1:8188,http://gpu2:8188 --shard-size 50 --work-dir runs/my_student --output my_student.json

The workflow is ComfyUI's API export (Workflow > Export (API)) holding one Calibrate Oracle Threshold or
Measure Student vs Teacher node. The prompts are cut into shards of --shard-size; each server runs one shard
at a time (that node's first_prompt and max_prompts) through ComfyUI's HTTP API and gets the next one when it
frees up. A shard that fails goes to another server; a server that stops answering gives its shard back and
is tried again later. Every finished shard is kept in --work-dir, so the same command run again resumes. At the
end the shards are merged into the file one run over all the prompts makes (the same --shard-size on one
server or on ten gives the same bytes); a Calibrate node with several students gives <output>_student<N>.json.

Needs only Python with aiohttp (ComfyUI's Python has it), not ComfyUI.
"""
import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from types import SimpleNamespace

import aiohttp

PACK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PACK not in sys.path:
    sys.path.insert(0, PACK)
from oracle.calibration import CalibrationError, CalibrationExists, merge_calibrations, write_new  # noqa: E402
from schedulers.errors import InputError, require_file_stem  # noqa: E402
from schedulers.shards import (MANIFEST, RESULT_KEY, DistributeError, Run, check_manifest, done_shards,  # noqa: E402
                               files_by_position, files_per_shard, output_paths, plan_shards, progress_line,
                               prompt_lines, result_problem, run_manifest, server_urls, shard_graph, target_node)

HISTORY_POLL = 5.0  # seconds between /history checks while the websocket is quiet (a message may be missed)
HEARTBEAT = 30.0    # websocket ping interval: a machine that vanished without closing the connection is noticed


class Gone(Exception):
    """The server did not answer."""


class Refused(Exception):
    """The server cannot run this workflow (validation, a missing node or model)."""


class Failed(Exception):
    """The shard ran and failed with a node error."""


class Interrupted(Exception):
    """Someone interrupted the shard on the server."""


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workflow", required=True, help="the workflow in ComfyUI's API format (Export (API))")
    p.add_argument("--prompts", required=True, help="text file, one prompt per line")
    p.add_argument("--servers", default="default",
                   help="comma-separated ComfyUI addresses (default: http://127.0.0.1:8188)")
    p.add_argument("--shard-size", type=int, default=50, help="prompts per shard (default 50)")
    p.add_argument("--work-dir", required=True, help="folder for the finished shards; the same command resumes")
    p.add_argument("--output", required=True, help="the merged file to write (must not exist)")
    return p.parse_args(argv)


def read_inputs(a):
    """The run's fixed parts, checked before any server is asked."""
    try:
        with open(a.workflow, encoding="utf-8") as f:
            workflow = json.load(f)
    except (OSError, ValueError) as e:
        raise DistributeError(f"cannot read the workflow {a.workflow} ({e}); give ComfyUI's Export (API) file")
    try:
        with open(a.prompts, encoding="utf-8-sig") as f:
            prompts = prompt_lines(f.read())
    except UnicodeDecodeError as e:
        raise DistributeError(f"{a.prompts} is not UTF-8 text ({e}); save it with the UTF-8 encoding")
    except OSError as e:
        raise DistributeError(f"cannot read the prompt file {a.prompts} ({e})")
    node_id = target_node(workflow)
    outputs = output_paths(a.output, files_per_shard(workflow[node_id]))
    taken = [p for p in outputs if os.path.exists(p)]
    if taken:
        raise DistributeError(f"{taken[0]} exists already; give another --output (a result is never overwritten)")
    stem = os.path.basename(a.output)
    stem = stem[:-5] if stem.lower().endswith(".json") else stem
    try:  # the servers save each shard under this name: refused here rather than on every shard
        require_file_stem("--output", f"{stem}_shard0000", "my_student.json")
    except InputError as e:
        raise DistributeError(str(e)) from None
    return SimpleNamespace(workflow=workflow, node_id=node_id, class_type=workflow[node_id]["class_type"],
                           prompts=prompts, shards=plan_shards(len(prompts), a.shard_size), outputs=outputs,
                           count=len(outputs), stem=stem,
                           work_dir=a.work_dir, manifest=run_manifest(workflow, node_id, prompts, a.shard_size))


def write_whole(path, value):
    """JSON to `path`, whole or not at all: a file beside it, then renamed over it."""
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def open_work_dir(job):
    """The shards finished earlier in the work folder, made for this same run (else refused)."""
    os.makedirs(job.work_dir, exist_ok=True)
    path = os.path.join(job.work_dir, MANIFEST)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                found = json.load(f)
        except (OSError, ValueError):
            found = None
        check_manifest(found, job.manifest, job.work_dir)
    elif any(name.startswith("shard_") for name in os.listdir(job.work_dir)):
        raise DistributeError(f"{job.work_dir} holds shard files but no {MANIFEST}, so it cannot be checked to be "
                              "this run's; give a new --work-dir")
    else:
        write_whole(path, job.manifest)
    return done_shards(job.work_dir, job.shards, job.count)


class Bar:
    """The progress line on stderr: redrawn in place on a terminal, a line per finished shard otherwise."""

    def __init__(self, run, total):
        self.run, self.total, self.before = run, total, run.prompts_done()  # resumed prompts took no time here
        self.start, self.tty, self.shown, self.printed = time.monotonic(), sys.stderr.isatty(), "", None

    def draw(self):
        run, done = self.run, self.run.prompts_done()
        line = (f"{progress_line(done, self.total, self.before, time.monotonic() - self.start)}"
                f"  ({len(run.in_flight)} running, {len(run.live())} server(s))")
        if self.tty:
            sys.stderr.write("\r" + line.ljust(len(self.shown)))
            self.shown = line
        elif done != self.printed:  # a log gets a line per change, not one a second
            sys.stderr.write(line + "\n")
            self.printed = done
        sys.stderr.flush()

    def say(self, message):
        """A line of its own above the bar."""
        if self.shown:
            sys.stderr.write("\r" + " " * len(self.shown) + "\r")
            self.shown = ""
        sys.stderr.write(message + "\n")
        self.draw()

    def end(self):
        if self.shown:
            sys.stderr.write("\n")
        sys.stderr.flush()


class Changes:
    """Wakes the workers waiting for work when the run's state changes."""

    def __init__(self):
        self.event = asyncio.Event()

    def notify(self):
        self.event.set()
        self.event = asyncio.Event()

    async def wait(self, timeout):
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except asyncio.TimeoutError:
            pass


def why(e):
    return str(e) or type(e).__name__


def validation_message(body):
    """ComfyUI's answer to a refused prompt as one text: the error and each node's."""
    error = body.get("error") if isinstance(body, dict) else None
    lines = [f"{error.get('message', '')} {error.get('details', '')}".strip() if isinstance(error, dict) else str(body)]
    for nid, ne in (body.get("node_errors") or {} if isinstance(body, dict) else {}).items():
        lines += [f"node {nid} ({ne.get('class_type')}): {e.get('message')}: {e.get('details')}"
                  for e in ne.get("errors", [])]
    return "; ".join(line for line in lines if line)


def node_error(entry):
    """The error a finished prompt's history entry reports (Interrupted when it was interrupted)."""
    status = entry.get("status") or {}
    for event, data in status.get("messages") or []:
        if event == "execution_interrupted":
            raise Interrupted()
        if event == "execution_error":  # the type without its module: that holds the pack's path on the server
            kind = str(data.get("exception_type", "")).rsplit(".", 1)[-1]
            return (f"node {data.get('node_id')} ({data.get('node_type')}): {kind}: "
                    f"{str(data.get('exception_message', '')).strip()}")
    return f"the prompt ended with status {status.get('status_str')!r} and no error message"


class Worker:
    """One server: connects, runs one shard at a time and reports to the run."""

    def __init__(self, session, url, job, run, bar, changes):
        self.session, self.url, self.job, self.run, self.bar, self.changes = session, url, job, run, bar, changes
        self.client_id, self.ws, self.prompt_id = uuid.uuid4().hex, None, None

    async def connect(self):
        try:
            async with self.session.get(f"{self.url}/object_info/{self.job.class_type}") as r:
                info = await r.json(content_type=None) if r.status == 200 else None
            if not isinstance(info, dict):
                raise Refused(f"it answered {r.status} to /object_info, not as ComfyUI does; check the address")
            if self.job.class_type not in info:
                raise Refused(f"it has no {self.job.class_type} node; install this pack in its custom_nodes/ folder "
                              "and restart it")
            # no size limit: the node's "executed" message holds every score of the shard
            self.ws = await self.session.ws_connect(f"ws{self.url[4:]}/ws?clientId={self.client_id}",
                                                    heartbeat=HEARTBEAT, max_msg_size=0)
        except ValueError:
            raise Refused("it does not answer as ComfyUI does; check the address") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise Gone(why(e)) from None

    async def close(self):
        if self.ws is not None:
            ws, self.ws = self.ws, None
            await ws.close()

    async def history(self, prompt_id):
        try:
            async with self.session.get(f"{self.url}/history/{prompt_id}") as r:
                return (await r.json(content_type=None)).get(prompt_id)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, AttributeError) as e:
            raise Gone(why(e)) from None

    async def run_shard(self, shard):
        """The shard's files, from the node's UI output in /history."""
        graph = shard_graph(self.job.workflow, self.job.node_id, self.job.prompts, shard, self.job.stem)
        try:
            body = {"prompt": graph, "client_id": self.client_id}
            async with self.session.post(f"{self.url}/prompt", json=body) as r:
                status, body = r.status, await r.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
            raise Gone(why(e)) from None
        if status == 400 or (isinstance(body, dict) and self.job.node_id in (body.get("node_errors") or {})):
            raise Refused(validation_message(body))
        if status != 200 or not isinstance(body, dict) or "prompt_id" not in body:
            raise Failed(f"POST /prompt answered {status}: {str(body)[:300]}")
        self.prompt_id = body["prompt_id"]  # withdrawn if the run stops while it is on the server
        entry = await self.wait(self.prompt_id)
        if (entry.get("status") or {}).get("status_str") != "success":
            raise Failed(node_error(entry))
        result = (entry.get("outputs") or {}).get(self.job.node_id, {}).get(RESULT_KEY)
        problem = result_problem(result, shard, self.job.count)
        if problem:
            raise Failed(problem)
        return result

    async def wait(self, prompt_id):
        """The prompt's history entry once it ran; the websocket says when (the history is checked now and
        then too: a message can be missed)."""
        ended, last_check = False, time.monotonic()
        while True:
            if ended or time.monotonic() - last_check > HISTORY_POLL:
                entry, last_check = await self.history(prompt_id), time.monotonic()
                if entry:
                    return entry
            try:
                msg = await self.ws.receive(timeout=0.2 if ended else HISTORY_POLL)
            except asyncio.TimeoutError:
                continue
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.ERROR):
                raise Gone("the connection closed")
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(msg.data)
            data = message.get("data") or {}
            if data.get("prompt_id") == prompt_id and (
                    message.get("type") in ("execution_success", "execution_error", "execution_interrupted")
                    or (message.get("type") == "executing" and data.get("node") is None)):
                ended = True  # the history entry follows as soon as the server has stored it

    async def withdraw(self):
        """Take this run's prompt off the server when the run stops early: interrupt it only if it is ours
        that runs (an older ComfyUI interrupts whatever runs)."""
        if self.prompt_id is None:
            return
        try:
            async with self.session.get(f"{self.url}/queue", timeout=aiohttp.ClientTimeout(total=5)) as r:
                queue = await r.json()
            if any(item[1] == self.prompt_id for item in queue.get("queue_running", [])):
                await self.session.post(f"{self.url}/interrupt", json={"prompt_id": self.prompt_id},
                                        timeout=aiohttp.ClientTimeout(total=5))
            else:
                await self.session.post(f"{self.url}/queue", json={"delete": [self.prompt_id]},
                                        timeout=aiohttp.ClientTimeout(total=5))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            pass  # the server is gone: nothing of ours runs there

    def lost(self, reason):
        shard = self.run.server_lost(self.url, time.monotonic(), reason)
        server = self.run.servers[self.url]
        back = f"; {shard.name} goes back to the queue" if shard else ""
        then = (f"dropped: it {server.dropped}" if server.dropped
                else f"trying it again in {server.retry_at - time.monotonic():.0f} s")
        self.bar.say(f"{self.url} does not answer ({reason}){back}; {then}")

    def refused(self, reason):
        shard = self.run.server_refused(self.url, reason)
        back = f"; {shard.name} goes back to the queue" if shard else ""
        self.bar.say(f"{self.url} dropped: it refused the workflow ({reason}){back}")

    async def contact(self):
        """Connect; None, or why the server cannot be used (Gone or Refused)."""
        try:
            await self.connect()
        except (Gone, Refused) as e:
            return e
        return None

    def report(self, problem):
        (self.lost if isinstance(problem, Gone) else self.refused)(str(problem))

    async def serve(self):
        run = self.run
        while not (run.finished or run.stopped or run.servers[self.url].dropped):
            wait = run.servers[self.url].retry_at - time.monotonic()
            if wait > 0:
                await self.changes.wait(wait)
                continue
            if self.ws is None:
                problem = await self.contact()
                if problem is not None:
                    self.report(problem)
                    self.changes.notify()
                    continue
            shard = run.next_shard(self.url, time.monotonic())
            if shard is None:
                await self.changes.wait(1.0)
                continue
            self.bar.draw()
            try:
                result = await self.run_shard(shard)
            except Gone as e:
                await self.close()
                self.lost(str(e))
            except Refused as e:
                self.refused(str(e))
            except Interrupted:
                run.shard_returned(self.url, shard.index)
                self.bar.say(f"{shard.name} was interrupted on {self.url}; it goes back to the queue")
            except Failed as e:
                run.shard_failed(self.url, shard.index, str(e))
                if not run.stopped:
                    self.bar.say(f"{shard.name} failed on {self.url} ({e}); it goes to another server")
            else:
                write_whole(os.path.join(self.job.work_dir, shard.file), result)
                run.shard_done(self.url, shard.index)
            self.prompt_id = None
            self.changes.notify()
            self.bar.draw()
        await self.close()


async def distribute(job, run, bar):
    """Every server works until the shards are done or the run stops; on the way out (Ctrl-C too) this run's
    prompts still on a server are taken off it."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        changes = Changes()
        workers = [Worker(session, url, job, run, bar, changes) for url in run.servers]
        first = dict(zip(workers, await asyncio.gather(*(w.contact() for w in workers))))
        run.check_start({w.url: str(problem) for w, problem in first.items() if problem is not None})
        if run.stopped:
            return
        for worker, problem in first.items():
            if problem is not None:
                worker.report(problem)
        tasks = [asyncio.create_task(w.serve()) for w in workers]
        try:
            while not (run.finished or run.stopped):
                for task in tasks:
                    if task.done() and not task.cancelled() and task.exception():
                        raise task.exception()
                bar.draw()
                await changes.wait(1.0)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(w.withdraw() for w in workers), return_exceptions=True)
            await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)


def merge(job):
    """The merged file of each student (one for a measurement), written new."""
    done = done_shards(job.work_dir, job.shards, job.count)
    try:
        merged = [merge_calibrations(files) for files in files_by_position([(s, done[s.index]) for s in job.shards])]
    except CalibrationError as e:
        raise DistributeError(f"the shards in {job.work_dir} do not merge ({e}); delete that folder and run again")
    for path, data in zip(job.outputs, merged):
        try:
            write_new(path, data)
        except CalibrationExists as e:
            raise DistributeError(f"{e}: run the same command with another --output (the shards stay in "
                                  f"{job.work_dir})") from None


def main(argv=None):
    a = parse(argv)
    try:
        servers = server_urls(a.servers)
        job = read_inputs(a)
        done = open_work_dir(job)
    except (DistributeError, OSError) as e:  # OSError: a work folder that cannot be made or read
        print(f"distribute: {e}", file=sys.stderr)
        return 2
    run = Run(job.shards, servers, done, work_dir=job.work_dir)
    resume = f"; resuming: {len(done)} of them done in {job.work_dir}" if done else ""
    print(f"{len(job.prompts)} prompts in {len(job.shards)} shards on {len(servers)} server(s){resume}",
          file=sys.stderr)
    bar = Bar(run, len(job.prompts))
    try:
        if not run.finished:
            asyncio.run(distribute(job, run, bar))
    except KeyboardInterrupt:
        bar.end()
        print(f"interrupted: {len(run.done)} of {len(job.shards)} shards are done in {job.work_dir}; run the same "
              "command again to resume", file=sys.stderr)
        return 130
    bar.end()
    if run.stopped:
        print(f"distribute: stopped: {run.stopped}", file=sys.stderr)
        return 1
    try:
        merge(job)
    except DistributeError as e:
        print(f"distribute: {e}", file=sys.stderr)
        return 1
    for url, server in run.servers.items():
        dropped = f" (dropped: it {server.dropped})" if server.dropped else ""
        print(f"{url}: {server.shards_done} shard(s){dropped}")
    if run.done_before:
        print(f"from an earlier run: {run.done_before} shard(s)")
    for path in job.outputs:
        print(f"wrote {path}")
    # the node saves every shard it runs; no HTTP route deletes a model file, so the user does
    print(f"each server also keeps the shards it ran as models/image_reward/calibration/{job.stem}_shard*.json: "
          "delete them there once you have the merged file")
    return 0


if __name__ == "__main__":
    sys.exit(main())

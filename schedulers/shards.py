"""A long calibration or measurement split over several ComfyUI servers (tools/distribute.py): the shard plan,
the workflow each shard sends, the run's state (done, in flight, failed), what a server that frees up gets
next, what a failed shard or a lost server does, the resume state in the work folder and the progress line.
Host-free: no ComfyUI and no network here; the CLI does the HTTP."""
import copy
import hashlib
import json
import os
import re
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

# the nodes a distributed run drives: both take a prompt list, first_prompt and max_prompts, and give the
# files they saved as the UI output RESULT_KEY
TARGETS = ("StudentTeacherCalibrateThreshold", "StudentTeacherMeasureStudentVsTeacher")
RESULT_KEY = "calibration"  # the nodes import it (nodes/calibrate.py CALIBRATION_UI): one name on both sides
SET_INPUTS = ("prompts", "prompts_file", "first_prompt", "max_prompts", "filename")  # what each shard sets
NO_FILE = "none"  # prompts_file's "no file" choice: the prompts input is read
MIN_SHARD = 2  # both nodes refuse fewer prompts: a percentile needs two
PROMPT_INDEX_MAX = 100000  # both nodes' first_prompt and max_prompts widgets go up to this
DEFAULT_SERVER = "http://127.0.0.1:8188"
MANIFEST = "manifest.json"
SAME_ERROR_LIMIT = 3  # the same node error this often: the input is bad, not the servers
MAX_ATTEMPTS = 5      # a shard sent this often without finishing (its servers died under it) stops the run
RETRIES = 3           # a lost server is tried again this often, RETRY_DELAY x 1, 2, 3 s later, then dropped
RETRY_DELAY = 10.0


class DistributeError(Exception):
    """A distributed run cannot start or go on; the message says what is wrong and the fix."""


def prompt_lines(text: str) -> List[str]:
    """One prompt a line, as the pack's nodes read a prompt list (nodes/prompts.py uses this): blank
    lines and a byte-order mark dropped, each line stripped."""
    return [line.strip() for line in str(text).replace("\ufeff", "").splitlines() if line.strip()]


@dataclass(frozen=True)
class Shard:
    index: int
    first: int   # its first prompt's position in the whole list
    count: int

    @property
    def name(self) -> str:
        """How merged files name it: by the prompts it holds, never by the server that ran it."""
        return f"shard {self.index:04d} (prompts {self.first}-{self.first + self.count - 1})"

    @property
    def file(self) -> str:
        return f"shard_{self.index:04d}.json"


def plan_shards(total: int, size: int) -> List[Shard]:
    """Consecutive shards of `size` prompts; a last one of a single prompt joins the one before (the nodes
    refuse one prompt)."""
    if size < MIN_SHARD:
        raise DistributeError(f"a shard size of {size} is too small: the nodes need at least {MIN_SHARD} prompts "
                              "per shard; use --shard-size 2 or more (50 suits most runs)")
    if total < MIN_SHARD:
        raise DistributeError(f"the prompt file holds {total} prompt(s); give at least {MIN_SHARD}, one per line "
                              "(hundreds for a stable tau)")
    if total > PROMPT_INDEX_MAX:
        raise DistributeError(f"the prompt file holds {total} prompts and the nodes' first_prompt goes up to "
                              f"{PROMPT_INDEX_MAX}; split it into files of at most {PROMPT_INDEX_MAX} prompts, run "
                              "each, and merge the outputs with tools/merge_calibrations.py")
    starts = list(range(0, total, size))
    if total - starts[-1] < MIN_SHARD:
        starts.pop()
    ends = starts[1:] + [total]
    return [Shard(i, a, b - a) for i, (a, b) in enumerate(zip(starts, ends))]


def server_urls(text: str) -> List[str]:
    """The --servers list: comma-separated http(s)://host:port, or "default" for a local ComfyUI."""
    urls = []
    for item in (t.strip() for t in str(text).split(",")):
        url = DEFAULT_SERVER if item == "default" else item.rstrip("/")
        parts = urllib.parse.urlsplit(url)
        try:
            port_ok = parts.port is None or 0 < parts.port < 65536
        except ValueError:
            port_ok = False
        if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or parts.query:
            raise DistributeError(f"{item!r} is not a server address; give ComfyUI's address as it shows in the "
                                  "browser, such as http://192.168.1.20:8188 (comma-separated for several)")
        if url in urls:
            raise DistributeError(f"{url} is listed twice; list each server once")
        urls.append(url)
    return urls


def target_node(workflow) -> str:
    """The id of the one Calibrate or Measure node of an API-format workflow."""
    if isinstance(workflow, dict) and "nodes" in workflow and "links" in workflow:
        raise DistributeError("the workflow is in ComfyUI's UI format; save it with Workflow > Export (API) "
                              "(enable the dev mode options in older front ends) and give that file")
    if not isinstance(workflow, dict) or not workflow or \
            any(not isinstance(n, dict) or "class_type" not in n or not isinstance(n.get("inputs"), dict)
                for n in workflow.values()):
        raise DistributeError("the workflow is not in ComfyUI's API format ({node id: {\"class_type\", "
                              "\"inputs\"}}); save it with Workflow > Export (API)")
    found = [nid for nid, node in workflow.items() if node["class_type"] in TARGETS]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(found)})"
        raise DistributeError(f"the workflow has {what} Calibrate Oracle Threshold or Measure Student vs Teacher "
                              "nodes; give a workflow with exactly one (the node the prompts are split for)")
    return found[0]


def files_per_shard(node: dict) -> int:
    """The files each shard gives: one per student of a Calibrate node (model, student_2..4), one for a
    measurement."""
    return 1 + sum(1 for name, value in node["inputs"].items()
                   if re.fullmatch(r"student_\d+", name) and isinstance(value, list))


def shard_graph(workflow: dict, node_id: str, prompts: Sequence[str], shard: Shard, stem: str) -> dict:
    """The workflow one shard sends: the whole prompt list (each prompt keeps its position, so its seed and
    id), this shard's range, and a file name of its own (server-side files never collide)."""
    graph = copy.deepcopy(workflow)
    graph[node_id]["inputs"].update(prompts="\n".join(prompts), prompts_file=NO_FILE, first_prompt=shard.first,
                                    max_prompts=shard.count, filename=f"{stem}_shard{shard.index:04d}")
    return graph


def output_paths(output: str, count: int) -> List[str]:
    """Where the merged files go: the output itself, or <stem>_student<N>.json for several students."""
    if count == 1:
        return [output]
    stem = output[:-5] if output.lower().endswith(".json") else output
    return [f"{stem}_student{n}.json" for n in range(1, count + 1)]


def _sha256(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def run_manifest(workflow: dict, node_id: str, prompts: Sequence[str], shard_size: int) -> dict:
    """What a work folder's shards were made from. The inputs each shard sets are left out: a workflow
    exported with other prompts typed into its node is the same run."""
    graph = copy.deepcopy(workflow)
    for name in SET_INPUTS:
        graph[node_id]["inputs"].pop(name, None)
    return {"workflow_sha256": _sha256(graph), "prompts_sha256": _sha256(list(prompts)),
            "prompt_count": len(prompts), "shard_size": int(shard_size)}


def check_manifest(found, wanted: dict, work_dir: str) -> None:
    """Refuse a work folder made for another run: its shards would merge into a wrong file."""
    what = {"workflow_sha256": "another workflow", "prompts_sha256": "another prompt list",
            "prompt_count": "another prompt list", "shard_size": "another shard size"}
    if not isinstance(found, dict):
        raise DistributeError(f"{os.path.join(work_dir, MANIFEST)} is not a manifest of tools/distribute.py; "
                              "give another --work-dir")
    differs = sorted({what[k] for k in what if found.get(k) != wanted[k]})
    if differs:
        raise DistributeError(f"{work_dir} was made for {' and '.join(differs)}; to resume it, run the command that "
                              f"made it (same workflow, prompt file and --shard-size {found.get('shard_size')}), or "
                              "give a new --work-dir for this run")


def result_problem(result, shard: Shard, count: int) -> Optional[str]:
    """What is wrong with the files a shard gave (None: nothing): one per student, each a calibration whose
    raw scores are the shard's prompts, every one (a server with an older pack may ignore first_prompt): each
    file all of them (every prompt to every student), or the files together each prompt once (routed)."""
    if not isinstance(result, list) or len(result) != count:
        return (f"the node gave {len(result) if isinstance(result, list) else 'no'} file(s), {count} expected; "
                "give every server the same version of the pack")
    indices = []
    for item in result:
        data = item.get("data") if isinstance(item, dict) else None
        samples = data.get("metadata", {}).get("samples") if isinstance(data, dict) else None
        index = samples.get("prompt_index") if isinstance(samples, dict) else None
        if not isinstance(item.get("file") if isinstance(item, dict) else None, str) or not isinstance(index, list):
            return "the node gave no calibration file with raw scores; give every server the same version of the pack"
        indices.append(index)
    wanted = list(range(shard.first, shard.first + shard.count))
    every_prompt_each = all(sorted(index) == wanted for index in indices)
    if not every_prompt_each and sorted(i for index in indices for i in index) != wanted:
        return (f"the node scored other prompts than {shard.first}-{shard.first + shard.count - 1}, or not all of "
                "them; give every server the same version of the pack")
    return None


def done_shards(work_dir: str, shards: Iterable[Shard], count: int) -> Dict[int, list]:
    """{shard index: its files} of the shards finished in the work folder (the resume state)."""
    done = {}
    for shard in shards:
        path = os.path.join(work_dir, shard.file)
        if not os.path.exists(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                done[shard.index] = json.load(f)
        except (OSError, ValueError) as e:
            raise DistributeError(f"{path} cannot be read ({e}); delete it to run that shard again") from None
        problem = result_problem(done[shard.index], shard, count)
        if problem:
            raise DistributeError(f"{path} is not a finished shard ({problem}); delete it to run that shard again")
    return done


def files_by_position(results: Sequence[tuple]) -> List[List[tuple]]:
    """[(shard, its files)] in plan order -> per file position (student), [(shard name, file content)]: what
    merge_calibrations takes."""
    counts = {len(files) for _, files in results}
    if len(counts) != 1:
        raise DistributeError(f"the shards gave different numbers of files ({sorted(counts)}); the work folder mixes "
                              "runs: delete it and run again")
    return [[(shard.name, files[i]["data"]) for shard, files in results] for i in range(counts.pop())]


@dataclass
class Server:
    url: str
    lost: int = 0            # times in a row it could not be reached
    retry_at: float = 0.0    # given no work before this time
    dropped: str = ""        # why it was given up ("" while it is used)
    shards_done: int = 0     # in this run


class Run:
    """Which shards are done, pending and in flight on which server. The CLI reports what happened;
    `next_shard` says what a free server does next and `stopped` why the run cannot go on."""

    def __init__(self, shards: Sequence[Shard], servers: Sequence[str], done: Iterable[int] = (),
                 work_dir: str = "the work folder", same_error_limit: int = SAME_ERROR_LIMIT,
                 max_attempts: int = MAX_ATTEMPTS, retries: int = RETRIES, retry_delay: float = RETRY_DELAY):
        self.shards = {s.index: s for s in shards}
        self.done = set(done)
        self.done_before = len(self.done)
        self.pending = [s.index for s in shards if s.index not in self.done]  # plan order; returned ones first
        self.in_flight: Dict[str, int] = {}
        self.attempts: Dict[int, int] = defaultdict(int)
        self.failures: Dict[int, List[tuple]] = defaultdict(list)  # shard -> [(server, error)]
        self.servers = {url: Server(url) for url in servers}
        self.work_dir = work_dir
        self.same_error_limit, self.max_attempts = same_error_limit, max_attempts
        self.retries, self.retry_delay = retries, retry_delay
        self.stopped = ""  # why the run cannot go on

    @property
    def finished(self) -> bool:
        return len(self.done) == len(self.shards)

    def prompts_done(self) -> int:
        return sum(self.shards[i].count for i in self.done)

    def live(self) -> List[str]:
        return [url for url, s in self.servers.items() if not s.dropped]

    def next_shard(self, url: str, now: float) -> Optional[Shard]:
        """The shard server `url` runs next: the first pending one it has not failed; None while it waits to be
        retried, is dropped or busy, or when nothing is left for it."""
        server = self.servers[url]
        if self.stopped or server.dropped or now < server.retry_at or url in self.in_flight:
            return None
        for index in self.pending:
            if all(failed_on != url for failed_on, _ in self.failures[index]):
                self.pending.remove(index)
                self.in_flight[url] = index
                self.attempts[index] += 1
                return self.shards[index]
        return None

    def shard_done(self, url: str, index: int) -> None:
        self.in_flight.pop(url, None)
        self.done.add(index)
        self.servers[url].lost = 0  # it answers again: its tries start over
        self.servers[url].shards_done += 1

    def shard_failed(self, url: str, index: int, error: str) -> None:
        """A node error on `url`: the shard goes to another server, unless the input is bad."""
        self.in_flight.pop(url, None)
        self.failures[index].append((url, error))
        self.pending.insert(0, index)
        self._check()

    def shard_returned(self, url: str, index: int) -> None:
        """The shard did not finish for a reason of its server's (interrupted there): it goes back as it was."""
        self.in_flight.pop(url, None)
        self.pending.insert(0, index)
        self._check()

    def server_lost(self, url: str, now: float, why: str) -> Optional[Shard]:
        """`url` did not answer: its shard (returned) goes back; it is tried again later, or dropped after
        `retries` tries."""
        index = self.in_flight.pop(url, None)
        if index is not None:
            self.pending.insert(0, index)
        server = self.servers[url]
        server.lost += 1
        if server.lost > self.retries:
            server.dropped = f"did not answer {server.lost} times ({why})"
        else:
            server.retry_at = now + self.retry_delay * server.lost
        self._check()
        return self.shards[index] if index is not None else None

    def server_refused(self, url: str, why: str) -> Optional[Shard]:
        """`url` refused the workflow (missing models, nodes or pack): dropped; its shard goes back."""
        index = self.in_flight.pop(url, None)
        if index is not None:
            self.pending.insert(0, index)
        self.servers[url].dropped = f"refused the workflow: {why}"
        self._check()
        return self.shards[index] if index is not None else None

    def check_start(self, problems: Dict[str, str]) -> None:
        """Before the first shard, {server: why it did not answer or refused}: when that is every server, stop
        at once (waiting for retries would only delay the message)."""
        if len(problems) == len(self.servers):
            reasons = "; ".join(f"{url}: {why}" for url, why in problems.items())
            self.stopped = (f"no server could be used ({reasons}). Is ComfyUI running there (python main.py --listen "
                            "0.0.0.0 --port 8188) with this pack and the workflow's models, and can this machine "
                            "reach that address?")

    def _check(self) -> None:
        """Stop on a bad input (a shard that failed on every live server, or with the same node error
        `same_error_limit` times), a shard that never finishes, or when no server is left."""
        live = set(self.live())
        for index in self.pending:
            failures = self.failures[index]
            shard = self.shards[index]
            if failures:
                error = failures[-1][1]
                same = sum(1 for _, e in failures if e == error)
                if (live and live <= {u for u, _ in failures}) or same >= self.same_error_limit:
                    servers = sorted({u for u, _ in failures})
                    self.stopped = (f"{shard.name} failed on {', '.join(servers)}: {error}\nThis is a bad input, "
                                    "not a server problem: fix what the error names, then run the same command "
                                    f"again (it resumes from {self.work_dir}; with a changed workflow or prompt "
                                    "list give a new --work-dir)")
                    return
            if self.attempts[index] >= self.max_attempts:
                why = f"last error: {failures[-1][1]}" if failures else "its servers stopped answering under it"
                self.stopped = (f"{shard.name} was sent {self.attempts[index]} times without finishing ({why}); look "
                                "at those servers' logs (out of memory?), then run the same command again to resume "
                                f"from {self.work_dir}")
                return
        if not live and not self.finished:
            reasons = "; ".join(f"{url} {s.dropped}" for url, s in self.servers.items())
            self.stopped = (f"no server is left ({reasons}). {len(self.done)} of {len(self.shards)} shards are done "
                            f"in {self.work_dir}; fix that (start the servers again, or give them what the workflow "
                            "needs), then run the same command to resume")


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_line(done: int, total: int, done_before: int, elapsed: float, width: int = 24) -> str:
    """`[#####.....] 36/120 prompts  2.10 prompts/s  ETA 0:00:40`: the rate counts only this run's prompts
    (a resumed run's earlier shards took no time here)."""
    filled = int(width * done / total) if total else width
    line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} prompts"
    new = done - done_before
    if new > 0 and elapsed > 0:
        rate = new / elapsed
        line += f"  {rate:.2f} prompts/s  ETA {clock((total - done) / rate)}"
    return line

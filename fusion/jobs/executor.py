"""Where a batch step runs: in this process (``local``), or as tasks on a Ray cluster (``ray``).

With ``ray`` the items still to do (images, pairs, queries) are split into shards (``runtime.in_shard``),
one Ray task each, scheduled with one CPU (and one GPU for ``--device cuda``). A task runs the step as
``--shard I/N`` does, into its own part in ``<output>.parts/``, which must be on storage every node sees;
a task Ray retries after its worker died goes on from what its part holds. As each task ends, its part is
checked as ``fusion.merge`` checks parts and becomes a chunk of the output's ``H5Writer``, which at the end
writes the file one local run writes. Ray is an optional dependency (``pip install -e ".[cluster]"``).
"""

import argparse
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional

import h5py
from tqdm import tqdm

from ..store.h5 import H5Writer
from ..store.provenance import differences, fingerprint, remove
from . import merge
from .runtime import SHARD_ATTR, in_shard

logger = logging.getLogger("fusion")

EXECUTORS = ("local", "ray")
TASK_SIZES = {"img": 64, "pair": 2000, "query": 32}  # items per Ray task by default: a few seconds to minutes each
MAX_RETRIES = 3  # Ray's retries of a task whose worker died (killed, out of memory, node lost)
REPORT_SECONDS = 0.5  # how often a task reports its progress to the driver's bar


@dataclass
class Executor:
    """``kind``: local or ray; ``address``: the Ray cluster (None: RAY_ADDRESS, else a new local instance);
    ``task_size``: items per Ray task (None: ``TASK_SIZES``)."""

    kind: str = "local"
    address: Optional[str] = None
    task_size: Optional[int] = None


LOCAL = Executor()


def add_executor_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local: this process; ray: tasks on a Ray cluster (pip install -e \".[cluster]\")")
    parser.add_argument("--ray-address", help="the Ray cluster's head, HOST:6379 (default: RAY_ADDRESS, else a new "
                        "local instance); outputs must be on storage every node sees")
    parser.add_argument("--task-size", type=int, help=f"items per Ray task (default: {TASK_SIZES['img']} images, "
                        f"{TASK_SIZES['pair']} pairs, {TASK_SIZES['query']} queries)")


def executor_from_args(args) -> Executor:
    if args.executor == "local" and (args.ray_address or args.task_size):
        raise ValueError("--ray-address and --task-size go with --executor ray")
    if args.task_size is not None and args.task_size < 1:
        raise ValueError(f"--task-size {args.task_size}: give a number of items, 1 or more")
    return Executor(args.executor, args.ray_address, args.task_size)


def check_executor(executor: Executor, shard) -> None:
    if executor.kind == "ray" and shard is not None:
        raise ValueError("--shard I/N and --executor ray: give one of them (Ray splits the work into shards itself)")


def connect(address: Optional[str] = None):
    """The ``ray`` module, connected to ``address`` (or RAY_ADDRESS, else a new local instance) unless it already is."""
    try:
        import ray
    except ImportError:
        raise ValueError('--executor ray needs Ray: pip install -e ".[cluster]" (or pip install ray)') from None
    if not ray.is_initialized():
        cluster = address or os.environ.get("RAY_ADDRESS")
        try:
            # the tasks' own progress bars and logs would interleave on the driver's terminal: it draws one bar for all
            ray.init(address=cluster or "local", log_to_driver=False, **({} if cluster else {"include_dashboard": False}))
        except (ConnectionError, RuntimeError) as error:
            where = f"--ray-address {cluster}: cannot connect to a Ray cluster there" if cluster else \
                "--executor ray: cannot start a local Ray instance"
            raise ValueError(f"{where} ({one_line(error)}); see docs/cluster.md") from None
    return ray


def progress_bar(items: Iterable, desc: str, unit: str, total: int, report: Optional[Callable[[int], None]] = None):
    """tqdm's bar over ``items``; in a Ray task (``report`` given) no bar: ``report(n)``, the items done so far."""
    if report is None:
        yield from tqdm(items, desc=desc, unit=unit, total=total)
        return
    for done, item in enumerate(items):
        report(done)
        yield item
    report(total)


class TaskProgress:
    """The driver's view of its tasks (a Ray actor): items done per task, and the worker pid of every attempt."""

    def __init__(self):
        self.done, self.attempts = {}, {}

    def started(self, task: int, pid: int) -> None:
        self.attempts.setdefault(task, []).append(pid)

    def report(self, task: int, done: int) -> None:
        self.done[task] = max(done, self.done.get(task, 0))  # a retried task starts again from its part's end

    def state(self) -> tuple:
        return self.done, self.attempts


class Reporter:
    """What a task hands to ``progress_bar``: its count, sent to ``TaskProgress`` every ``REPORT_SECONDS``."""

    def __init__(self, progress, task: int):
        self.progress, self.task, self.last = progress, task, 0.0

    def __call__(self, done: int) -> None:
        if time.monotonic() - self.last >= REPORT_SECONDS:
            self.progress.report.remote(self.task, done)
            self.last = time.monotonic()


def run_part(step: Callable, items: list, part: Path, shard: tuple, device: str, progress, options: dict) -> List[str]:
    """One Ray task: ``step`` (a module's ``*_part`` function) over the items of ``shard`` into ``part``; its failures."""
    import ray

    # waited for, so that an attempt killed at once is still known to the driver as an attempt
    ray.get(progress.started.remote(shard[0], os.getpid()))
    return step(items, part, shard, device, Reporter(progress, shard[0]), **options)


def parts_dir(output: Path) -> Path:
    """Where the Ray tasks of ``output`` write their parts (beside it: the same storage)."""
    return Path(output).with_name(Path(output).name + ".parts")


def task_count(items: int, task_size: int) -> int:
    return max(1, math.ceil(items / task_size))


def one_line(error: Exception) -> str:
    """A Ray error as one line: the task's own exception, else the first line of Ray's message."""
    cause = getattr(error, "cause", None)
    text = f"{type(cause).__name__}: {cause}" if cause is not None else str(error)
    return (text.strip().splitlines() or [type(error).__name__])[0]


def run_tasks(executor: Executor, step: Callable, items: list, parts: List[Path], unit: str, device: str,
              options: dict, on_done: Callable[[int], None], key: Callable = lambda item: item) -> List[str]:
    """Run ``step`` as one Ray task per part (the shards of ``items``; ``key``: an item's name, as the step shards
    them) with one progress bar, calling ``on_done(i)`` as task i ends; the failures (items the steps list, and whole
    tasks that failed after Ray's retries)."""
    ray = connect(executor.address)
    count = len(parts)
    gpus = 1 if str(device).startswith("cuda") or (device == "auto" and ray.cluster_resources().get("GPU")) else 0
    progress = ray.remote(num_cpus=0)(TaskProgress).remote()
    task = ray.remote(run_part).options(num_cpus=1, num_gpus=gpus, max_retries=MAX_RETRIES)
    shared = ray.put(items)  # once in the object store, not once per task
    sizes = {i: len(in_shard(items, (i, count), key)) for i in range(1, count + 1)}
    pending = {task.remote(step, shared, part, (i, count), device, progress, options): i
               for i, part in enumerate(parts, 1)}
    failures, finished = [], {}
    try:
        with tqdm(total=len(items), desc=f"{unit} on Ray ({count} tasks)", unit=unit) as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=REPORT_SECONDS)
                for ref in ready:
                    index = pending.pop(ref)
                    finished[index] = sizes[index]
                    try:
                        failures += ray.get(ref)
                    except ray.exceptions.RayError as error:
                        failures.append(f"task {index}/{count} ({sizes[index]} {unit}): {one_line(error)}")
                    on_done(index)
                done, attempts = ray.get(progress.state.remote())
                bar.update(sum({**done, **finished}.values()) - bar.n)
    finally:
        for ref in pending:  # Ctrl-C or an error here: the tasks stop too (their parts are kept)
            ray.cancel(ref, force=True)
        ray.kill(progress)
    for index, pids in sorted(attempts.items()):
        if len(pids) > 1:
            logger.warning(f"task {index}/{count} ran {len(pids)} times (worker pids {', '.join(map(str, pids))}): "
                           "its worker died and Ray retried it, going on from its part")
    return failures


def plan_parts(output: Path, items: int, executor: Executor, unit: str, suffix: str = ".h5") -> List[Path]:
    """The part files of a Ray run over ``items`` into ``output``: in a fresh ``<output>.parts/`` (a driver that
    died left the parts of another split there; what its tasks had finished is in the output already)."""
    folder = parts_dir(output)
    remove(folder)
    folder.mkdir(parents=True)
    count = task_count(items, executor.task_size or TASK_SIZES[unit])
    return [folder / f"{i}-of-{count}{suffix}" for i in range(1, count + 1)]


def run_in_parts(executor: Executor, writer: H5Writer, step: Callable, items: list, unit: str, device: str,
                 options: dict, key: Callable = lambda item: item) -> List[str]:
    """Run ``step`` over ``items`` as Ray tasks, each into its own part; each part, once ``fusion.merge``'s checks
    pass (the output's recipe; at the end, every shard there), becomes a chunk of ``writer``'s output as its
    task ends, so that a driver killed meanwhile loses only the running tasks' work. The failures."""
    parts = plan_parts(writer.path, len(items), executor, unit)
    shards = {}

    def add_part(index: int) -> None:
        part = parts[index - 1]
        if not part.is_file():  # the task failed before its writer could finish the part
            return
        recipe, (attrs,) = merge.check_parts([part], partial=True)
        if fingerprint(recipe) != fingerprint(writer.recipe):
            raise ValueError(f"{part} was made differently from {writer.path} "
                             f"({'; '.join(differences(writer.recipe, recipe)[:3])})")
        shards[part] = attrs.get(SHARD_ATTR)
        chunk = writer.new_chunk()
        os.replace(part, chunk)
        with h5py.File(chunk, "r+") as fd:  # a chunk of the whole output, no longer one shard
            fd.attrs.pop(SHARD_ATTR, None)
        writer.add_chunk(chunk)

    failures = run_tasks(executor, step, items, parts, unit, device, options, add_part, key)
    if not failures:
        merge.check_complete(shards)
    remove(parts_dir(writer.path))
    return failures

"""One writer per output: an exclusive ``fcntl.flock`` on ``<output>.lock`` for the writer's whole run.

A second writer waits, saying once who holds the lock (pid, host, command, start, which the holder
writes into the lock file), or with ``--no-wait`` stops with one line naming it (exit 2). Readers wait
the same way, then need no lock: a finished file is only ever replaced whole (a rename). Lock files
stay: deleting one would let two processes lock two different files of the same name.
"""

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Dict

logger = logging.getLogger("fusion")

WAIT = True  # False (``--no-wait``): an output held by another process is an error, not a wait
_held: Dict[Path, int] = {}  # outputs this process writes -> the descriptor of their lock file


class OutputLocked(ValueError):
    """Another process writes the output, and this one was told not to wait (``--no-wait``)."""


def lock_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".lock")


def holder(lock: Path) -> str:
    """Who holds ``lock``, as its holder recorded it."""
    try:
        found = json.loads(lock.read_text())
        return f"pid {found['pid']} on {found['host']} ({found['command']}, since {found['since']})"
    except (OSError, ValueError, KeyError):
        return "another process"


def _acquire(path: Path, mode: int) -> int:
    """A descriptor of ``path``'s lock file, locked in ``mode``; waits (saying so once) or, without WAIT, raises."""
    lock = lock_path(path)
    if mode == fcntl.LOCK_EX:
        lock.parent.mkdir(parents=True, exist_ok=True)
    # a reader opens it read-only: outputs on a read-only disk can be read
    fd = os.open(lock, (os.O_RDWR | os.O_CREAT if mode == fcntl.LOCK_EX else os.O_RDONLY) | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        who = holder(lock)
        if not WAIT:
            os.close(fd)
            raise OutputLocked(f"{path}: being written by {who}; wait for it to finish, or leave out --no-wait") from None
        logger.warning(f"{path}: being written by {who}; waiting for it to finish")
        fcntl.flock(fd, mode)
    return fd


@contextlib.contextmanager
def hold(path: Path):
    """Be the only writer of ``path`` while the block runs."""
    key = Path(path).resolve()
    if key in _held:
        raise RuntimeError(f"{path}: this process writes it already")
    fd = _acquire(path, fcntl.LOCK_EX)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join(sys.argv),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        _held[key] = fd
        yield
    finally:
        _held.pop(key, None)
        os.close(fd)  # releases the lock


def wait_for_writer(path: Path) -> None:
    """Return once no other process writes ``path`` (at once when none does)."""
    if Path(path).resolve() in _held or not lock_path(path).exists():
        return
    os.close(_acquire(path, fcntl.LOCK_SH))


class NoWait(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        global WAIT
        WAIT = False
        setattr(namespace, self.dest, True)


def add_no_wait(parser: argparse.ArgumentParser) -> None:
    """``--no-wait``: stop with one line (exit 2) instead of waiting for another process writing an output."""
    parser.add_argument("--no-wait", action=NoWait, nargs=0, default=False,
                        help="when another process writes an output this command needs, stop (exit 2) instead of waiting")

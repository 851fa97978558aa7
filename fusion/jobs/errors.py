"""Batch jobs: continue past bad items, report them at the end; CLIs print one clear line."""

import argparse
import logging
import signal
import sys
from typing import Callable, List, Optional

from tqdm import tqdm

logger = logging.getLogger("fusion")


class BatchError(RuntimeError):
    """Some items of a batch failed; everything else was computed and saved."""

    def __init__(self, what: str, failures: List[str], total: int):
        self.failures = failures
        lines = "\n".join(f"  {f}" for f in failures)
        super().__init__(f"{len(failures)} of {total} {what} failed:\n{lines}")


class CommandParser(argparse.ArgumentParser):
    """argparse for fusion's command lines: help texts as written, a usage mistake in one line (exit 2).

    ``prog``: the command as a user types it (default: ``python <the script as run>``).
    """

    def __init__(self, prog: Optional[str] = None, description: Optional[str] = None, **options):
        options.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(prog=prog or f"python {sys.argv[0]}", description=description, **options)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def finish_batch(what: str, failures: List[str], total: int, raise_on_failure: bool) -> None:
    if not failures:
        return
    error = BatchError(what, failures, total)
    if raise_on_failure:
        raise error
    logger.warning(str(error))


def interrupt_message(bars: List[tuple]) -> str:
    """What Ctrl-C stopped (the newest progress bar open then: its name, items done and total) and how to go on."""
    if not bars:
        return "interrupted; run the same command to resume"
    _, name, done, total = max(bars)
    return f"interrupted: {done} of {total if total is not None else '?'} done ({name}); run the same command to resume"


def run_cli(main: Callable[[], object]) -> None:
    """Run a CLI entry point; expected errors become one line on stderr and a non-zero exit.

    Ctrl-C is one line too (exit 130): every output is written to resume, so it says how far the
    running step got and that the same command goes on from there.
    """
    open_bars: List[tuple] = []

    def on_interrupt(signum, frame):
        # the bars close while the interrupt unwinds: note them before it does
        open_bars[:] = [(bar.start_t, bar.desc, bar.n, bar.total) for bar in list(tqdm._instances)]
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        main()
    except KeyboardInterrupt:
        print(f"\n{interrupt_message(open_bars)}", file=sys.stderr)
        sys.exit(130)
    except BatchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

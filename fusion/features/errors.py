"""Batch jobs: continue past bad items, report them at the end; CLIs print one clear line."""

import argparse
import logging
import sys
from typing import Callable, List, Optional

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


def run_cli(main: Callable[[], object]) -> None:
    """Run a CLI entry point; expected errors become one line on stderr and a non-zero exit."""
    try:
        main()
    except BatchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

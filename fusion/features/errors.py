"""Batch jobs: continue past bad items, report them at the end; CLIs print one clear line."""

import logging
import sys
from typing import Callable, List

logger = logging.getLogger("fusion")


class BatchError(RuntimeError):
    """Some items of a batch failed; everything else was computed and saved."""

    def __init__(self, what: str, failures: List[str], total: int):
        self.failures = failures
        lines = "\n".join(f"  {f}" for f in failures)
        super().__init__(f"{len(failures)} of {total} {what} failed:\n{lines}")


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

"""``python -m fusion.eval``: see fusion.benchmarks.cli."""
from fusion.benchmarks.cli import main, run_cli

if __name__ == "__main__":
    run_cli(main)

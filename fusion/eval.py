"""``python -m fusion.eval``: see fusion.evaluation.cli."""
from fusion.evaluation.cli import main, run_cli

if __name__ == "__main__":
    run_cli(main)

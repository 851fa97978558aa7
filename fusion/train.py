"""``python -m fusion.train``: see fusion.training.trainer."""
from fusion.training.trainer import main, run_cli

if __name__ == "__main__":
    run_cli(main)

"""``python -m fusion.ablate``: see fusion.training.ablate."""
from fusion.training.ablate import main, run_cli

if __name__ == "__main__":
    run_cli(main)

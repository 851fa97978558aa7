"""``python -m fusion.extract``: see fusion.features.extract."""
from fusion.features.extract import cli, run_cli

if __name__ == "__main__":
    run_cli(cli)

"""``python -m fusion.match``: see fusion.features.match."""
from fusion.features.match import cli, run_cli

if __name__ == "__main__":
    run_cli(cli)

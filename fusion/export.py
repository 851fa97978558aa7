"""``python -m fusion.export``: see fusion.features.export."""
from fusion.features.export import cli, run_cli

if __name__ == "__main__":
    run_cli(cli)

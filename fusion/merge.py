"""``python -m fusion.merge``: see fusion.features.merge."""
from fusion.features.merge import cli, run_cli

if __name__ == "__main__":
    run_cli(cli)

"""``python -m fusion.merge``: see fusion.jobs.merge."""
from fusion.jobs.merge import cli, run_cli

if __name__ == "__main__":
    run_cli(cli)

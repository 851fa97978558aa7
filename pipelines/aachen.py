"""Aachen Day-Night (v1.1 or v1.0) localization, writing a visuallocalization.net result file.

    python pipelines/aachen.py --dataset datasets/aachen_v1.1 --outputs outputs/aachen \\
        [--feature fused_xfeat] [--matcher xfeat_mnn|lighterglue] [--version 1.1|1.0] [--pairs FILE]
"""

from pathlib import Path

from fusion.jobs.errors import run_cli
from fusion.localization import pipeline, scenes
from fusion.localization.pipeline import pipeline_parser


def main(argv=None):
    parser = pipeline_parser(__doc__, "outputs/aachen")
    parser.add_argument("--dataset", type=Path, default=Path("datasets/aachen_v1.1"))
    parser.add_argument("--version", choices=("1.1", "1.0"), default="1.1")
    args = parser.parse_args(argv)
    scene = scenes.aachen(args.dataset, args.version, args.pairs)
    out = pipeline.run_from_args(scene, args)
    print(f"results for visuallocalization.net: {out['results']}\nreport: {out['report_html']}")


if __name__ == "__main__":
    run_cli(main)

"""RobotCar Seasons localization; result names carry the camera (rear/xxx.jpg) as the benchmark expects.

    python pipelines/robotcar.py --dataset datasets/robotcar --outputs outputs/robotcar \\
        [--feature fused_xfeat] [--matcher xfeat_mnn|lighterglue] [--pairs FILE]
"""

from pathlib import Path

from fusion.jobs.errors import run_cli
from fusion.localization import pipeline, scenes
from fusion.localization.pipeline import pipeline_parser


def main(argv=None):
    parser = pipeline_parser(__doc__, "outputs/robotcar")
    parser.add_argument("--dataset", type=Path, default=Path("datasets/robotcar"))
    args = parser.parse_args(argv)
    scene = scenes.robotcar(args.dataset, args.pairs)
    out = pipeline.run_from_args(scene, args)
    print(f"results for visuallocalization.net: {out['results']}\nreport: {out['report_html']}")


if __name__ == "__main__":
    run_cli(main)

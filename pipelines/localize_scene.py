"""Localize the queries of any scene with a COLMAP reference model (poses known, points optional).

    python pipelines/localize_scene.py --images DIR --reference MODEL --queries LIST --outputs DIR [--gt MODEL]

LIST holds ``name MODEL width height params...`` lines, or bare names of reference-model images
(those are held out of the reference and use its intrinsics). --gt is a COLMAP model or a
``name qw qx qy qz tx ty tz`` file; with it, recall and median errors are printed and saved.
"""

from pathlib import Path

from fusion.features.errors import run_cli
from fusion.localization import pipeline, scenes
from fusion.localization.pipeline import pipeline_options, pipeline_parser


def main(argv=None):
    parser = pipeline_parser(__doc__, "outputs/scene")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True, help="COLMAP model with reference poses")
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--gt", type=Path, help="ground-truth query poses")
    args = parser.parse_args(argv)
    scene = scenes.generic(args.images, args.reference, args.queries, args.gt, args.pairs)
    out = pipeline.run(scene, args.outputs, **pipeline_options(args))
    print(f"results: {out['results']}")
    for name, errors in out.get("report", {}).get("per_query", {}).items():
        print(f"{name}: {errors['position_m']:.4f} m, {errors['rotation_deg']:.3f} deg")
    print(f"report: {out['report_html']}")


if __name__ == "__main__":
    run_cli(main)

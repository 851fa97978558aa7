"""Localize the queries of any scene with a COLMAP reference model (poses known, points optional).

    python pipelines/localize_scene.py --images DIR --reference MODEL --queries LIST --outputs DIR [--gt MODEL]

LIST holds ``name MODEL width height params...`` lines, or bare names (relative to --images): a
reference-model image is held out of the reference and keeps its intrinsics; a new photo takes
them from its EXIF focal length or, without one, from its size (focal 1.2 x the longest side,
as COLMAP guesses). MODEL can be a map built by pipelines/reconstruct.py (OUTPUTS/sfm), with
--images the folder it was built from. --gt is a COLMAP model or a ``name qw qx qy qz tx ty tz``
file; with it, recall and median errors are printed and saved.
"""

from pathlib import Path

from fusion.features.errors import run_cli
from fusion.localization import pipeline, scenes
from fusion.localization.pipeline import pipeline_parser


def main(argv=None):
    parser = pipeline_parser(__doc__, "outputs/scene")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True,
                        help="COLMAP model with reference poses (e.g. OUTPUTS/sfm of reconstruct.py)")
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--gt", type=Path, help="ground-truth query poses")
    args = parser.parse_args(argv)
    scene = scenes.generic(args.images, args.reference, args.queries, args.gt, args.pairs)
    out = pipeline.run_from_args(scene, args)
    print(f"results: {out['results']}")
    for name, errors in out.get("report", {}).get("per_query", {}).items():
        print(f"{name}: {errors['position_m']:.4f} m, {errors['rotation_deg']:.3f} deg")
    print(f"report: {out['report_html']}")


if __name__ == "__main__":
    run_cli(main)

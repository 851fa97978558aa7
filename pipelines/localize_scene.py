"""Localize query photos in any scene with a COLMAP reference model (poses known, points optional).

    python pipelines/localize_scene.py --images MAP_PHOTOS --reference MODEL --queries DIR_OR_LIST --outputs DIR [--gt MODEL]

--queries is a folder of photos (anywhere; outside MAP_PHOTOS they are named after their folder,
``query/night.jpg``, as in hloc's demo) or a list of ``name MODEL width height params...`` lines
or bare names relative to --images (a reference-model image is then held out of the reference and
keeps its intrinsics). A new photo takes its intrinsics from its EXIF focal length or, without one,
from its size, and PnP then estimates its focal length. MODEL can be a map built by
pipelines/reconstruct.py (OUTPUTS/sfm), with --images the folder it was built from: in the same
--outputs, its features are re-used and its 3D points taken as they are. --gt is a COLMAP model or a
``name qw qx qy qz tx ty tz`` file; with it, recall and median errors are printed and saved.
"""

from pathlib import Path

from fusion.jobs.errors import run_cli
from fusion.localization import pipeline, scenes
from fusion.localization.pipeline import pipeline_parser


def main(argv=None):
    parser = pipeline_parser(__doc__, "outputs/scene")
    parser.add_argument("--images", type=Path, required=True, help="the map's photos (the reference model's images)")
    parser.add_argument("--reference", type=Path, required=True,
                        help="COLMAP model with reference poses (e.g. OUTPUTS/sfm of reconstruct.py)")
    parser.add_argument("--queries", type=Path, required=True, help="folder of query photos, or a query list")
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

"""Build a map (a COLMAP model) from unposed photos with fusion's features and pycolmap's mapper.

    python pipelines/reconstruct.py --images DIR --outputs OUTPUTS [--feature fused_xfeat] [--matcher xfeat_mnn_strict]
        [--pairs auto|exhaustive|retrieval:K|FILE] [--camera-mode auto|single|per_image]
        [--camera-model SIMPLE_RADIAL] [--gt MODEL]

Writes OUTPUTS/sfm/ (the largest model, COLMAP binary; every model in sfm/models/, the database
in sfm/database.db), OUTPUTS/reconstruction.png and OUTPUTS/reconstruction.html. Intrinsics come from EXIF when present,
otherwise from the image size (focal 1.2 x the longest side), and are refined by the mapper.
--pairs auto matches all pairs up to 40 images, else each image with its 20 nearest by VLAD
retrieval. --camera-mode auto shares one camera among photos of the same size and EXIF camera and
focal length. Unreadable images are skipped and listed. With --gt (a COLMAP model of the same
images), the cameras are Sim(3)-aligned to it and their errors printed. Then localize new photos:

    python pipelines/localize_scene.py --images DIR --reference OUTPUTS/sfm --queries LIST --outputs OUTPUTS
"""

import json
import time
from pathlib import Path

from fusion.features import extract, match
from fusion.jobs.errors import CommandParser, run_cli
from fusion.jobs.executor import add_executor_args, executor_from_args
from fusion.localization import pipeline, reconstruction
from fusion.localization.reference_models import load_model
from fusion.store.locks import add_no_wait


def main(argv=None):
    parser = CommandParser(description=__doc__)
    parser.add_argument("--images", type=Path, required=True, help="folder of photos (searched recursively)")
    parser.add_argument("--outputs", type=Path, required=True)
    parser.add_argument("--image-list", type=Path, help="only these images (names relative to --images)")
    parser.add_argument("--feature", default="fused_xfeat", choices=sorted(extract.confs))
    parser.add_argument("--matcher", default=pipeline.DEFAULT_MATCHERS["mapping"], choices=sorted(match.confs),
                        help="default: mutual nearest neighbours above XFeat's own similarity threshold, 0.82")
    parser.add_argument("--checkpoint", type=Path, help="fused checkpoint for fused_xfeat")
    parser.add_argument("--max-keypoints", type=int)
    parser.add_argument("--resize-max", type=int, help="longest image side for extraction")
    parser.add_argument("--pairs", default="auto", help="auto, exhaustive, retrieval:K or a pairs file")
    parser.add_argument("--camera-mode", default="auto", choices=reconstruction.CAMERA_MODES)
    parser.add_argument("--camera-model", default="SIMPLE_RADIAL", help="COLMAP camera model")
    parser.add_argument("--gt", type=Path, help="ground-truth COLMAP model of the same images")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N] for features and matching")
    parser.add_argument("--verbose", action="store_true", help="show COLMAP's log")
    parser.add_argument("--overwrite", action="store_true", help="recompute finished steps")
    add_executor_args(parser)
    add_no_wait(parser)
    args = parser.parse_args(argv)
    truth = load_model(args.gt) if args.gt else None
    start = time.time()
    out = reconstruction.run(args.images, args.outputs, args.feature, args.matcher, args.pairs, args.camera_mode,
                             args.image_list, args.checkpoint, args.max_keypoints, args.resize_max,
                             args.camera_model, overwrite=args.overwrite, verbose=args.verbose, device=args.device,
                             executor=executor_from_args(args))
    print(f"reconstruction: {reconstruction.describe(out['statistics'])}\n"
          f"model:   {out['sfm']} (COLMAP binary)\npicture: {out['picture']}\nreport:  {out['report_html']}\n"
          f"time:    {time.time() - start:.1f} s")
    if truth is not None:
        report = reconstruction.compare_with_ground_truth(out["model"], truth)
        (args.outputs / "ground_truth_errors.json").write_text(json.dumps(report, indent=1))
        print(f"against {args.gt} (Sim(3)-aligned camera centres): {report['registered']} of "
              f"{report['in_ground_truth']} images, median position error {report['median_position_error']:.4f} "
              f"({100 * report['median_position_error_relative']:.2f}% of the {report['extent']:.2f} extent), max "
              f"{report['max_position_error']:.4f}; rotation error median {report['median_rotation_error_deg']:.3f} "
              f"deg, max {report['max_rotation_error_deg']:.3f} deg")
    if out["skipped"]:
        print(f"skipped {len(out['skipped'])} image(s) that could not be read:\n  " + "\n  ".join(out["skipped"]))
    if out["advice"]:
        print(f"warning: {out['advice']}")


if __name__ == "__main__":
    run_cli(main)

"""Evaluation suite.

    python -m fusion.eval homography --data ../shared/data/oxford_affine --feature fused_xfeat [--matcher xfeat_mnn]
    python -m fusion.eval wxbs --data ../shared/data/wxbs_dev --feature xfeat [--matcher lighterglue]
    python -m fusion.eval stability --data ../shared/data/camvid --split val [--checkpoint fused.pt]
    python -m fusion.eval relpose --pairs FILE(.txt|.npz|dir) --images DIR --feature xfeat [--matcher lighterglue]
    python -m fusion.eval efficiency [--features fused_xfeat xfeat xfeat_star sift]
    python -m fusion.eval table [--log outputs/eval_log.csv] [--benchmark homography] [--columns 'viewpoint/*' ...]
    python -m fusion.eval heatmap --image PATH --output PNG [--checkpoint fused.pt]   # default: the packaged head
    python -m fusion.eval curves --metrics outputs/<run>/metrics.csv --output PNG

Each benchmark prints its result as one JSON line (with config hash and git commit) and appends
it to the CSV log; ``table`` renders the log as markdown.
"""

from pathlib import Path

import numpy as np
import torch

from ..features import match
from ..features.xfeat import keypoint_heatmap, resize_to_multiple_of_32
from ..jobs.errors import CommandParser, run_cli
from ..store.io import read_image
from ..training.data.camvid import stability_cells
from . import efficiency, figures, homography, log, relpose, stability_classes, wxbs
from .adapters import numpy_extractor, numpy_matcher

DEFAULT_LOG = Path("outputs/eval_log.csv")


def heatmap_figure(image_path: Path, output: Path, checkpoint=None, max_keypoints: int = 2048, labels=None):
    """Keypoints, keypoint heat and stability (the packaged CamVid head, or a fused checkpoint's); with
    ``labels`` (a CamVid label map of the image), the labelled sky, trees, people and cars outlined."""
    image = np.round(read_image(image_path) * 255).astype(np.uint8)  # RGB
    extractor = numpy_extractor("fused_xfeat", max_keypoints, checkpoint)
    model = extractor.model
    features = extractor(image)
    tensor, _ = resize_to_multiple_of_32(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    with torch.inference_mode():
        maps = model.maps(tensor)
        cell_heat = torch.nn.functional.max_pool2d(keypoint_heatmap(maps["keypoint_logits"]), 8)
        cell_scores = (cell_heat * maps["reliability"])[0, 0].numpy()
        stability = model.fused.stability_weight(maps)[0, 0].numpy()
    true_classes = stability_cells(labels, image.shape[:2], cell=1) if labels else None
    return figures.plot_keypoints_heatmap(image, features["keypoints"], cell_scores, output, stability,
                                          true_classes=true_classes)


def main(argv=None):
    parser = CommandParser("python -m fusion.eval", __doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("homography", "wxbs", "relpose", "efficiency"):
        p = sub.add_parser(name)
        p.add_argument("--log", type=Path, default=DEFAULT_LOG)
        p.add_argument("--max-keypoints", type=int, default=4096)
        if name != "efficiency":
            p.add_argument("--feature", default="fused_xfeat")
            p.add_argument("--matcher", default="xfeat_mnn", choices=sorted(match.confs))
            p.add_argument("--checkpoint", type=Path)
    sub.choices["homography"].add_argument("--data", type=Path, required=True)
    sub.choices["wxbs"].add_argument("--data", type=Path, required=True, help="WxBS: <category>/<pair>/01.jpg 02.jpg corrs.txt")
    sub.choices["relpose"].add_argument("--pairs", type=Path, required=True)
    sub.choices["relpose"].add_argument("--images", type=Path, required=True)
    sub.choices["efficiency"].add_argument("--features", nargs="+", default=["fused_xfeat", "xfeat", "xfeat_star", "sift"])
    sub.choices["efficiency"].add_argument("--runs", type=int, default=10)
    stability = sub.add_parser("stability", help="stability-class accuracy of a head on labelled frames")
    stability.add_argument("--data", type=Path, required=True, help="DIR/<split>/*.jpg, DIR/<split>annot/*.png")
    stability.add_argument("--split", default="val")
    stability.add_argument("--checkpoint", type=Path, help="fused checkpoint (default: the packaged CamVid head, "
                           "licence CC BY-NC 4.0)")
    stability.add_argument("--log", type=Path, default=DEFAULT_LOG)
    table = sub.add_parser("table")
    table.add_argument("--log", type=Path, default=DEFAULT_LOG)
    table.add_argument("--benchmark", help="only this benchmark's runs (homography, relpose, efficiency)")
    table.add_argument("--columns", nargs="+", metavar="COLUMN",
                       help="result or config columns instead of the defaults: names, patterns ('viewpoint/*'), or all")
    heat = sub.add_parser("heatmap")
    heat.add_argument("--image", type=Path, required=True)
    heat.add_argument("--output", type=Path, required=True)
    heat.add_argument("--checkpoint", type=Path, help="fused checkpoint (default: the packaged CamVid head)")
    heat.add_argument("--max-keypoints", type=int, default=2048, help="keypoints drawn on the photo")
    heat.add_argument("--labels", type=Path, help="the image's CamVid label map: outline its sky, trees, people, cars")
    curves = sub.add_parser("curves")
    curves.add_argument("--metrics", type=Path, required=True)
    curves.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "table":
        rows = [r for r in log.read_log(args.log) if args.benchmark in (None, r["benchmark"])]
        if not rows:
            raise ValueError(f"{args.log}: no {args.benchmark} runs logged")
        print(log.markdown_table(rows, args.columns))
    elif args.command == "heatmap":
        print(heatmap_figure(args.image, args.output, args.checkpoint, args.max_keypoints, args.labels))
    elif args.command == "curves":
        print(figures.plot_training_curves(args.metrics, args.output))
    elif args.command == "stability":
        log.record("stability", {"data": str(args.data), "split": args.split,
                                 "checkpoint": str(args.checkpoint) if args.checkpoint else None},
                   stability_classes.evaluate(args.data, args.split, args.checkpoint), args.log)
    elif args.command == "efficiency":
        rows = efficiency.measure(args.features, runs=args.runs, max_keypoints=args.max_keypoints)
        log.record("efficiency", {"features": args.features, "threads": 2, "runs": args.runs},
                   {f"{r['extractor']}@{r['size']}": r for r in rows}, args.log)
        print(efficiency.markdown(rows))
    else:
        extractor = numpy_extractor(args.feature, args.max_keypoints, args.checkpoint)
        config = {"feature": args.feature, "matcher": args.matcher, "max_keypoints": args.max_keypoints,
                  "checkpoint": str(args.checkpoint) if args.checkpoint else None}
        if args.command == "homography":
            result = homography.evaluate(homography.read_sequences(args.data), extractor, numpy_matcher(args.matcher))
            config["data"] = str(args.data)
        elif args.command == "wxbs":
            result = wxbs.evaluate(wxbs.read_pairs(args.data), extractor, numpy_matcher(args.matcher))
            config["data"] = str(args.data)
        else:
            result = relpose.evaluate(relpose.read_pairs(args.pairs), args.images, extractor,
                                      numpy_matcher(args.matcher))
            config["pairs"] = str(args.pairs)
        log.record(args.command, config, result, args.log)


if __name__ == "__main__":
    run_cli(main)

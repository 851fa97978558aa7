"""Localize the embedded demo scene (a generated street with day and night queries) on a fresh machine.

    python pipelines/demo.py [--outputs outputs/demo] [--feature fused_xfeat] [--matcher xfeat_mnn]

Writes outputs/demo/dataset (Aachen layout), the result file, recall table (JSON), matches.png,
reprojection.png, topdown.png and report.html (open it in a browser; it works offline).
"""

import time
from pathlib import Path

from fusion.features import extract, match
from fusion.jobs.errors import CommandParser, run_cli
from fusion.jobs.executor import add_executor_args, executor_from_args
from fusion.localization import demo_scene, pipeline
from fusion.store.locks import add_no_wait


def main(argv=None):
    parser = CommandParser(description=__doc__)
    parser.add_argument("--outputs", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--feature", default="fused_xfeat", choices=sorted(extract.confs))
    parser.add_argument("--matcher", default=pipeline.DEFAULT_MATCHERS["localization"], choices=sorted(match.confs))
    parser.add_argument("--num-db", type=int, default=20)
    parser.add_argument("--num-day", type=int, default=6)
    parser.add_argument("--num-night", type=int, default=4)
    parser.add_argument("--overwrite", action="store_true", help="regenerate the scene and recompute everything")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    add_executor_args(parser)
    add_no_wait(parser)
    args = parser.parse_args(argv)
    start = time.time()
    out = demo_scene.run(args.outputs, args.feature, args.matcher, args.num_db, args.num_day, args.num_night,
                         overwrite=args.overwrite, device=args.device, executor=executor_from_args(args))
    print(f"results:  {out['results']}\nrecall:   {out['report_path']}\nmatches:  {out['matches_png']}\n"
          f"reprojection: {out['reprojection_png']}\ntop-down: {out['topdown']}\nreport:   {out['report_html']}\n"
          f"time:     {time.time() - start:.1f} s")


if __name__ == "__main__":
    run_cli(main)

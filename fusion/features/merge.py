"""Join the parts of a sharded extraction or matching into one file.

``python -m fusion.merge --output FEATURES.h5 part1.h5 part2.h5 ...``

The parts (``fusion.extract ... --shard I/N``, ``fusion.match ... --shard I/N``) must have been made
the same way (same recipe), and all N of them must be given (``--partial`` merges fewer); the result
is their concatenation, and equals what one unsharded run writes. It records the parts' fingerprints:
merging the same parts again leaves it as it is, and any other set of parts (one made again, more
of them) makes it again.
"""

import json
import logging
from pathlib import Path
from typing import List

import h5py

from . import locks
from .errors import CommandParser, run_cli
from .h5 import write_concatenation
from .provenance import (
    REVISION_ATTR,
    check_reusable,
    differences,
    fingerprint,
    input_fingerprint,
    new_revision,
    read_recipe,
    recipe_attrs,
)
from .runtime import SHARD_ATTR, parse_shard

logger = logging.getLogger("fusion")

REQUIRED = {"features": ("keypoints", "descriptors"), "matches": ("matches0",)}
PARTS_ATTR = "fusion_parts"  # the fingerprints of the parts a merged file concatenates


def check_complete(parts: List[Path]) -> None:
    """Every shard 1..N of one split among ``parts``, or an error naming the missing ones."""
    shards = {}
    for part in parts:
        with h5py.File(part, "r") as fd:
            shards[part] = fd.attrs.get(SHARD_ATTR)
    if not any(shards.values()):
        return  # whole files (e.g. two extractions of different images): nothing to check
    unsharded = [str(part) for part, shard in shards.items() if not shard]
    if unsharded:
        raise ValueError(f"{', '.join(unsharded)}: not made with --shard, unlike the other parts")
    parsed = [parse_shard(shard) for shard in shards.values()]
    splits = {count for _, count in parsed}
    if len(splits) > 1:
        raise ValueError(f"the parts come from splits into {sorted(splits)} shards; give the parts of one split")
    count = splits.pop()
    missing = sorted(set(range(1, count + 1)) - {index for index, _ in parsed})
    if missing:
        raise ValueError(f"parts {', '.join(f'{i}/{count}' for i in missing)} are missing; give all {count} "
                         "parts, or --partial to merge only these")


def main(output: Path, parts: List[Path], overwrite: bool = False, partial: bool = False) -> Path:
    parts = [Path(part) for part in parts]
    if not parts:
        raise ValueError("give the part files to merge")
    recipes = []
    for part in parts:
        if not part.is_file():
            raise FileNotFoundError(f"{part}: part file not found")
        recipe = read_recipe(part)
        if recipe is None:
            raise ValueError(f"{part}: not a features or matches file written by fusion (no recipe); cannot check it")
        if recipe.get("kind") not in REQUIRED:
            raise ValueError(f"{part}: a {recipe.get('kind')} file; only features and matches (--shard parts) are merged")
        recipes.append(recipe)
    for part, recipe in zip(parts[1:], recipes[1:]):
        if fingerprint(recipe) != fingerprint(recipes[0]):
            changes = differences(recipes[0], recipe)
            raise ValueError(f"{part} was made differently from {parts[0]} ({'; '.join(changes[:3])}); "
                             "only parts of one run can be merged")
    if not partial:
        check_complete(parts)
    output, recipe = Path(output), recipes[0]
    parts_made = json.dumps(sorted(input_fingerprint(part) for part in parts))
    with locks.hold(output):
        if not overwrite and check_reusable(output, recipe):
            with h5py.File(output, "r") as fd:
                if fd.attrs.get(PARTS_ATTR) == parts_made:
                    logger.info(f"Merge: {output} already holds these parts")
                    return output
        attrs = {**recipe_attrs(recipe), REVISION_ATTR: new_revision(), PARTS_ATTR: parts_made}
        write_concatenation(output, parts, REQUIRED[recipe["kind"]], attrs)
    logger.info(f"Merge: {len(parts)} parts into {output}")
    return output


def cli(argv=None):
    parser = CommandParser("python -m fusion.merge", __doc__)
    parser.add_argument("--output", type=Path, required=True, help="the merged .h5 to write")
    parser.add_argument("parts", type=Path, nargs="+", help="the part files")
    parser.add_argument("--overwrite", action="store_true", help="start --output afresh")
    parser.add_argument("--partial", action="store_true", help="merge the parts given even if some of the N are missing")
    locks.add_no_wait(parser)
    args = parser.parse_args(argv)
    main(args.output, args.parts, args.overwrite, args.partial)


if __name__ == "__main__":
    run_cli(cli)

"""Join the parts of a sharded extraction or matching into one file.

``python -m fusion.merge --output FEATURES.h5 part1.h5 part2.h5 ...``

The parts (``fusion.extract ... --shard I/N``, ``fusion.match ... --shard I/N``) must have been made
the same way (same recipe), and all N of them must be given (``--partial`` merges fewer); the result
is their concatenation, and equals what one unsharded run writes. Its revision is a hash of the parts'
fingerprints: merging the same parts again leaves it as it is, and any other set of parts (one made
again, more of them) makes it again.
"""

import logging
from pathlib import Path
from typing import Dict, List, Tuple

from ..store import locks
from ..store.h5 import write_concatenation
from ..store.provenance import REVISION_ATTR, check_reusable, differences, fingerprint, read_recipe, recipe_attrs, root_attrs
from .errors import CommandParser, run_cli
from .runtime import SHARD_ATTR, parse_shard

logger = logging.getLogger("fusion")

REQUIRED = {"features": ("keypoints", "descriptors"), "matches": ("matches0",)}


def check_complete(shards: Dict[Path, str]) -> None:
    """Every shard 1..N of one split among the parts (part -> its ``SHARD_ATTR``), or an error naming the missing ones."""
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


def check_parts(parts: List[Path], partial: bool = False) -> Tuple[dict, List[dict]]:
    """The recipe the parts share and each part's root attributes, or an error: a part missing, not fusion's, made
    differently from the first, or (unless ``partial``) a shard of the split absent."""
    if not parts:
        raise ValueError("give the part files to merge")
    recipes, attrs = [], []
    for part in parts:
        if not part.is_file():
            raise FileNotFoundError(f"{part}: part file not found")
        recipe = read_recipe(part)
        if recipe is None:
            raise ValueError(f"{part}: not a features or matches file written by fusion (no recipe); cannot check it")
        if recipe.get("kind") not in REQUIRED:
            raise ValueError(f"{part}: a {recipe.get('kind')} file; only features and matches (--shard parts) are merged")
        recipes.append(recipe)
        attrs.append(root_attrs(part))
    for part, recipe in zip(parts[1:], recipes[1:]):
        if fingerprint(recipe) != fingerprint(recipes[0]):
            changes = differences(recipes[0], recipe)
            raise ValueError(f"{part} was made differently from {parts[0]} ({'; '.join(changes[:3])}); "
                             "only parts of one run can be merged")
    if not partial:
        check_complete({part: found.get(SHARD_ATTR) for part, found in zip(parts, attrs)})
    return recipes[0], attrs


def main(output: Path, parts: List[Path], overwrite: bool = False, partial: bool = False) -> Path:
    parts = [Path(part) for part in parts]
    recipe, attrs = check_parts(parts, partial)
    output = Path(output)
    revision = fingerprint({"parts": sorted(str(found.get(REVISION_ATTR)) for found in attrs)})  # of one recipe
    with locks.hold(output):
        if not overwrite and check_reusable(output, recipe) and root_attrs(output).get(REVISION_ATTR) == revision:
            logger.info(f"Merge: {output} already holds these parts")
            return output
        write_concatenation(output, parts, REQUIRED[recipe["kind"]], {**recipe_attrs(recipe), REVISION_ATTR: revision})
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

"""Join the parts of a sharded extraction or matching into one file.

``python -m fusion.merge --output FEATURES.h5 part1.h5 part2.h5 ...``

The parts (``fusion.extract ... --shard I/N``, ``fusion.match ... --shard I/N``) must have been made
the same way (same recipe), and all N of them must be given (``--partial`` merges fewer); the result
holds every group once and equals what one unsharded run writes. Merging is resumable: groups
already in the output are skipped.
"""

import hashlib
import logging
from pathlib import Path
from typing import List

import h5py
from tqdm import tqdm

from .errors import CommandParser, run_cli
from .h5 import H5Writer, complete_keys
from .provenance import REVISION_ATTR, differences, fingerprint, read_recipe
from .runtime import SHARD_ATTR, parse_shard

logger = logging.getLogger("fusion")

REQUIRED = {"features": ("keypoints", "descriptors"), "matches": ("matches0",)}
MERGED_ATTR = "fusion_merged"  # + a digest of a part's path: that part's revision when it was last merged


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
    required = REQUIRED[recipes[0]["kind"]]
    writer = H5Writer(output, required, recipes[0], overwrite)
    copied = 0
    with writer:
        for part in parts:
            merged_as = f"{MERGED_ATTR}:{hashlib.sha256(str(part.resolve()).encode()).hexdigest()[:16]}"
            with h5py.File(part, "r") as source:
                revision = str(source.attrs.get(REVISION_ATTR, ""))
                recorded = writer.open().attrs.get(merged_as)
                keys = complete_keys(source, required)
                # a part made again since it was merged (another revision): all its groups are copied again
                keys = sorted(keys if recorded is not None and recorded != revision else keys - writer.done)
                for key in tqdm(keys, desc=f"merge {part.name}", unit="group"):
                    group = source[key]
                    writer.write(key, {name: group[name][()] for name in group},
                                 {name: dict(group[name].attrs) for name in group if group[name].attrs})
                    copied += 1
            if recorded != revision:
                writer.write_attrs({"/": {merged_as: revision}})
    logger.info(f"Merge: {copied} groups from {len(parts)} parts into {output} ({len(writer.done)} in all)")
    return Path(output)


def cli(argv=None):
    parser = CommandParser("python -m fusion.merge", __doc__)
    parser.add_argument("--output", type=Path, required=True, help="the merged .h5 to write")
    parser.add_argument("parts", type=Path, nargs="+", help="the part files")
    parser.add_argument("--overwrite", action="store_true", help="start --output afresh")
    parser.add_argument("--partial", action="store_true", help="merge the parts given even if some of the N are missing")
    args = parser.parse_args(argv)
    main(args.output, args.parts, args.overwrite, args.partial)


if __name__ == "__main__":
    run_cli(cli)

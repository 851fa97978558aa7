"""Sharded extraction and matching (--shard I/N) merged with fusion.merge equal one unsharded run."""

import cv2
import numpy as np
import pytest
from conftest import assert_same_h5, small_conf

from fusion.features import extract, match
from fusion.jobs import merge
from fusion.jobs.runtime import in_shard, parse_shard, shard_of
from fusion.store.provenance import input_fingerprint

NAMES = ["a.jpg", "b.png", "sub/c.jpg"]



def test_shards_partition_the_work_the_same_everywhere():
    items = [f"db/{i:05d}.jpg" for i in range(1000)]
    parts = [in_shard(items, (i, 4)) for i in range(1, 5)]
    assert sorted(sum(parts, [])) == items and min(len(p) for p in parts) > 200
    assert shard_of("db/00001.jpg", 4) == shard_of("db/00001.jpg", 4)  # a hash of the name, not of the list
    assert in_shard(items[::-1], (2, 4)) == parts[1][::-1]
    assert parse_shard("3/8") == (3, 8)
    for bad in ("0/4", "5/4", "x"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_sequential_names_spread_over_all_shards():
    # Herz-Jesu's names: CRC-32 put all eight into shard 2 of 2
    herzjesu = [f"{i:04d}.jpg" for i in range(8)]
    assert [len(in_shard(herzjesu, (i, 2))) for i in (1, 2)] == [5, 3]
    for names, count in (([f"db/{i:05d}.jpg" for i in range(1000)], 4), ([f"{i:04d}.png" for i in range(200)], 8)):
        sizes = [len(in_shard(names, (i, count))) for i in range(1, count + 1)]
        assert sum(sizes) == len(names)
        assert max(abs(size - len(names) / count) for size in sizes) < 0.25 * len(names) / count, sizes


def test_merged_parts_equal_a_single_run(tmp_path, image_folder):
    single = extract.main(small_conf(), image_folder, feature_path=tmp_path / "single.h5", workers=0)
    parts = [extract.main(small_conf(), image_folder, feature_path=tmp_path / f"part{i}.h5", shard=(i, 3), workers=0)
             for i in (1, 2, 3)]
    merged = merge.main(tmp_path / "merged.h5", parts)
    assert_same_h5(merged, single)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a.jpg b.png\na.jpg sub/c.jpg\nb.png sub/c.jpg\nsub/c.jpg a.jpg\n")
    conf = match.confs["xfeat_mnn"]
    single_matches = match.main(conf, pairs, merged, matches=tmp_path / "m.h5")
    match_parts = [match.main(conf, pairs, merged, matches=tmp_path / f"m{i}.h5", shard=(i, 2)) for i in (1, 2)]
    assert_same_h5(merge.main(tmp_path / "m-merged.h5", match_parts), single_matches)
    other = extract.main(small_conf(keypoints=128), image_folder, feature_path=tmp_path / "other.h5", shard=(1, 3), workers=0)
    with pytest.raises(ValueError, match=r"made differently .*max_keypoints: 256 -> 128"):
        merge.main(tmp_path / "bad.h5", [parts[0], other])
    with pytest.raises(ValueError, match="parts 2/3 are missing"):
        merge.main(tmp_path / "incomplete.h5", [parts[0], parts[2]])
    partial = merge.main(tmp_path / "partial.h5", [parts[0], parts[2]], partial=True)
    assert not (tmp_path / "incomplete.h5").exists() and partial.is_file()


def test_a_part_made_again_is_merged_again(tmp_path, image_folder):
    parts = [extract.main(small_conf(), image_folder, feature_path=tmp_path / f"part{i}.h5", shard=(i, 3), workers=0)
             for i in (1, 2, 3)]
    merged = merge.main(tmp_path / "merged.h5", parts)
    first = input_fingerprint(merged)
    assert input_fingerprint(merge.main(merged, parts)) == first  # nothing new: the same file
    photo = cv2.imread(str(image_folder / "sub" / "c.jpg"))
    cv2.imwrite(str(image_folder / "sub" / "c.jpg"), np.ascontiguousarray(photo[:, ::-1]))
    parts = [extract.main(small_conf(), image_folder, feature_path=part, shard=(i, 3), workers=0, overwrite=True)
             for i, part in enumerate(parts, 1)]
    merge.main(merged, parts)
    assert_same_h5(merged, extract.main(small_conf(), image_folder, feature_path=tmp_path / "single.h5", workers=0))
    assert input_fingerprint(merged) != first  # groups replaced: what was made from it is out of date

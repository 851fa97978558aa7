"""Image pairs: the chunked, KD-tree and sparse versions give the dense versions' pairs in O(N·k) memory."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pycolmap
import pytest
import torch

from fusion.localization import demo_scene, pairs
from fusion.localization.retrieval import kmeans


def random_poses(rng, count, prefix, spread=30.0):
    return {f"{prefix}{i:04d}": demo_scene.look_pose(rng.uniform(-spread, spread, 3) * [1, 1, 0.05],
                                                    rng.uniform(-180, 180), rng.uniform(-20, 20))
            for i in range(count)}


def dense_from_poses(query_poses, db_poses, num_matched, max_angle_deg=60.0):
    """The N x M version (distances to all, angles to all), ties broken by reference index."""
    q_names, q_centres, q_axes = pairs.camera_centres(query_poses)
    d_names, d_centres, d_axes = pairs.camera_centres(db_poses)
    distances = np.linalg.norm(q_centres[:, None] - d_centres[None], axis=-1)
    angles = np.degrees(np.arccos(np.clip(q_axes @ d_axes.T, -1, 1)))
    result = []
    for i, query in enumerate(q_names):
        order = np.lexsort((np.arange(len(d_names)), distances[i]))
        order = [j for j in order if angles[i, j] <= max_angle_deg and d_names[j] != query]
        result += [(query, d_names[j]) for j in order[:num_matched]]
    return result


def brute_force_covisibility(model, num_matched):
    """Count shared observations image by image (ties: lower image index first, as from_covisibility)."""
    ids = sorted(model.images)
    result = []
    for image_id in ids:
        counts = dict.fromkeys(ids, 0)
        for point in model.points3D.values():
            elements = [el.image_id for el in point.track.elements]
            for other in elements:
                if other != image_id:
                    counts[other] += elements.count(image_id)
        best = sorted((other for other in ids if counts[other] > 0), key=lambda o: (-counts[o], ids.index(o)))
        result += [(model.images[image_id].name, model.images[o].name) for o in best[:num_matched]]
    return result


def test_pairs_from_poses_prefer_close_cameras_facing_alike():
    poses = {"a": demo_scene.look_pose([0, 0, 0], 0, 0), "b": demo_scene.look_pose([1, 0, 0], 10, 0),
             "c": demo_scene.look_pose([5, 0, 0], 0, 0), "d": demo_scene.look_pose([0.5, 0, 0], 180, 0)}
    assert pairs.from_poses({"a": poses["a"]}, poses, 2) == [("a", "b"), ("a", "c")]  # d looks away
    assert pairs.exhaustive(["a", "b", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]


@pytest.mark.parametrize("num_matched,max_angle", [(1, 60.0), (5, 60.0), (12, 25.0), (40, 180.0)])
def test_pairs_from_poses_equal_the_dense_version(num_matched, max_angle, monkeypatch):
    rng = np.random.default_rng(num_matched)
    db = random_poses(rng, 300, "db/")
    queries = {**random_poses(rng, 40, "q/"), **dict(list(db.items())[:10])}  # some queries are references
    monkeypatch.setattr(pairs, "CHUNK_ELEMENTS", 200)  # several chunks and k doublings
    ours = pairs.from_poses(queries, db, num_matched, max_angle)
    assert ours == dense_from_poses(queries, db, num_matched, max_angle)
    # 25 degrees: few of the 4·k+8 nearest face alike, so k had to double for most queries
    assert len(ours) == len(queries) * num_matched


def test_pairs_from_covisibility_equal_counting_shared_points():
    rng = np.random.default_rng(0)
    model = pycolmap.Reconstruction()
    model.add_camera_with_trivial_rig(pycolmap.Camera(model="SIMPLE_PINHOLE", width=10, height=10,
                                                      params=np.array([5.0, 5, 5]), camera_id=1))
    num_images, num_points = 30, 400
    for image_id in range(1, num_images + 1):
        image = pycolmap.Image(name=f"db/{image_id:02d}.jpg", camera_id=1, image_id=image_id)
        image.points2D = pycolmap.Point2DList([pycolmap.Point2D(np.zeros(2)) for _ in range(num_points)])
        model.add_image_with_trivial_frame(image, pycolmap.Rigid3d())
    for point in range(num_points):
        centre = rng.integers(1, num_images + 1)  # tracks of neighbouring images, as along a street
        seen = np.unique(np.clip(centre + rng.integers(-4, 5, rng.integers(2, 6)), 1, num_images))
        track = pycolmap.Track()
        for image_id in seen:
            track.add_element(int(image_id), point)
        if track.length() > 1:
            model.add_point3D(rng.normal(size=3), track)
    for num_matched in (1, 3, 8):
        assert pairs.from_covisibility(model, num_matched) == brute_force_covisibility(model, num_matched)
    with pytest.raises(ValueError, match="covisibility pairs need a model with 3D points"):
        pairs.from_observations(["a.jpg"], np.zeros(0, int), np.zeros(0, int), 2)


def test_pairs_from_descriptors_equal_sorting_all_similarities(monkeypatch):
    rng = np.random.default_rng(1)
    db_desc, q_desc = rng.normal(size=(50, 16)), rng.normal(size=(7, 16))
    db_names = [f"db/{i}.jpg" for i in range(50)]
    q_names = [f"q/{i}.jpg" for i in range(6)] + ["db/3.jpg"]  # one query is a reference image
    q_desc[6] = db_desc[3]
    monkeypatch.setattr(pairs, "CHUNK_ELEMENTS", 100)
    expected = []
    for i, query in enumerate(q_names):
        order = [j for j in np.argsort(-(q_desc[i] @ db_desc.T)) if db_names[j] != query]
        expected += [(query, db_names[j]) for j in order[:5]]
    assert pairs.from_descriptors(q_desc, q_names, db_desc, db_names, 5) == expected


def test_pairs_from_20000_poses_stay_under_1_gib():
    """RobotCar Seasons size (20,862 reference images): the dense version needed ~19 GiB.

    Peak memory of a fresh process, VmHWM (ru_maxrss would include pytest's own: Linux keeps it
    across exec).
    """
    script = textwrap.dedent("""
        import time
        import numpy as np
        import pycolmap
        from fusion.localization import pairs

        def look_pose(centre, yaw):  # a level camera at centre looking along yaw (degrees about +z)
            forward = np.array([np.cos(np.radians(yaw)), np.sin(np.radians(yaw)), 0.0])
            rotation = np.stack([np.cross(forward, [0, 0, 1.0]), [0, 0, -1.0], forward])
            return pycolmap.Rigid3d(pycolmap.Rotation3d(rotation), -rotation @ np.asarray(centre))

        def peak_rss_kib():
            status = open("/proc/self/status").read()
            return int(status.split("VmHWM:")[1].split()[0])

        rng = np.random.default_rng(0)
        # a 10 km route driven with a left, a right and a rear camera every 1.5 m
        heading = np.cumsum(rng.normal(0, 0.05, 6667))
        route = np.cumsum(1.5 * np.stack([np.cos(heading), np.sin(heading)], 1), 0)
        poses = {}
        for i, ((x, y), h) in enumerate(zip(route, np.degrees(heading))):
            for camera, yaw in (("left", 90), ("right", -90), ("rear", 180)):
                poses[f"overcast-reference/{camera}/{i:05d}.jpg"] = look_pose([x, y, 1.6], h + yaw)
        before = peak_rss_kib()
        start = time.time()
        result = pairs.from_poses(poses, poses, 20)
        print(len(poses), len(result), before, peak_rss_kib(), round(time.time() - start, 2))
    """)
    if not Path("/proc/self/status").exists():
        pytest.skip("peak memory is read from /proc/self/status (Linux)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    num_poses, num_pairs, rss_before, rss_peak, seconds = out.split()
    assert int(num_poses) == 20001 and int(num_pairs) == 20001 * 20
    print(f"20,001 poses: {seconds} s, process peak {int(rss_peak) / 2**20:.3f} GiB "
          f"({int(rss_before) / 2**20:.3f} GiB before the call)")
    assert int(rss_peak) < 2**20  # KiB: the whole process stays under 1 GiB


def test_vlad_kmeans_block_by_block_equals_the_loop_over_clusters():
    """The codebook's k-means assigns a block of samples at a time and sums them per centre in one step: the
    centres of a centre-by-centre update of all samples at once, whatever the block size, at O(block) memory."""
    generator = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(16, 64, generator=generator), dim=1)
    noise = 0.2 * torch.randn(30000, 64, generator=generator)
    samples = torch.nn.functional.normalize(directions[torch.arange(30000) % 16] + noise, dim=1)
    reference = samples[torch.randperm(30000, generator=torch.Generator().manual_seed(0))[:16]].clone()
    for _ in range(20):
        assignment = (samples @ reference.T).argmax(1)
        for k in range(16):
            if (assignment == k).any():
                reference[k] = torch.nn.functional.normalize(samples[assignment == k].mean(0), dim=0)
    for block in (1000, 4096, 1 << 16):
        assert torch.allclose(kmeans(samples, 16, block=block), reference, atol=1e-5)
    moved = (kmeans(samples, 16) @ directions.T).max(1).values
    assert moved.min() > 0.9  # every centre converged onto a cluster of the samples


def test_a_pair_is_one_line_whatever_the_order_of_its_names(tmp_path):
    """Covisibility lists most pairs both ways: the file keeps each once, so matching and verification count alike."""
    from fusion.store.io import read_pairs, write_pairs

    path = write_pairs([("a", "b"), ("b", "a"), ("a", "c"), ("c", "a"), ("a", "b"), ("b", "c")], tmp_path / "p.txt")
    assert path.read_text() == "a b\na c\nb c\n"
    (tmp_path / "theirs.txt").write_text("q d1\nd1 q\nq d2\n")
    assert read_pairs(tmp_path / "theirs.txt") == [("q", "d1"), ("q", "d2")]


def test_the_demo_verifies_the_pairs_it_matched(small_demo):
    """The demo's reference pairs file lists each pair once (its log said 72 pairs to match, then 120 to verify)."""
    from fusion.store.io import read_pairs

    _, out = small_demo
    pair_file = next(out["sfm"].parent.glob("pairs-db-*.txt"))
    lines = pair_file.read_text().splitlines()
    assert len(lines) == len({frozenset(line.split()) for line in lines}) == len(read_pairs(pair_file))
    assert out["model"].num_points3D() > 0

"""--executor ray on a local Ray instance with 2 CPUs: the files of a local run, a killed worker's task retried,
a corrupt image listed as in local runs."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import assert_same_h5, small_conf

from fusion.features import extract, match
from fusion.jobs.errors import BatchError
from fusion.jobs.executor import Executor, parts_dir
from fusion.localization import localize

NUM_IMAGES = 8


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance for this module's tests (the drivers they start connect to it); shut down after them."""
    ray = pytest.importorskip("ray", reason='Ray is the cluster extra: pip install -e ".[cluster]"')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def photos(tmp_path, photo_rgb):
    """Eight distinct crops of a real photo, named as a camera names them (sequential)."""
    root = tmp_path / "images"
    root.mkdir()
    for i in range(NUM_IMAGES):
        crop = photo_rgb[6 * i:6 * i + 480, 4 * i:4 * i + 440]
        cv2.imwrite(str(root / f"{i:04d}.jpg"), np.ascontiguousarray(crop[:, :, ::-1]))
    return root



@pytest.fixture
def one_thread():
    """Ray gives each task one CPU, so one PyTorch thread: the local runs compared with it use one too
    (float16 descriptors differ in their last bit between thread counts)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ray_executor(address, task_size):
    return Executor("ray", address, task_size)


def test_ray_runs_write_the_files_of_a_local_run(tmp_path, photos, ray_address, one_thread, small_demo):
    local = extract.main(small_conf(), photos, feature_path=tmp_path / "local.h5", workers=0)
    # 3 tasks; the first image already there: only the others go to Ray, and the file keeps it
    extract.main(small_conf(), photos, image_list=["0000.jpg"], feature_path=tmp_path / "ray.h5", workers=0)
    on_ray = extract.main(small_conf(), photos, feature_path=tmp_path / "ray.h5", workers=0,
                          executor=ray_executor(ray_address, 3))
    assert_same_h5(on_ray, local)
    assert not parts_dir(on_ray).exists()

    pairs = tmp_path / "pairs.txt"
    pairs.write_text("".join(f"{i:04d}.jpg {j:04d}.jpg\n" for i in range(NUM_IMAGES) for j in range(i + 1, NUM_IMAGES)))
    conf = match.confs["xfeat_mnn"]
    local_matches = match.main(conf, pairs, local, matches=tmp_path / "m-local.h5")
    ray_matches = match.main(conf, pairs, local, matches=tmp_path / "m-ray.h5", executor=ray_executor(ray_address, 10))
    assert_same_h5(ray_matches, local_matches)  # 28 pairs in 3 tasks

    scene, out = small_demo
    arguments = (out["model"], scene.queries, out["loc_pairs"], out["features"], out["matches"])
    local_results = localize.main(*arguments, tmp_path / "results-local.txt", name_style="basename")
    ray_results = localize.main(*arguments, tmp_path / "results-ray.txt", name_style="basename",
                                executor=ray_executor(ray_address, 2))
    assert ray_results.read_text() == local_results.read_text() and len(ray_results.read_text().splitlines()) == 5
    assert json.loads(localize.log_path(ray_results).read_text()) == json.loads(localize.log_path(local_results).read_text())


def extraction_cli(images, output, address, log, *options):
    return subprocess.Popen([sys.executable, "-m", "fusion.extract", "--conf", "xfeat", "--max-keypoints", "256",
                             "--images", str(images), "--output", str(output), "--workers", "0", "--executor", "ray",
                             "--ray-address", address, *options], stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            text=True)


def pid_holding(lock: Path):
    """The pid of the process that holds ``lock`` now (a lock file outlives its writer: one that is free or
    not yet written gives None), so that a kill lands in a task that is running, however fast it is."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # free: that task is over
    except BlockingIOError:
        try:
            return json.loads(lock.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            return None
    finally:
        os.close(fd)


def test_a_worker_killed_mid_task_is_retried_and_the_file_is_the_same(tmp_path, photos, ray_address, one_thread):
    local = extract.main(small_conf(), photos, feature_path=tmp_path / "local.h5", workers=0)
    output, log = tmp_path / "features.h5", tmp_path / "driver.log"
    driver = extraction_cli(photos, output, ray_address, log, "--task-size", "4")
    start, killed = time.monotonic(), None
    while killed is None:  # the first task seen writing its part: its worker wrote its pid into the part's lock
        assert driver.poll() is None and time.monotonic() - start < 300, log.read_text()
        for lock in parts_dir(output).glob("*.h5.lock"):
            killed = pid_holding(lock)
            if killed:
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.005)
    assert driver.wait() == 0, log.read_text()
    retried = [line for line in log.read_text().splitlines() if "ran 2 times" in line]
    assert len(retried) == 1 and str(killed) in retried[0], log.read_text()
    assert_same_h5(output, local)
    assert not parts_dir(output).exists()


def test_a_corrupt_image_is_listed_and_the_other_tasks_complete(tmp_path, photos, ray_address, one_thread):
    local = extract.main(small_conf(), photos, feature_path=tmp_path / "local.h5", workers=0)
    (photos / "0003b.jpg").write_bytes((photos / "0003.jpg").read_bytes()[:3000])  # cut short
    output, log = tmp_path / "features.h5", tmp_path / "driver.log"
    assert extraction_cli(photos, output, ray_address, log, "--task-size", "3").wait() == 1, log.read_text()
    lines = log.read_text().splitlines()
    assert "error: 1 of 9 images failed:" in lines
    assert any(line.startswith("  0003b.jpg: ") and "truncated JPEG" in line for line in lines), lines
    assert "Traceback" not in log.read_text()
    assert_same_h5(output, local)  # all 8 good images, from the other tasks and the bad one's task
    with pytest.raises(BatchError, match="0003b.jpg"):  # the same line from a local run
        extract.main(small_conf(), photos, feature_path=tmp_path / "local.h5", workers=0)


def test_without_ray_one_line_says_how_to_install_it(tmp_path, photos, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    with pytest.raises(ValueError, match=r'^--executor ray needs Ray: pip install -e "\.\[cluster\]"'):
        extract.main(small_conf(), photos, feature_path=tmp_path / "f.h5", executor=Executor("ray"))
    with pytest.raises(ValueError, match="--shard I/N and --executor ray"):
        extract.main(small_conf(), photos, feature_path=tmp_path / "f.h5", shard=(1, 2), executor=Executor("ray"))

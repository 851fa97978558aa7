"""Several processes on one output: writers take turns, readers only ever see whole files (real processes)."""

import signal
import subprocess
import sys
import time

import cv2
import h5py
import numpy as np
import pytest
from conftest import assert_same_h5, small_conf

from fusion.features import extract
from fusion.store.h5 import chunk_dir

NUM_IMAGES = 10


@pytest.fixture
def many_images(tmp_path, photo_rgb):
    root = tmp_path / "images"
    root.mkdir()
    for i in range(NUM_IMAGES):  # distinct crops, so that every image has features of its own
        crop = photo_rgb[8 * i:8 * i + 400, 5 * i:5 * i + 360]
        cv2.imwrite(str(root / f"{i:02d}.jpg"), np.ascontiguousarray(crop[:, :, ::-1]))
    return root



def extraction(images, output, gate, log):
    """``python -m fusion.extract`` as a separate process that makes every image a chunk of its own and, after
    two images, pauses until the file ``gate`` exists; its log goes to the file ``log``."""
    code = ("import pathlib, sys, time\n"
            "from fusion.features import extract\n"
            "from fusion.store import h5\n"
            "from fusion.jobs.errors import run_cli\n"
            "h5.CHUNK_SECONDS, gate, done, features_of = 0, pathlib.Path(sys.argv[1]), [], extract.features_of\n"
            "def paused(*args, **kwargs):\n"
            "    done.append(1)\n"
            "    while len(done) > 2 and not gate.exists():\n"
            "        time.sleep(0.02)\n"
            "    return features_of(*args, **kwargs)\n"
            "extract.features_of = paused\n"
            "run_cli(lambda: extract.cli(sys.argv[2:]))")
    return subprocess.Popen([sys.executable, "-c", code, str(gate), "--conf", "xfeat", "--max-keypoints", "256",
                             "--images", str(images), "--output", str(output), "--workers", "0"],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"), text=True)


def wait_until(condition, *processes, timeout=300.0):
    start = time.monotonic()
    while not condition():
        for process in processes:
            assert process.poll() is None, f"exited with {process.returncode}"
        assert time.monotonic() - start < timeout
        time.sleep(0.02)


def chunks_of(path):
    return len(list(chunk_dir(path).glob("*.h5"))) if chunk_dir(path).is_dir() else 0


def waiting(log):
    return "waiting for it to finish" in log.read_text()


@pytest.mark.parametrize("first_killed", [False, True])
def test_two_writers_of_one_features_file_take_turns(tmp_path, many_images, first_killed):
    """As two pipelines sharing --outputs: the second waits (saying so once), then adds only what is missing;
    when the first is killed -9 midway, the second goes on from the chunks it left. Either way the file
    equals an uninterrupted run's."""
    reference = extract.main(small_conf(), many_images, feature_path=tmp_path / "reference.h5", workers=0)
    output, gate, logs = tmp_path / "features.h5", tmp_path / "gate", [tmp_path / "first.log", tmp_path / "second.log"]
    first = extraction(many_images, output, gate, logs[0])
    wait_until(lambda: chunks_of(output) == 2, first)
    second = extraction(many_images, output, gate, logs[1])
    wait_until(lambda: waiting(logs[1]), first, second)
    if first_killed:
        first.send_signal(signal.SIGKILL)
        first.wait()
    gate.touch()
    assert second.wait() == 0, logs[1].read_text()
    assert first.wait() == (-signal.SIGKILL if first_killed else 0), logs[0].read_text()
    waits = [line for line in logs[1].read_text().splitlines() if "waiting for it to finish" in line]
    assert len(waits) == 1 and f"being written by pid {first.pid} on " in waits[0]
    already = int(logs[1].read_text().split("Features: ")[1].split(" of ")[0])
    assert already == (2 if first_killed else NUM_IMAGES)  # the killed writer's two chunks were kept
    assert_same_h5(output, reference)
    assert not chunk_dir(output).exists()


def test_no_wait_names_the_writer_and_exits_2(tmp_path, many_images):
    """A second writer, or a reader (fusion.match reads the features), told not to wait."""
    output, gate = tmp_path / "features.h5", tmp_path / "gate"
    (tmp_path / "pairs.txt").write_text("00.jpg 01.jpg\n")
    writer = extraction(many_images, output, gate, tmp_path / "writer.log")
    wait_until(lambda: chunks_of(output) == 2, writer)
    refused = [subprocess.run([sys.executable, "-m", *command, "--no-wait"], capture_output=True, text=True) for command in (
        ("fusion.extract", "--conf", "xfeat", "--images", str(many_images), "--output", str(output)),
        ("fusion.match", "--pairs", str(tmp_path / "pairs.txt"), "--features", str(output), "--output",
         str(tmp_path / "matches.h5")))]
    gate.touch()
    assert writer.wait() == 0
    for result in refused:
        assert result.returncode == 2 and "Traceback" not in result.stderr
        line, = result.stderr.strip().splitlines()
        assert f"{output}: being written by pid {writer.pid} on " in line and "--output" in line
        assert "leave out --no-wait" in line
    assert not (tmp_path / "matches.h5").exists()


def test_readers_see_whole_files_while_a_writer_works(tmp_path, many_images):
    """A reader that knows nothing of fusion's locks (hloc, h5py) polls the file while a writer adds to it: every
    time it sees the old file or the finished one, each group whole. fusion's readers wait for the writer."""
    reference = extract.main(small_conf(), many_images, feature_path=tmp_path / "reference.h5", workers=0)
    output = tmp_path / "features.h5"
    extract.main(small_conf(), many_images, feature_path=output, image_list=["00.jpg", "01.jpg"], workers=0)
    gate, reader_log = tmp_path / "gate", tmp_path / "reader.log"
    writer = extraction(many_images, output, gate, tmp_path / "writer.log")
    wait_until(lambda: chunks_of(output) == 2, writer)
    waiting_reader = subprocess.Popen(
        [sys.executable, "-c", "import sys; from fusion.store.h5 import FeatureReader; "
         "print(len(FeatureReader(sys.argv[1]).names()))", str(output)],
        stdout=subprocess.PIPE, stderr=open(reader_log, "w"), text=True)
    seen, polls = set(), 0
    with h5py.File(reference, "r") as truth:
        while True:
            running = writer.poll() is None
            with h5py.File(output, "r") as fd:
                names = tuple(sorted(name for name in fd if name.endswith(".jpg")))
                for name in names:
                    for dataset in ("keypoints", "descriptors", "scores", "image_size"):
                        assert np.array_equal(fd[name][dataset][()], truth[name][dataset][()]), (name, dataset)
            seen.add(names)
            polls += 1
            if polls >= 50 and waiting(reader_log):
                gate.touch()  # the writer goes on
            if not running:
                break
    assert writer.returncode == 0, (tmp_path / "writer.log").read_text()
    assert polls > 50 and seen == {("00.jpg", "01.jpg"), tuple(f"{i:02d}.jpg" for i in range(NUM_IMAGES))}
    out = waiting_reader.communicate()[0]
    assert waiting_reader.returncode == 0, reader_log.read_text()
    assert int(out) == NUM_IMAGES  # it waited for the writer, then read the finished file
    assert_same_h5(output, reference)

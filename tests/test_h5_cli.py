"""fusion.extract / fusion.match: hloc's exact h5 layout, resume, overwrite, interruption, bad input."""

import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest
from conftest import assert_same_h5

from fusion.features import extract, match
from fusion.jobs.errors import BatchError


def write_pairs(path, pairs):
    path.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    return path


def test_extract_and_match_write_hlocs_layout(tmp_path, image_folder):
    features = extract.main(extract.confs["fused_xfeat"], image_folder, feature_path=tmp_path / "f.h5")
    with h5py.File(features, "r") as fd:
        assert sorted(fd.keys()) == ["a.jpg", "b.png", "sub"]
        group = fd["sub/c.jpg"]
        assert set(group.keys()) == {"keypoints", "descriptors", "scores", "image_size"}
        n = group["keypoints"].shape[0]
        assert group["keypoints"].shape == (n, 2) and group["keypoints"].dtype == np.float32
        assert group["descriptors"].shape == (64, n) and group["scores"].shape == (n,)
        assert group["image_size"][()].tolist() == [512, 600]  # (W, H) of the original image
        assert fd["b.png/image_size"][()].tolist() == [320, 384]
        keypoints = fd["b.png/keypoints"][()]
        assert keypoints.min() >= -0.5 and (keypoints < [320, 384]).all()
        assert "uncertainty" in group["keypoints"].attrs
        norms = np.linalg.norm(group["descriptors"][()].astype(np.float32), axis=0)
        assert np.allclose(norms, 1, atol=2e-3)
    pairs = write_pairs(tmp_path / "pairs.txt", [("a.jpg", "sub/c.jpg"), ("sub/c.jpg", "a.jpg"), ("a.jpg", "b.png")])
    matches = match.main(match.confs["xfeat_mnn"], pairs, features, matches=tmp_path / "m.h5")
    with h5py.File(matches, "r") as fd:
        assert set(fd["a.jpg"].keys()) == {"sub-c.jpg", "b.png"}  # '/' -> '-', reverse duplicate skipped
        pair = fd["a.jpg/sub-c.jpg"]
        assert set(pair.keys()) == {"matches0", "matching_scores0"}
        m = pair["matches0"][()]
        assert m.dtype.kind == "i" and m.shape == (fd.file["a.jpg/b.png/matches0"].shape[0],)
        with h5py.File(features, "r") as ffd:
            assert m.shape[0] == ffd["a.jpg/keypoints"].shape[0]
            assert m.max() < ffd["sub/c.jpg/keypoints"].shape[0] and (m > -1).sum() > 100


def test_extract_resumes_and_overwrite_recomputes(tmp_path, image_folder, monkeypatch):
    path = tmp_path / "f.h5"
    extract.main(extract.confs["xfeat"], image_folder, feature_path=path, image_list=["a.jpg"], workers=0)
    with h5py.File(path, "r") as fd:
        first = fd["a.jpg/keypoints"][()]
    calls = []
    original = extract.prepare_image
    monkeypatch.setattr(extract, "prepare_image", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    extract.main(extract.confs["xfeat"], image_folder, feature_path=path, workers=0)
    assert sorted(p.name for p in calls) == ["b.png", "c.jpg"]  # a.jpg was already there
    calls.clear()
    extract.main(extract.confs["xfeat"], image_folder, feature_path=path, overwrite=True, workers=0)
    assert len(calls) == 3
    with h5py.File(path, "r") as fd:
        assert sorted(fd.keys()) == ["a.jpg", "b.png", "sub"]
        assert np.array_equal(fd["a.jpg/keypoints"][()], first)


def test_interrupted_extraction_leaves_a_valid_file_and_resumes(tmp_path, image_folder, monkeypatch):
    path = tmp_path / "f.h5"
    original = extract.features_of
    count = []

    def interrupt_on_third(*args, **kwargs):
        count.append(1)
        if len(count) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(extract, "features_of", interrupt_on_third)
    with pytest.raises(KeyboardInterrupt):
        extract.main(extract.confs["xfeat"], image_folder, feature_path=path, workers=0)
    with h5py.File(path, "r") as fd:  # readable, holding the two finished images
        assert sorted(fd.keys()) == ["a.jpg", "b.png"]
    monkeypatch.setattr(extract, "features_of", original)
    extract.main(extract.confs["xfeat"], image_folder, feature_path=path, workers=0)
    reference = extract.main(extract.confs["xfeat"], image_folder, feature_path=tmp_path / "ref.h5", workers=0)
    assert_same_h5(path, reference)


def test_bad_inputs_fail_clearly_and_the_batch_continues(tmp_path, photo_rgb):
    root = tmp_path / "images"
    root.mkdir()
    gray = cv2.cvtColor(photo_rgb, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(root / "gray.png"), gray)
    cv2.imwrite(str(root / "rgba.png"), np.dstack([photo_rgb[:, :, ::-1], np.full(gray.shape, 255, np.uint8)]))
    cv2.imwrite(str(root / "deep.png"), gray.astype(np.uint16) * 257)
    cv2.imwrite(str(root / "tiny.png"), photo_rgb[:20, :24, ::-1])
    cv2.imwrite(str(root / "huge.jpg"), cv2.resize(photo_rgb, (4000, 4688))[:, :, ::-1])
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    whole = cv2.imencode(".jpg", photo_rgb[:, :, ::-1])[1].tobytes()
    (root / "truncated.jpg").write_bytes(whole[: len(whole) * 2 // 3])  # decoders fill the rest with grey
    (root / "list.txt").write_text("gray.png\nrgba.png\ndeep.png\ntiny.png\nhuge.jpg\ncorrupt.jpg\nmissing.jpg\n"
                                   "truncated.jpg\n")
    path = tmp_path / "f.h5"
    with pytest.raises(BatchError) as error:
        extract.main(extract.confs["fused_xfeat"], root, feature_path=path, image_list=root / "list.txt")
    message = str(error.value)
    assert message.startswith("3 of 8 images failed")
    assert "corrupt.jpg: cannot decode image" in message and "missing.jpg: no such image file" in message
    assert "truncated.jpg: truncated JPEG" in message
    with h5py.File(path, "r") as fd:
        assert sorted(fd.keys()) == ["deep.png", "gray.png", "huge.jpg", "rgba.png", "tiny.png"]
        assert fd["huge.jpg/image_size"][()].tolist() == [4000, 4688]
        assert fd["huge.jpg/keypoints"][()].max() > 2000  # back in original pixels after resize_max
        assert fd["tiny.png/image_size"][()].tolist() == [24, 20]
        # 16-bit and 8-bit versions of the same picture give the same features
        assert np.abs(fd["deep.png/keypoints"][()] - fd["gray.png/keypoints"][()]).max() < 1e-3


def test_cli_exit_code_and_failure_list(tmp_path, image_folder):
    (image_folder / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "f.h5"
    command = [sys.executable, "-m", "fusion.extract", "--conf", "xfeat", "--images", str(image_folder),
               "--output", str(out), "--max-keypoints", "256"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 1
    assert "1 of 4 images failed" in result.stderr and "broken.png: cannot decode image" in result.stderr
    with h5py.File(out, "r") as fd:
        assert fd["a.jpg/keypoints"].shape == (256, 2)
    missing = subprocess.run(command[:6] + [str(tmp_path / "nope"), "--output", str(out)],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.strip().endswith("nope: image folder not found")
    pairs = write_pairs(tmp_path / "pairs.txt", [("a.jpg", "b.png")])
    result = subprocess.run([sys.executable, "-m", "fusion.match", "--pairs", str(pairs), "--features", str(out),
                             "--output", str(tmp_path / "m.h5")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_ctrl_c_is_one_line_saying_how_far_it_got_and_how_to_resume(tmp_path, photo_rgb):
    """SIGINT (Ctrl-C) in the middle of an extraction: exit 130, no traceback, one line; the same command resumes."""
    import os
    import re
    import signal

    images = tmp_path / "images"
    images.mkdir()
    small = cv2.resize(photo_rgb, (256, 300))
    for i in range(24):
        cv2.imwrite(str(images / f"{i:02d}.jpg"), np.ascontiguousarray(np.roll(small, 7 * i, axis=1)[:, :, ::-1]))
    command = [sys.executable, "-m", "fusion.extract", "--conf", "xfeat", "--images", str(images),
               "--output", str(tmp_path / "f.h5")]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    seen = b""
    while not re.search(rb"extract: .*\b([2-9]|\d\d)/24", seen):  # a few images written
        chunk = os.read(process.stderr.fileno(), 4096)
        assert chunk, seen.decode()[-500:]
        seen += chunk
    process.send_signal(signal.SIGINT)
    stderr = (seen + process.stderr.read()).decode()
    assert process.wait(timeout=60) == 130
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    done = re.fullmatch(r"interrupted: (\d+) of 24 done \(extract\); run the same command to resume", last)
    assert done, last
    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0
    kept = int(re.search(r"Features: (\d+) of 24 images already in", resumed.stderr).group(1))
    assert 2 <= int(done.group(1)) <= kept < 24

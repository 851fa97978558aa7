"""Efficiency: parameters, median ms per image and peak memory, per extractor and image size.

Memory is measured in a fresh process per extractor and size (Linux /proc: VmRSS after loading,
VmHWM after one extraction), since a warm process reuses memory it already holds.
"""

import multiprocessing
import statistics
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .adapters import numpy_extractor, parameter_count

SIZES = ((640, 480), (1024, 768))


def read_status_kib(field: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def memory_probe(name: str, size: Tuple[int, int], max_keypoints: int, threads: int, queue) -> None:
    """In a fresh process: resident memory after loading, and its peak during one extraction (MiB)."""
    torch.set_num_threads(threads)
    extractor = numpy_extractor(name, max_keypoints)
    image = test_image(size)
    loaded = read_status_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    except OSError:
        pass
    with torch.inference_mode():
        extractor(image)
    peak = read_status_kib("VmHWM")
    queue.put(None if loaded is None or peak is None else (loaded / 1024, peak / 1024))


def peak_memory(name: str, size: Tuple[int, int], max_keypoints: int, threads: int):
    """(peak resident MiB of a process that loads the extractor and extracts once, extra MiB of the extraction)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=memory_probe, args=(name, size, max_keypoints, threads, queue))
    process.start()
    result = queue.get(timeout=300)
    process.join()
    if result is None:
        return None, None
    loaded, peak = result
    return round(peak, 1), round(max(0.0, peak - loaded), 1)


def test_image(size: Tuple[int, int], seed: int = 0) -> np.ndarray:
    """A textured RGB image of the given (width, height): smoothed noise at several scales."""
    import cv2

    rng = np.random.default_rng(seed)
    width, height = size
    image = np.zeros((height, width, 3), np.float32)
    for scale in (2, 8, 32):
        grid = rng.random((height // scale + 1, width // scale + 1, 3)).astype(np.float32)
        image += cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return (255 * (image - image.min()) / np.ptp(image)).astype(np.uint8)


def measure(names: Sequence[str], sizes=SIZES, runs: int = 10, threads: int = 2,
            max_keypoints: int = 4096) -> List[Dict]:
    torch.set_num_threads(threads)
    rows = []
    for name in names:
        extractor = numpy_extractor(name, max_keypoints)
        for size in sizes:
            image = test_image(size)
            peak, extra = peak_memory(name, size, max_keypoints, threads)
            with torch.inference_mode():
                extractor(image)  # warm-up
                times = []
                for _ in range(runs):
                    start = time.perf_counter()
                    extractor(image)
                    times.append(1000 * (time.perf_counter() - start))
            rows.append({"extractor": name, "size": f"{size[0]}x{size[1]}", "params": parameter_count(extractor),
                         "ms": round(statistics.median(times), 1), "peak_rss_mib": peak, "extraction_mib": extra})
    return rows


def markdown(rows: List[Dict]) -> str:
    header = "| extractor | size | parameters | ms / image | peak RSS MiB | extraction MiB |"
    lines = [header, "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['extractor']} | {r['size']} | {r['params']:,} | {r['ms']} | {r['peak_rss_mib']} | "
              f"{r['extraction_mib']} |" for r in rows]
    return "\n".join(lines)

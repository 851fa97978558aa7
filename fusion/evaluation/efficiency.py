"""Efficiency: parameters, median ms per image and peak memory, per extractor and image size.

The exportable extractors (``xfeat``, ``fused_xfeat``) also run as their ONNX export in ONNX
Runtime when the export extra is installed, timed interleaved with PyTorch on the same image.
Memory is measured in a fresh process per extractor and size (Linux /proc: VmRSS after loading,
VmHWM after one extraction), since a warm process reuses memory it already holds.
"""

import importlib.util
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..features import export
from .adapters import numpy_extractor, parameter_count

ONNX_RUNTIME = " (ONNX Runtime)"

SIZES = ((640, 480), (1024, 768))


def read_status_kib(field: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def onnx_available() -> bool:
    return all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))


def onnx_extractor(path: Path) -> Callable[[np.ndarray], Tuple[np.ndarray, ...]]:
    """An exported graph in ONNX Runtime (as many threads as PyTorch) on an RGB uint8 image (H and W multiples of 32)."""
    run = export.load_graph(path, "onnx")
    return lambda image: run(image.transpose(2, 0, 1)[None] / np.float32(255))


def build_extractor(name: str, max_keypoints: int, onnx_path: Optional[Path]) -> Callable:
    return numpy_extractor(name, max_keypoints) if onnx_path is None else onnx_extractor(onnx_path)


def memory_probe(name: str, size: Tuple[int, int], max_keypoints: int, threads: int, onnx_path, queue) -> None:
    """In a fresh process: resident memory after loading, and its peak during one extraction (MiB)."""
    torch.set_num_threads(threads)
    extractor = build_extractor(name, max_keypoints, onnx_path)
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


def peak_memory(name: str, size: Tuple[int, int], max_keypoints: int, threads: int, onnx_path: Path = None):
    """(peak resident MiB of a process that loads the extractor and extracts once, extra MiB of the extraction)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=memory_probe, args=(name, size, max_keypoints, threads, onnx_path, queue))
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
            max_keypoints: int = 4096, onnx: bool = True) -> List[Dict]:
    """One row per extractor (and its ONNX export, with ``onnx``) and size; variants of one extractor
    alternate run by run so that machine load affects them alike."""
    torch.set_num_threads(threads)
    if onnx and not onnx_available():
        print('ONNX rows left out: pip install -e ".[export]" for onnx, onnxscript and onnxruntime')
        onnx = False
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            extractor = numpy_extractor(name, max_keypoints)
            variants = {name: (extractor, None)}
            if onnx and name in export.CONFS:
                path = export.export(name, "onnx", Path(folder) / f"{name}.onnx", max_keypoints=max_keypoints)
                variants[name + ONNX_RUNTIME] = (onnx_extractor(path), path)
            for size in sizes:
                image = test_image(size)
                runnable = {label: v for label, v in variants.items()
                            if v[1] is None or (size[0] % 32 == 0 and size[1] % 32 == 0)}
                times = {label: [] for label in runnable}
                with torch.inference_mode():
                    for label, (run, _) in runnable.items():
                        run(image)  # warm-up
                    for _ in range(runs):
                        for label, (run, _) in runnable.items():
                            start = time.perf_counter()
                            run(image)
                            times[label].append(1000 * (time.perf_counter() - start))
                for label, (_, path) in runnable.items():
                    peak, extra = peak_memory(name, size, max_keypoints, threads, path)
                    rows.append({"extractor": label, "size": f"{size[0]}x{size[1]}",
                                 "params": parameter_count(extractor), "ms": round(statistics.median(times[label]), 1),
                                 "peak_rss_mib": peak, "extraction_mib": extra})
    return rows


def markdown(rows: List[Dict]) -> str:
    header = "| extractor | size | parameters | ms / image | peak RSS MiB | extraction MiB |"
    lines = [header, "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['extractor']} | {r['size']} | {r['params']:,} | {r['ms']} | {r['peak_rss_mib']} | "
              f"{r['extraction_mib']} |" for r in rows]
    return "\n".join(lines)

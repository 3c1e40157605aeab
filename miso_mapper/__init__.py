"""miso-mapper: statewide 10 m permafrost and soil-order maps of Alaska with the MISO model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("miso-mapper")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

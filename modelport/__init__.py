"""modelport: turn a trained model into a production web service."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modelport")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]

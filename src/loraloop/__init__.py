"""loraloop: turn open LLMs into small domain models and keep them accurate after launch."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("loraloop")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]

"""The installed videococa's version, read once from the package metadata: pyproject.toml is the one source."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("videococa")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

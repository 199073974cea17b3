"""The installed version of cramp-cds (from the package metadata, which pyproject.toml sets)."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cramp-cds")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"

"""Dataset sources: one file per layout, each registered in SOURCES by name."""

from facelab.data.sources.base import SOURCES, Source, SourceOptions, create_source

# Importing the modules registers them.
from facelab.data.sources import celeba, cifar10, folder, synthetic, utkface  # noqa: E402,F401

__all__ = ["SOURCES", "Source", "SourceOptions", "create_source"]

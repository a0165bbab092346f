"""The package version, apart from ``__init__`` so that modules can record it without
importing the whole public API."""

__version__ = "0.1.0"

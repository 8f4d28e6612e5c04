"""The package version: one place, read by the package root, the config files and the build."""

__version__ = "0.1.0"

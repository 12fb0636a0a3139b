"""The package version, in one place: ``reluflow.__version__``, the build (pyproject.toml reads it) and the
tables' metadata."""

__version__ = "0.1.0"

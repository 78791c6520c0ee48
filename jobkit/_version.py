"""The version of jobkit: defined here only (pyproject.toml reads it, `jobkit.__version__` and
`jobkit --version` show it)."""

__version__ = "0.1.0"

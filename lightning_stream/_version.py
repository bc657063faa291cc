"""The package version, kept in one place (read by pyproject and `/health`)."""

__version__ = "0.1.0"

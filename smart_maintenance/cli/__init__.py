"""The `smart-maintenance` command line (see `cli/app.py`)."""

from smart_maintenance.cli.app import app, main

__all__ = ["app", "main"]

"""CMMS hand-off: work orders pushed to a maintenance system's REST API, completions read back (docs/cmms.md)."""

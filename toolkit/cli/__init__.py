"""The `toolkit` command line: a thin Typer shell over the Python API."""

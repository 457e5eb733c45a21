"""Backends: one package per format, `toolkit/backends/<name>/`, holding everything only that
format knows: its exporter, its runner, its record fields (a pydantic model validated with the
manifest) and its hooks. The format table (`toolkit.formats`) declares each one and points at
its code as 'module:function' strings; generic code (pipeline, verify, bench, select, deploy,
CLI) reaches a backend only through the table, and names none (tests/test_format_names.py).

Formats declared before this package existed still keep their code by stage (export/,
runtime/, tensorrt/); they move here one at a time."""

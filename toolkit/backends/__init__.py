"""Backends: one package per format, `toolkit/backends/<name>/`, holding everything only that
format knows: its exporter, its runner, its option group, its record fields (a pydantic model
validated with the manifest) and its hooks (lone-file describe and inspect, layers, localize,
the device probe, migration of old records). The format table (`toolkit.formats`) declares
each one and points at its code as 'module:function' strings; generic code (pipeline, verify,
bench, select, deploy, CLI) reaches a backend only through the table, and names none
(tests/test_format_names.py)."""

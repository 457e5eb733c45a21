"""TorchScript's backend: its option group (its exporter and runner still live in export/ and
runtime/)."""

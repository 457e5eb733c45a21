"""ONNX's backend: its option group (more of it moves here from export/, runtime/ and
parity/)."""

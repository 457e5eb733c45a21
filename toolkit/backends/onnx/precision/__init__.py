"""ONNX's reduced precisions: fp16 and bf16 casts, INT8 Q/DQ in two layouts, and the
accuracy-controlled search that keeps the most sensitive layers in float."""

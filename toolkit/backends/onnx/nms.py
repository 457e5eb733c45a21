"""The detection contract's NMS as one standard ONNX `NonMaxSuppression` node, registered
with `detection.postprocess.GRAPH_NMS` on import (the exporter imports this module): under
`torch.onnx.export` the graph gets the node (on boxes [B,N,4] and scores [B,C,N], which
TensorRT's parser maps to its NMS layer), elsewhere the reference selection runs. Same
(image, class, box) rows either way."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from toolkit.detection import postprocess


class NonMaxSuppression(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, boxes: Tensor, scores: Tensor, max_per_class: int, iou: float, score: float
    ) -> Tensor:
        return postprocess._select_reference(boxes, scores, iou, score)

    @staticmethod
    def symbolic(
        g: Any, boxes: Any, scores: Any, max_per_class: int, iou: float, score: float
    ) -> Any:
        scores_bcn = g.op("Transpose", scores, perm_i=[0, 2, 1])
        return g.op(
            "NonMaxSuppression", boxes, scores_bcn,
            g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([score], dtype=torch.float32)),
            center_point_box_i=0,  # corners; IoU is the same for xyxy and ONNX's yxyx
        )


postprocess.GRAPH_NMS["onnx"] = (torch.onnx.is_in_onnx_export, NonMaxSuppression.apply)

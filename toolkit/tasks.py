"""The task table: what a bundle's outputs mean, and so how parity, calibration, golden samples
and the accuracy gate treat them. Like the format table, an entry names its code as
'module:function' hooks, resolved only when called: reading the table imports nothing heavy.
The stages ask the bundle's task (`of`) instead of branching on `detection`.

- classification: outputs compared element by element (top-k agreement where an output looks
  like class scores); the accuracy gate is top-1 accuracy on labelled `--eval-data`. Plain
  tensors (a regressor, an embedding) share this entry: elementwise parity is theirs too, and
  their gate runs only when labels are given.
- detection: the detection contract (boxes, scores, labels, num_detections): parity matches
  detections by IoU, golden samples must show something distinct, calibration quantizes the
  network only, and the gate is COCO mAP on images with boxes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    #: (section, *, artifact, precision, tolerances, reference, preset) -> an empty ParityReport
    report: str
    #: (path, inputs, section) -> TaskEvaluation: the gate's metric on labelled data
    evaluation: str
    #: (path, inputs, *, max_batches, batch_size, section) -> input batches of the labelled
    #: data, the labels checked (what judges reduced precisions beside the metric)
    eval_inputs: str
    #: (loaded, real feed or None, PrecisionOptions with data or None) -> the example golden
    #: samples are drawn from
    golden_example: str | None = None
    #: INT8 quantizes the network's heavy ops only, not post-processing in the graph
    quantize_network_only: bool = False
    #: real data is read (and checked) even for an fp32-only export: golden samples need it
    golden_needs_real_data: bool = False

    def hook(self, name: str) -> Callable[..., Any]:
        module, _, attr = getattr(self, name).partition(":")
        return getattr(importlib.import_module(module), attr)


TASKS: dict[str, Task] = {
    "classification": Task(
        name="classification",
        description="class scores or plain tensors: elementwise parity, top-1 accuracy gate",
        report="toolkit.parity.report:elementwise_report",
        evaluation="toolkit.parity.task_eval:classification_evaluation",
        eval_inputs="toolkit.parity.task_eval:classification_inputs",
    ),
    "detection": Task(
        name="detection",
        description="boxes/scores/labels/num_detections: IoU-matched parity, COCO mAP gate",
        report="toolkit.parity.detection_report:contract_report",
        evaluation="toolkit.parity.task_eval:detection_evaluation",
        eval_inputs="toolkit.parity.task_eval:detection_inputs",
        golden_example="toolkit.export.golden:detecting_example",
        quantize_network_only=True,
        golden_needs_real_data=True,
    ),
}


def of(detection: Mapping[str, Any] | None) -> Task:
    """The task of a model or bundle from its detection section (a manifest's `detection`, a
    loaded model's `detection`): the one thing that tells the tasks apart."""
    return TASKS["detection" if detection else "classification"]

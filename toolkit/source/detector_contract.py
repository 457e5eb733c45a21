"""Detectors as the toolkit exports them: the fixed-rank output contract, whatever the model.

`as_detector` looks at the model's own output once and wraps it:
- torchvision's convention (`list[dict(boxes, scores, labels)]`, found automatically):
  `TorchvisionDetectionAdapter` feeds the list from a batched tensor and pads to K;
- raw heads (`boxes` [B,N,4], `scores` [B,N,C]) with `--nms`: class-aware NMS appended
  (a graph NMS operator where the exporter has one), the same module being the reference;
- a model that already returns the contract (`--task detection`) is taken as it is.
The result is a LoadedModel whose outputs are named num_detections, boxes, scores, labels, and
a `detection` record for the manifest (convention, K, score threshold, NMS).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from torch import Tensor, nn

from toolkit.detection.match import OUTPUT_NAMES
from toolkit.detection.options import INSTANCE_TASKS, DetectionOptions
from toolkit.errors import UsageError
from toolkit.source.wrapper import LoadedModel, flatten_outputs


class Detections(NamedTuple):
    """The contract's four outputs; a NamedTuple so flattening names them."""

    num_detections: Tensor
    boxes: Tensor
    scores: Tensor
    labels: Tensor


class _Contract(nn.Module):
    """Names the four contract tensors of a post-processing module."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, images: Tensor) -> Detections:
        n, boxes, scores, labels = self.inner(images)
        return Detections(n, boxes, scores, labels)

    def toolkit_legacy_onnx_module(self, example: Tensor) -> nn.Module | None:
        """The module the legacy tracing exporter should trace, when it isn't this one
        (torchvision detectors: a scripted loop over the batch keeps the batch dynamic)."""
        hook = getattr(self.inner, "export_module", None)
        return hook(example) if hook is not None else None


class _FlatOutputs(nn.Module):
    """A model's outputs flattened to a tuple, so NMS can pick boxes and scores by index."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        return tuple(t for _, t in flatten_outputs(self.model(images)))


def nms_iou_of(model: nn.Module) -> float | None:
    """The NMS IoU threshold a torchvision detector applies (None when it doesn't say)."""
    for owner in (getattr(model, "roi_heads", None), model):
        for name in ("nms_thresh", "box_nms_thresh"):
            value = getattr(owner, name, None)
            if isinstance(value, (int, float)):
                return float(value)
    return None


def score_threshold_of(model: nn.Module) -> float:
    """The score threshold a torchvision detector applies (0.0 when it doesn't say)."""
    for owner in (getattr(model, "roi_heads", None), model):
        for name in ("score_thresh", "box_score_thresh"):
            value = getattr(owner, name, None)
            if isinstance(value, (int, float)):
                return float(value)
    return 0.0


def as_detector(loaded: LoadedModel, options: DetectionOptions) -> LoadedModel:
    """`loaded` wrapped to the detection contract, or unchanged when it isn't a detector."""
    from toolkit.detection.postprocess import (
        RawHeadNMS,
        TorchvisionDetectionAdapter,
        looks_like_torchvision_detections,
    )

    if options.task == "none":
        return loaded
    if len(loaded.inputs) != 1:
        if options.task == "detection" or options.nms is not None:
            raise UsageError(f"detection export takes one image input; the model has "
                             f"{[s.name for s in loaded.inputs]}")
        return loaded
    detr = rtdetr_head(loaded.module)
    if detr is not None and (options.nms is None or options.nms.layout == "rows"):
        from toolkit.detection.options import YOLO_DEFAULTS

        detr.export = True  # Ultralytics' switch: the decoder returns its rows alone
        return _rows(loaded, options, "Ultralytics RT-DETR decoder (NMS-free; rows of "
                     "normalised cx, cy, w, h, score, class)",
                     default_score=YOLO_DEFAULTS["score"],
                     default_k=int(min(detr.num_queries, detr.max_det)),
                     model_box="cxcywh-norm")
    if _detr_queries(loaded) and (options.nms is None or options.nms.layout == "rows"):
        return _queries(loaded, options)
    head = ultralytics_head(loaded.module)
    if head is not None and (options.nms is None or options.nms.layout == "yolo"):
        return _yolo(loaded, options, head)
    raw = loaded.raw_output(loaded.example_feed(batch=None))
    info: dict[str, Any] = {"max_detections": options.k}
    if options.nms is not None and options.nms.layout == "yolo":
        return _yolo(loaded, options, None)
    if looks_like_torchvision_detections(raw):
        if options.nms is not None:
            raise UsageError("--nms appends NMS to raw-head outputs (boxes [B,N,4], scores "
                             "[B,N,C]); this model runs its own post-processing (torchvision's "
                             "list of dicts), so leave --nms out")
        detector, inner_name = _torchvision_core(loaded, options.k)
        module: nn.Module = _Contract(TorchvisionDetectionAdapter(detector, options.k))
        info.update(convention="torchvision", score_threshold=score_threshold_of(detector),
                    nms_iou=nms_iou_of(detector))
        instance = _torchvision_instances(raw, detector, options, info)
        if instance is not None:
            module = instance
        if inner_name is not None:
            info["note"] = "; ".join(filter(None, (
                f"exported the torchvision detector '{inner_name}' inside "
                f"{type(loaded.module).__name__}: its forward passes images through unchanged "
                "(same detections on the example)", info.get("note"))))
        return _with_detection(loaded, module, info, core=detector,
                               user_prefix=inner_name or "")
    elif options.task in INSTANCE_TASKS:
        raise UsageError(f"--task {options.task} takes a raw YOLO-style head: add --nms "
                         "layout=yolo (with classes=N for pose), or export an Ultralytics "
                         "Segment, Pose or OBB model or a torchvision Mask / Keypoint R-CNN, "
                         "which are recognised by themselves")
    elif _rows_shaped(raw) and (options.task == "detection" or (
            options.nms is not None and options.nms.layout == "rows")):
        return _rows(loaded, options, "post-processed detection rows [B,K,6]",
                     default_score=0.0, default_k=int(flatten_outputs(raw)[0][1].shape[1]))
    elif options.nms is not None and options.nms.layout == "rows":  # checked as yolo is
        shapes = ", ".join(str(list(t.shape)) for _, t in flatten_outputs(raw))
        raise UsageError(f"layout=rows needs one output [B,K,6] (x1, y1, x2, y2, score, "
                         f"class); the model returns {shapes or 'nothing'}")
    elif options.nms is not None:
        from toolkit.detection.postprocess import find_raw_head_outputs

        pairs = flatten_outputs(raw)
        boxes_i, scores_i = find_raw_head_outputs([(n, tuple(t.shape)) for n, t in pairs])
        nms = options.nms
        names = (pairs[boxes_i][0], pairs[scores_i][0])
        if isinstance(raw, Mapping) and all(n in raw for n in names):
            # a dict output is indexed by key, which torch's scripting handles
            head, keys = loaded.module, names
        else:
            head, keys = _FlatOutputs(loaded.module), (boxes_i, scores_i)
        module = _Contract(RawHeadNMS(
            head, nms.iou_threshold, nms.score_threshold, nms.max_detections, boxes=keys[0],
            scores=keys[1], multi_label=not nms.keeps_one_label_per_box,
            agnostic=nms.agnostic))
        info.update(convention="raw-head", score_threshold=nms.score_threshold,
                    nms_iou=nms.iou_threshold,
                    nms={**_nms_record(nms), "boxes": pairs[boxes_i][0],
                         "scores": pairs[scores_i][0]},
                    classes=int(pairs[scores_i][1].shape[-1]))
    else:
        names = [n for n, _ in flatten_outputs(raw)]
        if options.task == "auto" and len(names) == 1 and _rows_shaped(raw):
            loaded.hints.append("the model returns one [B,K,6] tensor, as NMS-free detectors "
                                "do (x1, y1, x2, y2, score, class): add --task detection to "
                                "judge it by IoU matching instead of element by element")
            return loaded
        if options.task == "detection" and names != list(OUTPUT_NAMES):
            raise UsageError(
                f"--task detection: the model returns {names or 'nothing'}; a detector "
                "either follows torchvision's convention (list of dicts with boxes, scores, "
                "labels), returns raw boxes [B,N,4] and scores [B,N,C] (add --nms "
                "iou=0.45,score=0.25), one [B,4+C,N] YOLO prediction (--nms layout=yolo), "
                "rows [B,K,6] of x1, y1, x2, y2, score, class, or num_detections, boxes, "
                "scores, labels")
        if names != list(OUTPUT_NAMES):
            return loaded
        return _with_detection(loaded, loaded.module, {**info, "convention": "contract"})
    return _with_detection(loaded, module, info)


_TORCHVISION_TASK = {"masks": "segmentation", "keypoints": "pose"}


def _torchvision_instances(raw: Any, detector: nn.Module, options: DetectionOptions,
                           info: dict[str, Any]) -> nn.Module | None:
    """Mask R-CNN's masks and Keypoint R-CNN's keypoints, kept: the adapter that pads them
    with the detections (None for a box-only detector). `info` gains the task's record; what
    --task leaves out is dropped, said and recorded."""
    from toolkit.detection.torchvision_instances import (
        MASK_THRESHOLD,
        TorchvisionInstanceAdapter,
        instance_kinds,
        named_instances,
    )

    found = instance_kinds(raw)
    if not found:
        if options.task in INSTANCE_TASKS:
            raise UsageError(f"--task {options.task}: this torchvision detector returns boxes, "
                             "scores and labels only (no masks or keypoints)")
        return None
    wanted = {"segmentation": "masks", "pose": "keypoints"}.get(options.task)
    if options.task == "obb" or (wanted is not None and wanted not in found):
        raise UsageError(f"--task {options.task}: this torchvision detector returns "
                         f"{' and '.join(found)}; say --task "
                         f"{' or '.join(_TORCHVISION_TASK[k] for k in found)}")
    if options.task == "detection":
        info["dropped"] = list(found)
        info["note"] = (f"--task detection: the detector's {' and '.join(found)} are "
                        "dropped, as asked; boxes, scores and labels only")
        return None
    if wanted is None and len(found) > 1:
        raise UsageError("this detector returns masks and keypoints; the contract carries one "
                         "instance output: say --task segmentation (keypoints dropped) or "
                         "--task pose (masks dropped)")
    kept = wanted or found[0]
    dropped = [k for k in found if k != kept]
    task = _TORCHVISION_TASK[kept]
    instances: dict[str, Any] = {"task": task, "output": kept}
    if kept == "masks":
        instances.update(mask_stride=1, mask_threshold=MASK_THRESHOLD)
        what = ("masks [B,K,H,W]: torchvision's pasted mask probabilities at the input's size "
                "(a pixel is in the instance over 0.5; pasted in the box grown by 1/14, as "
                "torchvision pastes, so they may spill past it)")
    else:
        points = int(raw[0]["keypoints"].shape[1])
        instances.update(keypoints=points, keypoint_dims=3)
        what = (f"keypoints [B,K,{points},3] (x, y input pixels, torchvision's visibility "
                "column, 1; its keypoints_scores, heatmap logits, are not kept)")
    info.update(task=task, instances=instances)
    note = f"torchvision {type(detector).__name__}: the contract plus {what}"
    if dropped:
        info["dropped"] = dropped
        note += f"; its {' and '.join(dropped)} dropped, as --task {options.task} asks"
    info["note"] = note
    return named_instances(TorchvisionInstanceAdapter(detector, options.k, (kept,)))


#: Ultralytics heads whose outputs are more than boxes and class scores, and the contract
#: can't carry
_ULTRALYTICS_OTHER_HEADS = {"WorldDetect": "text embeddings"}
#: Ultralytics heads (by class, or a class they derive from) of the instance tasks
_ULTRALYTICS_INSTANCE_HEADS = {"Segment": "segmentation", "Pose": "pose", "OBB": "obb"}


def instance_task_of(head: nn.Module | None) -> str | None:
    """The instance task of an Ultralytics head (Segment, Pose, OBB or a subclass), or None."""
    if head is None:
        return None
    for cls in type(head).__mro__:
        if cls.__name__ in _ULTRALYTICS_INSTANCE_HEADS:
            return _ULTRALYTICS_INSTANCE_HEADS[cls.__name__]
    return None


def ultralytics_head(module: nn.Module) -> nn.Module | None:
    """The Ultralytics Detect head inside a model (its class name, `nc`, `stride` and
    `reg_max`: Ultralytics' own markers), or None for any other model."""
    heads = [sub for sub in module.modules()
             if type(sub).__module__.startswith("ultralytics.") and hasattr(sub, "nc")
             and hasattr(sub, "stride") and hasattr(sub, "reg_max")]
    return heads[-1] if heads else None


def rtdetr_head(module: nn.Module) -> nn.Module | None:
    """Ultralytics' RT-DETR decoder inside a model (rows of normalised cx, cy, w, h, score,
    class), or None."""
    heads = [sub for sub in module.modules()
             if type(sub).__module__.startswith("ultralytics.")
             and type(sub).__name__ == "RTDETRDecoder"]
    return heads[-1] if heads else None


def _detr_queries(loaded: LoadedModel) -> bool:
    """transformers' RT-DETR (and DETR-style heads like it): `logits` and `pred_boxes` per
    query, boxes normalised cx, cy, w, h, class scores sigmoids."""
    return type(loaded.module).__name__ == "RTDetrForObjectDetection"


def _queries(loaded: LoadedModel, options: DetectionOptions) -> LoadedModel:
    from toolkit.detection.options import DEFAULT_MAX_DETECTIONS
    from toolkit.detection.postprocess import QueriesToRows, RowsToContract

    nms = options.nms
    k = nms.max_detections if nms is not None else DEFAULT_MAX_DETECTIONS
    # transformers' post_process_object_detection keeps scores over 0.5 by default
    score = nms.score_threshold if nms is not None else 0.5
    module = _Contract(RowsToContract(QueriesToRows(loaded.module, k), 0, score, k,
                                      box_format="cxcywh-norm"))
    info = {"max_detections": k, "convention": "rows", "score_threshold": score,
            "nms_iou": None, "box": "cxcywh-norm", "queries": True,
            "note": f"transformers {type(loaded.module).__name__}: sigmoid class scores, the "
                    f"top {k} (query, class) pairs over {score}, boxes normalised cx, cy, w, "
                    "h -> xyxy pixels, no NMS (its own post-processing); --nms "
                    "score=..,max=.. to change"}
    return _with_detection(loaded, module, info)


def _nms_record(nms: Any) -> dict[str, Any]:
    return {"iou": nms.iou_threshold, "score": nms.score_threshold, "layout": nms.layout,
            "multi_label": not nms.keeps_one_label_per_box, "agnostic": nms.agnostic}


def _yolo(loaded: LoadedModel, options: DetectionOptions, head: nn.Module | None
          ) -> LoadedModel:
    """An Ultralytics-style raw head ([B,4+C,N] cx,cy,w,h + class scores): decoded in the graph
    and NMS appended, with Ultralytics' prediction defaults where --nms doesn't say."""
    import torch

    from toolkit.detection.options import YOLO_DEFAULTS, NmsOptions
    from toolkit.detection.postprocess import RawHeadNMS, YoloDecode

    kind = type(head).__name__ if head is not None else None
    if kind in _ULTRALYTICS_OTHER_HEADS:
        raise UsageError(f"{kind} head: its outputs carry {_ULTRALYTICS_OTHER_HEADS[kind]}, "
                         "which the detection contract (boxes, scores, labels) doesn't hold "
                         "yet; export it with --task none for the raw tensors, or a Detect "
                         "model")
    head_task = instance_task_of(head)
    if head_task is not None and options.task in INSTANCE_TASKS and options.task != head_task:
        raise UsageError(f"--task {options.task}: the model's Ultralytics {kind} head is a "
                         f"{head_task} head; leave --task out, or say --task {head_task}")
    task = head_task or (options.task if options.task in INSTANCE_TASKS else None)
    dropped = None
    if head_task is not None and options.task == "detection":
        from toolkit.detection.yolo_instances import EXTRA_OUTPUT

        dropped, task = EXTRA_OUTPUT[head_task], None  # asked for: boxes alone
    if head is not None and any(spec.dynamic_dims for spec in loaded.inputs):
        # Ultralytics' own switch for a dynamic export: anchors rebuilt on every call. Else
        # the head caches them with the last input's shape, and torch.export guards the
        # batch on that shape ("Constraints violated (batch)").
        head.dynamic = True
    if getattr(head, "end2end", False):
        if task is not None:
            raise UsageError(f"Ultralytics {kind} head, end-to-end (NMS-free): its rows carry "
                             f"{task} data the toolkit doesn't read yet; build the model with "
                             "end2end=False (NMS in the graph), or --task none for raw tensors")
        head.export = True  # type: ignore[union-attr]
        return _rows(loaded, options, f"Ultralytics {kind} head, end-to-end (NMS-free)",
                     default_score=YOLO_DEFAULTS["score"],
                     default_k=int(getattr(head, "max_det", YOLO_DEFAULTS["max"])))
    notes = []
    nms = options.nms
    if nms is None:
        nms = NmsOptions(YOLO_DEFAULTS["iou"], YOLO_DEFAULTS["score"], YOLO_DEFAULTS["max"],
                         layout="yolo")
        notes.append(f"Ultralytics {kind} head: decoded in the graph, NMS with Ultralytics' "
                     f"prediction defaults (iou {nms.iou_threshold}, conf "
                     f"{nms.score_threshold}, max_det {nms.max_detections}, one label per "
                     "box); --nms iou=..,score=..,max=..,multi_label=1,agnostic=1 to change")
    if head is not None:
        head.export = True  # Ultralytics' own switch: the head returns its prediction alone
    flat = _FlatOutputs(loaded.module)
    with torch.inference_mode():
        outputs = flat(loaded.to_tensors(loaded.example_feed(batch=None))[0])
    if task is not None:
        return _yolo_instances(loaded, flat, outputs, task, nms, head, notes)
    classes = getattr(head, "nc", None)
    index, channels_first = _yolo_prediction(outputs, classes, _extra_width(head))
    _check_class_scores(outputs[index], channels_first, classes)
    decode = YoloDecode(flat, index, channels_first,
                        classes if dropped is not None else None)
    if dropped is not None:
        notes.insert(0, f"--task detection: the {kind} head's {dropped} are dropped, as asked; "
                        "boxes, scores and labels only")
    module = _Contract(RawHeadNMS(decode, nms.iou_threshold, nms.score_threshold,
                                  nms.max_detections,
                                  multi_label=not nms.keeps_one_label_per_box,
                                  agnostic=nms.agnostic))
    info: dict[str, Any] = {
        "max_detections": nms.max_detections, "convention": "yolo",
        "score_threshold": nms.score_threshold, "nms_iou": nms.iou_threshold,
        "nms": _nms_record(nms),
        "classes": int(classes) if classes is not None else
        int(outputs[index].shape[1 if channels_first else 2]) - 4}
    if dropped is not None:
        info["dropped"] = [dropped]
    if notes:
        info["note"] = "; ".join(notes)
    return _with_detection(loaded, module, info)


def _extra_width(head: nn.Module | None) -> int:
    """Channels an Ultralytics head's prediction carries after its class scores."""
    task = instance_task_of(head)
    if task == "segmentation":
        return int(head.nm)  # type: ignore[union-attr]
    if task == "pose":
        return int(head.nk)  # type: ignore[union-attr]
    if task == "obb":
        return int(head.ne)  # type: ignore[union-attr]
    return 0


def _yolo_instances(loaded: LoadedModel, flat: nn.Module, outputs: tuple[Any, ...], task: str,
                    nms: Any, head: nn.Module | None, notes: list[str]) -> LoadedModel:
    """A Segment / Pose / OBB head (Ultralytics', or a model's declared with --task and
    --nms layout=yolo): the contract plus masks, keypoints or oriented boxes."""
    from toolkit.detection.yolo_instances import EXTRA_OUTPUT, OBB_CANDIDATES, YoloInstances

    classes, extra, protos, keypoint_shape = _instance_layout(outputs, task, nms, head)
    index, channels_first = _yolo_prediction(outputs, classes, extra)
    if not channels_first:
        raise UsageError(f"--task {task}: the prediction must be [B,4+C+E,N] (channels "
                         f"first, Ultralytics' layout); found {list(outputs[index].shape)}")
    _check_class_scores(outputs[index], channels_first, classes)
    kwargs: dict[str, Any] = {}
    instances: dict[str, Any] = {"task": task, "output": EXTRA_OUTPUT[task]}
    if task == "segmentation":
        proto_index, grid = protos
        stride = _mask_stride(loaded, grid)
        kwargs.update(proto_index=proto_index, mask_stride=stride)
        instances.update(mask_stride=stride, mask_threshold=0.5, mask_prototypes=extra)
    elif task == "pose":
        kwargs["keypoint_shape"] = keypoint_shape
        instances.update(keypoints=keypoint_shape[0], keypoint_dims=keypoint_shape[1])
    else:
        instances.update(angle="radians; the w side along (cos, sin) in image x right, y down "
                         "(clockwise on screen)", rotated_nms="probiou fast NMS",
                         candidates=max(OBB_CANDIDATES, nms.max_detections))
    module = YoloInstances(flat, task, classes, index=index, iou_threshold=nms.iou_threshold,
                           score_threshold=nms.score_threshold,
                           max_detections=nms.max_detections,
                           multi_label=bool(nms.multi_label) if task != "obb" else False,
                           agnostic=nms.agnostic, **kwargs)
    what = {"segmentation": f"masks [B,K,H/{kwargs.get('mask_stride')},W/"
                            f"{kwargs.get('mask_stride')}] (probabilities, zero outside the "
                            "box; a pixel is in the instance over 0.5)",
            "pose": f"keypoints [B,K,{keypoint_shape[0]},3] (x, y input pixels, score)",
            "obb": "oriented_boxes [B,K,5] (cx, cy, w, h, angle in radians) from a rotated "
                   "NMS by probabilistic IoU (Ultralytics'); boxes enclose them"}[task]
    kind = (f"Ultralytics {type(head).__name__} head" if head is not None
            else f"--task {task} (layout=yolo)")
    notes.insert(0, f"{kind}: the contract plus {what}")
    info: dict[str, Any] = {
        "max_detections": nms.max_detections, "convention": "yolo", "task": task,
        "score_threshold": nms.score_threshold, "nms_iou": nms.iou_threshold,
        "nms": {**_nms_record(nms), "classes": classes}, "classes": classes,
        "instances": instances, "note": "; ".join(notes)}
    return _with_detection(loaded, module, info)


def _instance_layout(outputs: tuple[Any, ...], task: str, nms: Any, head: nn.Module | None
                     ) -> tuple[int, int, tuple[int, int] | None, tuple[int, int]]:
    """(classes, extra channels, (prototype output index, its grid width) for
    segmentation, keypoint shape) of an instance head's outputs."""
    keypoint_shape = (0, 3)
    protos = None
    if task == "segmentation":
        found = [(i, t) for i, t in enumerate(outputs) if t.dim() == 4]
        if len(found) != 1:
            shapes = ", ".join(str(list(t.shape)) for t in outputs)
            raise UsageError(f"--task segmentation: needs one prototype output [B,M,h,w] "
                             f"beside the prediction; the model returns {shapes}")
        protos = (found[0][0], int(found[0][1].shape[-1]))
        extra = int(found[0][1].shape[1])
    elif task == "pose":
        shape = getattr(head, "kpt_shape", None)
        if shape is not None:
            keypoint_shape = (int(shape[0]), int(shape[1]))
        extra = keypoint_shape[0] * keypoint_shape[1]
    else:
        extra = 1
    classes = getattr(head, "nc", None) or (nms.classes if nms is not None else None)
    if classes is None:
        prediction = [t for t in outputs if t.dim() == 3]
        if task == "pose" or not prediction:
            raise UsageError(f"--task {task} with layout=yolo: say how many class scores the "
                             "prediction holds, e.g. --nms layout=yolo,classes=1")
        classes = int(prediction[0].shape[1]) - 4 - extra
    if task == "pose" and head is None:
        channels = [int(t.shape[1]) for t in outputs if t.dim() == 3]
        rest = (channels[0] - 4 - int(classes)) if channels else 0
        if rest <= 0 or rest % 3:
            raise UsageError(f"--task pose: after 4 box and {classes} class channels the "
                             f"prediction has {rest} left, not P x 3 keypoint values")
        keypoint_shape = (rest // 3, 3)
        extra = rest
    return int(classes), extra, protos, keypoint_shape


def _mask_stride(loaded: LoadedModel, grid: int) -> int:
    """Input pixels per prototype cell (4 for Ultralytics), from the example's width."""
    width = int(loaded.to_tensors(loaded.example_feed(batch=None))[0].shape[-1])
    if grid <= 0 or width % grid:
        raise UsageError(f"--task segmentation: the prototypes' width {grid} doesn't divide "
                         f"the input's width {width}")
    return width // grid


def _check_class_scores(prediction: Any, channels_first: bool,
                        classes: int | None = None) -> None:
    """A YOLO prediction's class scores are sigmoids: values outside [0, 1] mean the tensor is
    something else (rows of box, score, class), which judging would only misread."""
    end = 4 + classes if classes is not None else None
    scores = prediction[:, 4:end, :] if channels_first else prediction[..., 4:end]
    low, high = float(scores.min()), float(scores.max())
    if low < 0.0 or high > 1.0:
        raise UsageError(
            f"layout=yolo reads the output {list(prediction.shape)} as 4 box columns and "
            f"{int(scores.shape[1 if channels_first else 2])} class scores, but those 'scores' "
            f"run from {low:.4g} to {high:.4g}, outside [0, 1]: it is not a YOLO prediction. "
            "Rows of box, score, class (an NMS-free head) take --nms layout=rows,box=FORMAT "
            "(xyxy, cxcywh, xyxy-norm or cxcywh-norm)")


def _rows_shaped(raw: Any) -> bool:
    """One output (or the first) of [B,K,6] rows: x1, y1, x2, y2, score, class."""
    flat = flatten_outputs(raw)
    return bool(flat) and flat[0][1].dim() == 3 and int(flat[0][1].shape[2]) == 6


def _rows(loaded: LoadedModel, options: DetectionOptions, what: str,
          default_score: float, default_k: int | None = None,
          model_box: str | None = None) -> LoadedModel:
    """A model that post-processes itself into [B,K,6] rows (a box, score, class): its rows
    above the score threshold become the contract, judged by IoU like any detector. The box
    format is --nms box=.., else the model's own (`model_box`, RT-DETR's), else xyxy pixels."""
    import torch

    from toolkit.detection.match import check_pixel_boxes
    from toolkit.detection.postprocess import RowsToContract

    nms = options.nms
    score = nms.score_threshold if nms is not None else default_score
    k = nms.max_detections if nms is not None else (default_k or options.max_detections)
    box = (nms.box_format if nms is not None and nms.box_format else None) or model_box or "xyxy"
    flat = _FlatOutputs(loaded.module)
    images = loaded.to_tensors(loaded.example_feed(batch=None))[0]
    if not box.endswith("-norm"):
        # the rows' own boxes, before any threshold: normalised ones are refused here, not
        # judged in units where every tiny box overlaps every other
        with torch.inference_mode():
            rows = flat(images)[0]
        n = rows.shape[1]
        check_pixel_boxes({"num_detections": torch.full((rows.shape[0],), n).numpy(),
                           "boxes": rows[..., 0:4].float().numpy(),
                           "scores": rows[..., 4].float().numpy(),
                           "labels": torch.zeros(rows.shape[:2], dtype=torch.int64).numpy()},
                          (int(images.shape[-2]), int(images.shape[-1])),
                          f"the model's rows [B,K,6] read as box={box}")
    module = _Contract(RowsToContract(flat, 0, score, k, box_format=box))
    info = {"max_detections": k, "convention": "rows", "score_threshold": score,
            "nms_iou": None, "box": box,
            "note": f"{what}: rows scoring over {score} are the detections, best first "
                    f"(K {k}; box {box} -> xyxy pixels); --nms score=..,max=..,box=.. to "
                    "change"}
    return _with_detection(loaded, module, info)


def _yolo_prediction(outputs: tuple[Any, ...], classes: int | None,
                     extra: int = 0) -> tuple[int, bool]:
    """Which output is the [B,4+C+E,N] (or [B,N,4+C+E]) prediction, and whether channels
    come first; `classes` is the head's `nc` when known, `extra` its E (mask coefficients,
    keypoint values, an angle)."""
    found = []
    for i, tensor in enumerate(outputs):
        if tensor.dim() != 3:
            continue
        a, b = int(tensor.shape[1]), int(tensor.shape[2])
        for channels, first in ((a, True), (b, False)):
            if (classes is not None and channels == classes + 4 + extra) or (
                    classes is None and channels >= 5 and channels < (b if first else a)):
                found.append((i, first))
                break
    if not found:
        shapes = ", ".join(str(list(t.shape)) for t in outputs) or "nothing"
        raise UsageError(f"layout=yolo needs an output [B,4+C,N] (cx, cy, w, h, class scores)"
                         f"; the model returns {shapes}")
    return found[0]


def _torchvision_core(loaded: LoadedModel, k: int) -> tuple[nn.Module, str | None]:
    """The module to adapt: the user's, or the torchvision detector inside it when the user's
    module (a LightningModule, typically) only passes images through to it.

    torchvision's detectors script with a `(losses, detections)` signature; a wrapper whose
    forward takes a batched tensor can't be scripted around them, and tracing bakes the batch
    in. The inner detector is taken only when it gives exactly the wrapper's detections on the
    example, so nothing the wrapper does is lost. Returns (module, its name inside the user's
    module, or None for the user's module itself)."""
    import torch

    from toolkit.detection.postprocess import TorchvisionDetectionAdapter

    module = loaded.module
    if hasattr(module, "eager_outputs"):
        return module, None
    inner = [(name, sub) for name, sub in module.named_modules()
             if sub is not module and hasattr(sub, "eager_outputs")]
    if len(inner) != 1:
        return module, None
    name, core = inner[0]
    images = loaded.to_tensors(loaded.example_feed(batch=None))[0]
    with torch.inference_mode():
        want = TorchvisionDetectionAdapter(module, k)(images)
        got = TorchvisionDetectionAdapter(core, k)(images)
    if all(w.shape == g.shape and torch.equal(w, g) for w, g in zip(want, got)):
        return core.eval(), name
    return module, None


def _with_detection(loaded: LoadedModel, module: nn.Module, info: dict[str, Any], *,
                    core: nn.Module | None = None, user_prefix: str = "") -> LoadedModel:
    """`core` is the module the wrapper holds (the user's, or the torchvision detector inside
    it, at `user_prefix`): localize names layers by the user's paths, without the wrapper's."""
    core = loaded.module if core is None else core
    info["module_prefix"] = next((name for name, sub in module.named_modules()
                                  if sub is core), "")
    if user_prefix:
        info["user_prefix"] = user_prefix
    wrapped = LoadedModel(module=module, inputs=loaded.inputs, call_style="positional",
                          example=loaded.example, source=loaded.source)
    wrapped.detection = info
    return wrapped


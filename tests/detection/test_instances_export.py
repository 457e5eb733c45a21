"""Instance segmentation, pose and oriented boxes, end to end on Ultralytics' own heads built
from their packaged YAMLs (random weights, BatchNorm recalibrated so that they detect things;
nothing downloaded): recognised with no wrapper, exported with NMS and their post-processing
in the graph, and judged per matched detection by mask IoU, OKS and rotated IoU. Planted
defects (a head's weights x 1.05) are caught and named by the part they hit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("ultralytics", reason="ultralytics (a test dependency, in the dev extra) "
                    "is not installed")

from toolkit.bundle import Bundle
from toolkit.cli.app import app
from toolkit.demo.instance_data import make_instance_data

cli = CliRunner()
MODELS = "tests.detection.yolo_models"
SIZE = 64


def _export(out: Path, factory: str, *args: str, to: str = "onnx") -> str:
    result = cli.invoke(app, ["export", f"{MODELS}:{factory}", "--input",
                              f"images:1-2x3x{SIZE}x{SIZE}", "--to", to,
                              "--out", str(out), *args], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory) -> Path:
    data = make_instance_data(8, split="test", seed=0, size=SIZE)
    path = tmp_path_factory.mktemp("instances") / "eval.npz"
    np.savez(path, images=data.pop("x"), **data)
    return path


@pytest.fixture(scope="module")
def seg(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("seg") / "bundle"
    return out, _export(out, "yolo11n_seg", "--model-arg", "classes=3", to="onnx,torchscript")


@pytest.fixture(scope="module")
def pose(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("pose") / "bundle"
    return out, _export(out, "yolo11n_pose", "--model-arg", "classes=3",
                        "--model-arg", "keypoints=5")


@pytest.fixture(scope="module")
def obb(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("obb") / "bundle"
    return out, _export(out, "yolo11n_obb", "--model-arg", "classes=3")


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _parity_instances(out: Path, fmt: str) -> dict:
    record = next(a for a in _manifest(out)["artifacts"] if a["format"] == fmt)
    return record["parity"]["instances"]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_segment_head_exports_masks_judged_by_mask_iou(seg, fmt):
    out, text = seg
    manifest = _manifest(out)
    names = [o["name"] for o in manifest["outputs"]]
    assert names == ["num_detections", "boxes", "scores", "labels", "masks"]
    section = manifest["detection"]
    assert section["task"] == "segmentation"
    assert section["instances"]["mask_stride"] == 4
    assert section["instances"]["mask_threshold"] == 0.5
    assert "Segment head: the contract plus masks" in text
    instances = _parity_instances(out, fmt)
    assert instances["passed"] and not instances["vacuous"] and instances["judged"] > 10
    assert instances["worst"]["mask_iou"]["value"] >= 0.98
    masks = Bundle.open(out).golden()[0].outputs["masks"]
    assert masks.shape[2:] == (SIZE // 4, SIZE // 4)
    assert masks.min() >= 0.0 and masks.max() <= 1.0


def test_masks_are_zero_outside_their_box_and_past_the_detections(seg):
    out, _ = seg
    sample = Bundle.open(out).golden()[0].outputs
    counts, boxes, masks = sample["num_detections"], sample["boxes"], sample["masks"]
    cells = (np.arange(SIZE // 4) * 4).astype(np.float32)
    for i, n in enumerate(counts):
        assert not masks[i, n:].any()
        for k in range(n):
            x1, y1, x2, y2 = boxes[i, k]
            inside = (((cells >= y1) & (cells < y2))[:, None]
                      & ((cells >= x1) & (cells < x2))[None, :])
            assert not masks[i, k][~inside].any()


def test_pose_head_exports_keypoints_judged_by_oks(pose):
    out, text = pose
    manifest = _manifest(out)
    assert [o["name"] for o in manifest["outputs"]][-1] == "keypoints"
    assert manifest["detection"]["instances"]["keypoints"] == 5
    keypoints = Bundle.open(out).golden()[0].outputs["keypoints"]
    assert keypoints.shape[2:] == (5, 3)
    instances = _parity_instances(out, "onnx")
    assert instances["passed"] and instances["worst"]["oks"]["value"] >= 0.99


def test_obb_head_exports_rotated_boxes_with_enclosing_boxes(obb):
    from toolkit.detection.instances import obb_to_xyxy

    out, text = obb
    assert "rotated NMS by probabilistic IoU" in text
    sample = Bundle.open(out).golden()[0].outputs
    n = int(sample["num_detections"][0])
    assert n > 0
    rotated, boxes = sample["oriented_boxes"][0, :n], sample["boxes"][0, :n]
    np.testing.assert_allclose(obb_to_xyxy(rotated), boxes, atol=1e-3)
    instances = _parity_instances(out, "onnx")
    assert instances["passed"] and instances["worst"]["rotated_iou"]["value"] >= 0.99


def test_rotated_nms_keeps_no_two_boxes_of_a_class_over_the_threshold(obb):
    """The graph's fast NMS: among the kept boxes of one class, no pair's probabilistic IoU
    exceeds the bundle's threshold (checked with the numpy reference, not the graph's)."""
    from toolkit.detection.instances import probiou

    out, _ = obb
    threshold = _manifest(out)["detection"]["nms_iou"]
    for sample in Bundle.open(out).golden():
        outputs = sample.outputs
        for i, n in enumerate(outputs["num_detections"]):
            rows, labels = outputs["oriented_boxes"][i, :n], outputs["labels"][i, :n]
            for label in np.unique(labels):
                same = rows[labels == label].astype(np.float64)
                iou = probiou(same, same)
                np.fill_diagonal(iou, 0)
                assert iou.max(initial=0) <= threshold + 1e-4


def test_probabilistic_iou_in_the_graph_matches_the_numpy_reference():
    import torch

    from toolkit.detection.instances import probiou
    from toolkit.detection.yolo_instances import probabilistic_iou

    rng = np.random.default_rng(0)
    boxes = np.concatenate([rng.uniform(10, 50, (12, 2)), rng.uniform(2, 20, (12, 2)),
                            rng.uniform(-np.pi / 4, 3 * np.pi / 4, (12, 1))], axis=1)
    ours = probabilistic_iou(torch.from_numpy(boxes), torch.from_numpy(boxes)).numpy()
    np.testing.assert_allclose(ours, probiou(boxes, boxes), atol=1e-6)


def _perturbed_run(out: Path, initializer: str) -> object:
    """Every golden sample through the bundle's ONNX with the initializers whose name
    contains `initializer` multiplied by 1.05, judged against the eager outputs as verify
    judges an artifact."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from toolkit import tasks

    bundle = Bundle.open(out)
    model = onnx.load(str(out / "model.onnx"))
    hit = 0
    for init in model.graph.initializer:
        if initializer in init.name and init.name.endswith("weight"):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.05, init.name))
            hit += 1
    assert hit, f"no initializer named like {initializer}"
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    section = bundle.manifest["detection"]
    report = tasks.of(section).hook("report")(section, artifact="onnx/planted",
                                              precision="fp32", tolerances=None,
                                              reference="eager", preset="fp32")
    for sample in bundle.golden():
        got = dict(zip(names, session.run(None, sample.inputs)))
        report.add_sample(sample.outputs, got)
    return report


def test_a_planted_defect_in_the_mask_prototypes_fails_as_masks(seg):
    out, _ = seg
    report = _perturbed_run(out, "proto.cv3")
    assert not report.passed
    assert report.combined.passed, report.summary_line()  # boxes untouched
    failures = " ".join(report.instance_failures())
    assert failures.startswith("masks:") and "image" in failures


def test_a_planted_defect_in_the_box_head_fails_as_boxes(seg):
    out, _ = seg
    report = _perturbed_run(out, "23.cv2.")
    assert not report.passed
    first = report.detection_failures()[0]
    assert "moved" in first or "lost" in first or "matched fraction" in first, first


def test_a_planted_defect_in_the_keypoint_head_fails_as_keypoints(pose):
    out, _ = pose
    report = _perturbed_run(out, "23.cv4.")
    assert not report.passed
    assert report.combined.passed, report.summary_line()
    assert report.instance_failures()[0].startswith("keypoints:")


def test_task_metrics_score_the_instance_outputs(seg, pose, obb, eval_data):
    """Each bundle's task metric on data with masks, keypoints and rotated boxes: perfect
    predictions (the ground truth itself, through the contract) score 100, the random-weight
    model something below, box mAP beside."""
    from toolkit.parity.task_eval import detection_evaluation

    data = np.load(eval_data)
    for (out, _), extra, metric in ((seg, "masks", "mask mAP"), (pose, "keypoints", "keypoint"),
                                    (obb, "oriented_boxes", "rotated-box")):
        bundle = Bundle.open(out)
        evaluation = detection_evaluation(str(eval_data), bundle.inputs,
                                          bundle.manifest["detection"])
        assert evaluation.metric.startswith(metric)
        index = {}

        def perfect(feed, extra=extra, index=index):
            start = index.get("at", 0)
            n = len(feed["images"])
            index["at"] = start + n
            labels = data["labels"][start:start + n]
            counts = (labels >= 0).sum(axis=1)
            outputs = {"num_detections": counts, "boxes": data["boxes"][start:start + n],
                       "scores": np.where(labels >= 0, 0.9, 0.0).astype(np.float32),
                       "labels": np.maximum(labels, 0)}
            if extra == "masks":
                outputs["masks"] = data["masks"][start:start + n, :, ::4, ::4].astype(
                    np.float32)
            elif extra == "keypoints":
                outputs["keypoints"] = data["keypoints"][start:start + n]
            else:
                outputs["oriented_boxes"] = data["obb"][start:start + n]
            return outputs

        result = evaluation(perfect)
        assert "box_map" in result and result["map"] > 0, (extra, result)
        if extra != "masks":  # masks at stride 4 lose their edges: below 100, above 0
            assert result["map"] == pytest.approx(100.0), (extra, result)


def test_task_detection_on_a_segment_head_drops_masks_and_says_so():
    from toolkit.detection.options import DetectionOptions
    from toolkit.source.detector_contract import as_detector
    from toolkit.source.load import load_model
    from toolkit.spec import parse_input

    loaded = load_model(f"{MODELS}:yolo11n_seg", inputs=[parse_input(f"images:1x3x{SIZE}x{SIZE}")],
                        model_args={"classes": 3})
    boxes_only = as_detector(loaded, DetectionOptions(task="detection"))
    assert [o.name for o in boxes_only.outputs] == ["num_detections", "boxes", "scores",
                                                     "labels"]
    assert boxes_only.detection["dropped"] == ["masks"]
    assert "masks are dropped, as asked" in boxes_only.detection["note"]
    assert boxes_only.detection["classes"] == 3


def test_a_task_the_head_is_not_is_refused(tmp_path):
    result = cli.invoke(app, ["export", f"{MODELS}:yolo11n_seg", "--model-arg", "classes=3",
                              "--input", f"images:1x3x{SIZE}x{SIZE}", "--to", "onnx",
                              "--task", "pose", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    assert "segmentation head" in " ".join(result.output.split())
    assert not (tmp_path / "x").exists()


def _mask_matmul(model) -> object:
    """The MatMul that assembles masks: the one computed from the NMS's selection."""
    from toolkit.backends.onnx.precision.int8 import post_processing_nodes

    after = set(post_processing_nodes(model))
    found = [n for n in model.graph.node if n.op_type == "MatMul" and n.name in after]
    assert len(found) == 1, [n.name for n in found]
    return found[0]


def test_reduced_precisions_leave_mask_assembly_in_fp32(seg, tmp_path):
    """INT8 quantises none of the post-processing: the coefficients x prototypes MatMul
    takes the selected coefficients in float and its result is never quantised (the
    prototypes are the network's output, an activation like any other); fp16 keeps it in
    float32."""
    import onnx

    from toolkit.backends.onnx.precision.fp16 import convert_float16
    from toolkit.backends.onnx.precision.int8 import quantize_int8

    out, _ = seg
    source = out / "model.onnx"
    assert _mask_matmul(onnx.load(str(source))).name
    feeds = [s.inputs for s in Bundle.open(out).golden()]
    quantize_int8(source, tmp_path / "int8.onnx", feeds, profile="cpu", min_samples=1)
    quantized = onnx.load(str(tmp_path / "int8.onnx"))
    producers = {o: n for n in quantized.graph.node for o in n.output}
    matmul = _mask_matmul(quantized)
    kinds = [producers[i].op_type if i in producers else "initializer" for i in matmul.input]
    assert kinds[0] != "DequantizeLinear", kinds  # the selected coefficients
    consumers = [n.op_type for n in quantized.graph.node if matmul.output[0] in n.input]
    assert "QuantizeLinear" not in consumers and consumers, consumers
    convert_float16(source, tmp_path / "fp16.onnx")
    half = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "fp16.onnx")))
    types = {v.name: v.type.tensor_type.elem_type for v in half.graph.value_info}
    matmul = _mask_matmul(half)
    assert all(types.get(i) == onnx.TensorProto.FLOAT for i in matmul.input), \
        [(i, types.get(i)) for i in matmul.input]


def test_every_stage_takes_a_seg_bundle_without_torch(seg, tmp_path):
    """The device side, torch blocked: inspect names the task and its masks, verify judges the
    masks by mask IoU, bench times the ONNX, select picks it, and deploy writes a Triton
    config that lists the masks output."""
    import shutil
    import subprocess
    import sys

    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    root = Path(__file__).resolve().parents[2]
    bundle = tmp_path / "bundle"
    shutil.copytree(seg[0], bundle)

    def no_torch(*args: object) -> str:
        done = subprocess.run([sys.executable, str(root / "tests" / "no_torch.py"),
                               *map(str, args)], capture_output=True, text=True, timeout=300,
                              cwd=root)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    shown = " ".join(no_torch("inspect", bundle).split())
    assert "segmentation" in shown and "masks" in shown, shown
    verified = json.loads(no_torch("verify", bundle, "--format", "onnx", "--json", "-"))
    assert verified["passed"]
    instances = verified["reports"][0]["instances"]
    assert instances["output"] == "masks" and instances["passed"], instances
    assert instances["worst"]["mask_iou"]["value"] >= 0.98
    no_torch("bench", bundle, "--format", "onnx", "--budget", "0.2", "--warmup", "0.1",
             "--min-iters", "5", "--batch", "1,2")
    chosen = json.loads(no_torch("select", bundle, "--batch", "1", "--json", "-"))
    assert chosen["selected"]["artifact"] == "onnx/fp32"
    no_torch("deploy", bundle, "--triton", tmp_path / "repo", "--name", "seg")
    config = text_format.Parse((tmp_path / "repo" / "seg" / "config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    masks = next(o for o in config.output if o.name == "masks")
    k = _manifest(bundle)["detection"]["max_detections"]
    assert list(masks.dims) == [k, SIZE // 4, SIZE // 4]

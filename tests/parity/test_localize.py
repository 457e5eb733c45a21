"""localize_onnx on real exports with planted defects, against eager PyTorch and another ONNX."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from toolkit.backends.onnx.localize import localize_onnx, node_scope
from toolkit.errors import UsageError
from toolkit.parity.tolerances import tolerance_for

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper, numpy_helper


class SmallCNN(torch.nn.Module):
    """3x32x32 -> conv 3->64 -> ReLU -> pool -> conv 64->64 -> ReLU -> pool -> fc 4096->512
    -> ReLU -> fc 512->10; `features.3` is the middle conv."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(4096, 512), nn.ReLU(), nn.Linear(512, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _export(model, shape, path):
    example = torch.zeros(*shape)
    torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=["x"],
                      output_names=["logits"], verbose=False)
    return onnx.load(str(path))


def _scaled(proto, name, factor):
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for init in copy.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * factor, name))
            return copy
    raise AssertionError(f"no initializer {name}")


def _feed(shape, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    return model, _export(model, (1, 3, 32, 32), path), path


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    path = tmp_path_factory.mktemp("r18") / "r18.onnx"
    return model, _export(model, (1, 3, 64, 64), path)


def test_healthy_export_has_no_divergence(cnn):
    model, proto, path = cnn
    assert localize_onnx(path, _feed((1, 3, 32, 32)), model) is None


def test_scaled_middle_conv_is_named_against_eager(cnn):
    model, proto, _ = cnn
    broken = _scaled(proto, "features.3.weight", 1.03)
    feed = _feed((1, 3, 32, 32))
    div = localize_onnx(broken, feed, model)
    assert div is not None
    assert (div.module_path, div.op_type) == ("features.3", "Conv")
    assert div.module_class == "torch.nn.modules.conv.Conv2d"
    assert "features.3.weight" in div.parameters
    assert div.last_match and "features.2" in div.last_match  # the maxpool before it matched
    assert div.reference == "eager" and div.metrics.violations > 0
    assert "features.3" in div.describe()
    # A group of one tensor at a time finds the same node as one big group.
    same = localize_onnx(broken, feed, model, group_size=1)
    assert (same.node, same.tensor) == (div.node, div.tensor)


def test_scaled_middle_conv_is_named_against_the_healthy_onnx(cnn):
    model, proto, path = cnn
    broken = _scaled(proto, "features.3.weight", 1.03)
    div = localize_onnx(broken, _feed((1, 3, 32, 32)), path)
    eager = localize_onnx(broken, _feed((1, 3, 32, 32)), model)
    assert div.reference == "onnx"
    assert (div.node, div.module_path) == (eager.node, "features.3")
    assert localize_onnx(proto, _feed((1, 3, 32, 32)), path) is None


def test_nan_is_located_where_it_first_appears(cnn):
    model, proto, _ = cnn

    def poison(b):
        b = b.copy()
        b[5] = np.nan
        return b

    broken = onnx.ModelProto()
    broken.CopyFrom(proto)
    for init in broken.graph.initializer:
        if init.name == "classifier.1.bias":
            init.CopyFrom(numpy_helper.from_array(poison(numpy_helper.to_array(init)), init.name))
    div = localize_onnx(broken, _feed((1, 3, 32, 32)), model)
    assert div.module_path == "classifier.1" and div.metrics.nan_actual == 1
    assert "non-finite" in div.reasons[0]


def test_fused_conv_bn_in_resnet18_names_scope_and_conv(resnet18):
    model, proto = resnet18
    broken = _scaled(proto, "layer2.0.conv1.weight", 1.05)
    feed = _feed((1, 3, 64, 64))
    div = localize_onnx(broken, feed, model)
    # The exporter folds the BatchNorm into the conv: the node carries bn1's scope and
    # reads the conv's weight; both are reported.
    assert div.module_path == "layer2.0.bn1" and div.op_type == "Conv"
    assert div.parameter_modules == ["layer2.0.conv1"]
    assert "fused with layer2.0.conv1" in div.describe()
    assert localize_onnx(broken, feed, proto).node == div.node
    # ResNet's BasicBlock calls its one ReLU twice; both calls were matched before layer2.
    assert div.last_match.endswith("(layer1.1.relu)")


def test_fp16_graph_localizes_within_the_fp16_tolerance(resnet18):
    float16 = pytest.importorskip("onnxconverter_common.float16")
    model, proto = resnet18
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        half = float16.convert_float_to_float16(proto, keep_io_types=True)
    feed = _feed((1, 3, 64, 64))
    assert localize_onnx(half, feed, proto, tolerance="fp16") is None
    strict = localize_onnx(half, feed, proto, tolerance=tolerance_for("fp32").default)
    assert strict is not None and strict.node_index <= 2  # fp16 error shows at the first conv


def test_graph_without_module_scopes_is_a_usage_error(tmp_path, cnn):
    model, _, _ = cnn
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "plain",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 32, 32])],
    )
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(UsageError, match="no PyTorch module scopes"):
        localize_onnx(path, _feed((1, 3, 32, 32)), model)
    with pytest.raises(UsageError, match="not found"):
        localize_onnx(tmp_path / "missing.onnx", {}, model)


def test_namespace_metadata_is_parsed_when_name_scopes_are_absent():
    node = helper.make_node("Conv", ["a", "w"], ["b"], name="n")
    entry = node.metadata_props.add()
    entry.key = "namespace"
    entry.value = (": pkg.Net/features: torch.nn.modules.container.Sequential/"
                   "features.3: torch.nn.modules.conv.Conv2d/conv2d_1: aten.conv2d.default")
    scope = node_scope(node)
    assert scope.paths() == ["", "features", "features.3"]
    assert scope.innermost == ("features.3", "torch.nn.modules.conv.Conv2d")

"""Tiny real models for the tests, importable as `tests.models:Name` (like a user's package)."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn


class TwoInTwoOut(pl.LightningModule):
    """Two inputs, dict output; hyperparameters change the computation (scale)."""

    def __init__(self, hidden: int = 8, scale: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Linear(6, hidden)
        self.side = nn.Linear(3, hidden)
        self.head = nn.Linear(hidden, 4)
        self.example_input_array = (torch.randn(2, 6), torch.randn(2, 3))

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = torch.relu(self.encoder(image) + self.side(meta)) * self.hparams.scale
        return {"logits": self.head(hidden), "embedding": hidden}


class TupleOut(pl.LightningModule):
    """One input, nested tuple output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.example_input_array = torch.randn(2, 3, 8, 8)

    def forward(self, x: torch.Tensor):
        y = self.conv(x)
        return y.mean(dim=(2, 3)), (y.amax(dim=(2, 3)), torch.sigmoid(y))


Pair = namedtuple("Pair", ["scores", "boxes"])


class KeywordIn(pl.LightningModule):
    """Dict example input (called with keywords) and a namedtuple output; int64 token ids."""

    def __init__(self, vocab: int = 11) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 8)
        self.proj = nn.Linear(8, 4)
        self.example_input_array = {
            "input_ids": torch.randint(0, vocab, (2, 5)),
            "weights": torch.rand(2, 5),
        }

    def forward(self, input_ids: torch.Tensor, weights: torch.Tensor) -> Pair:
        h = self.embed(input_ids) * weights.unsqueeze(-1)
        return Pair(self.proj(h.mean(1)), h)


def plain_mlp() -> nn.Module:
    """A factory without example_input_array (inputs come from --input)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))


def save_checkpoint(module: pl.LightningModule, path) -> None:
    """A real Lightning checkpoint, written by a Trainer."""
    trainer = pl.Trainer(max_epochs=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(str(path))


class SmallCNN(pl.LightningModule):
    """The demo's CNN shape, smaller: conv -> relu -> pool -> conv -> relu -> pool -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(),
                                        nn.Linear(16, 5))
        self.example_input_array = torch.randn(2, 3, 16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def small_cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN()


class Digits8x8(pl.LightningModule):
    """A classifier of scikit-learn's 8x8 digits whose example is random noise, as many are
    (the case reduced precision must not be judged on)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(16 * 64, 10))
        self.example_input_array = torch.randn(2, 1, 8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_digits8x8(steps: int = 300) -> tuple[Digits8x8, dict[str, np.ndarray]]:
    """Digits8x8 trained on the embedded digits' train split (seconds on a CPU); returns the
    model and the splits as float32 images (n, 1, 8, 8) in [0, 1] and int64 labels."""
    torch.manual_seed(0)
    model = Digits8x8()
    splits = _train_on_digits(model, steps, lr=1e-2)
    return model.eval(), splits


def _train_on_digits(model: nn.Module, steps: int, lr: float) -> dict[str, np.ndarray]:
    """Adam on the embedded digits' train split, batches of 64; the splits as float32 images
    (n, 1, 8, 8) in [0, 1] and int64 labels."""
    from toolkit.demo.data import load_raw

    raw = load_raw()
    x = (raw["images"].astype(np.float32) / 16.0)[:, None]
    y = raw["labels"].astype(np.int64)
    train = raw["split"] == 0
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(steps):
        index = torch.randint(0, len(xt), (64,))
        loss = nn.functional.cross_entropy(model(xt[index]), yt[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"x_train": x[train], "x_test": x[~train], "y_test": y[~train]}


class InterruptingCNN(SmallCNN):
    """SmallCNN that sends its own process `signal` on its `at`-th forward call: an
    interrupt at a reproducible point of an export (golden samples, tracing, verify)."""

    def __init__(self, at: int, signal_name: str) -> None:
        super().__init__()
        self.at, self.signal_name, self.calls = at, signal_name, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import os
        import signal

        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), getattr(signal, self.signal_name))
        return super().forward(x)


def interrupting_cnn(at: int = 0, signal_name: str = "SIGINT") -> InterruptingCNN:
    torch.manual_seed(0)
    return InterruptingCNN(at, signal_name)



try:  # the unified `lightning` package, beside `pytorch_lightning`
    import lightning.pytorch as L
except ImportError:  # pragma: no cover - the dev extra installs it
    L = None

if L is not None:

    class UnifiedNet(L.LightningModule):
        """A `lightning.pytorch` module: the same loading path as `pytorch_lightning`."""

        def __init__(self, width: int = 4) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Linear(3, width)
            self.example_input_array = torch.randn(2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)


class TinyTagger(pl.LightningModule):
    """A transformer encoder with a padding mask, dict outputs and a dynamic sequence length:
    tracing bakes the mask's fast path in, so TorchScript must script it."""

    def __init__(self, vocab: int = 30, width: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=True)
        self.heads = nn.ModuleDict({"tags": nn.Linear(width, 5), "cls": nn.Linear(width, 2)})
        # an unpadded example, as users often write one: the trace takes the no-padding path
        self.example_input_array = {"input_ids": torch.randint(0, vocab, (2, 7)),
                                    "attention_mask": torch.ones(2, 7, dtype=torch.bool)}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        hidden = self.encoder(self.embed(input_ids), src_key_padding_mask=~attention_mask)
        return {"tags": self.heads["tags"](hidden), "cls": self.heads["cls"](hidden[:, 0])}


def tiny_tagger() -> TinyTagger:
    torch.manual_seed(0)
    return TinyTagger()


class ChainedOutputs(nn.Module):
    """A graph output that also feeds another node (probs = softmax(logits))."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.linear(x)
        return {"logits": logits, "probs": torch.softmax(logits, -1)}


def chained_outputs() -> nn.Module:
    torch.manual_seed(0)
    return ChainedOutputs()


class OutputThenRelu(pl.LightningModule):
    """Two outputs, one of which a ReLU also reads (an embedding and the logits made from its
    positive part): INT8 must not clip the embedding to the ReLU's range."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.head = nn.Linear(16, 4)
        self.example_input_array = torch.randn(4, 8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(x)
        return self.head(torch.relu(embedding)), embedding


def output_then_relu() -> OutputThenRelu:
    torch.manual_seed(0)
    return OutputThenRelu().eval()


def unseeded_mlp() -> nn.Module:
    """A factory that draws random weights without seeding, as torchvision's do."""
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))


class RowsDetector(nn.Module):
    """An NMS-free detector head in miniature (RT-DETR / YOLO26 style): per image, 8 query
    boxes from a conv, then its own TopK into [B,K,6] rows of x1, y1, x2, y2, score, class."""

    def __init__(self, queries: int = 8, classes: int = 3, k: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.boxes = nn.Linear(32, queries * 4)
        self.logits = nn.Linear(32, queries * classes)
        self.queries, self.classes, self.k = queries, classes, k

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(images)
        raw = self.boxes(features).view(-1, self.queries, 4).sigmoid() * 64
        corners = torch.cat([raw[..., :2], raw[..., :2] + raw[..., 2:] / 2 + 1], dim=-1)
        scores = self.logits(features).view(-1, self.queries, self.classes).sigmoid()
        best, label = scores.max(dim=-1)
        top, index = best.topk(self.k, dim=1)
        picked = torch.gather(corners, 1, index[..., None].expand(-1, -1, 4))
        return torch.cat([picked, top[..., None],
                          torch.gather(label, 1, index)[..., None].float()], dim=-1)


def rows_detector() -> RowsDetector:
    torch.manual_seed(0)
    return RowsDetector().eval()


class NormalisedRowsDetector(RowsDetector):
    """RT-DETR's convention in miniature: rows of cx, cy, w, h normalised to 0-1 by the
    input's size, then score and class."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rows = super().forward(images)  # corners in 0..97 px of a 64-px grid
        x1, y1, x2, y2 = rows[..., 0], rows[..., 1], rows[..., 2], rows[..., 3]
        h, w = images.shape[-2], images.shape[-1]
        box = torch.stack([(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w,
                           (y2 - y1) / h], dim=-1)
        return torch.cat([box, rows[..., 4:]], dim=-1)


def normalised_rows_detector() -> NormalisedRowsDetector:
    torch.manual_seed(0)
    return NormalisedRowsDetector(k=8).eval()


class IdsAndWeights(nn.Module):
    """Two inputs of different dtypes: int64 ids and float weights."""

    def __init__(self, vocab: int = 11) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 8)
        self.proj = nn.Linear(8, 4)

    def forward(self, input_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.proj((self.embed(input_ids) * weights.unsqueeze(-1)).mean(1))


def ids_and_weights() -> IdsAndWeights:
    torch.manual_seed(0)
    return IdsAndWeights().eval()


class Difference(nn.Module):
    """Two inputs of one shape and dtype, where only their names tell them apart."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None,
                c: torch.Tensor | None = None) -> torch.Tensor:
        out = self.linear(a) if b is None else self.linear(a) - 2.0 * b
        return out if c is None else out * c


def difference() -> Difference:
    torch.manual_seed(0)
    return Difference().eval()


class DriftsAndBranches(nn.Module):
    """Two failures of different kinds: traced (TorchScript) it computes something else, so
    parity fails; torch.export can't branch on a computed value, so pt2 can't be made."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            return y + 1.0
        return y if bool(y.sum() > 0) else -y


def drifts_and_branches() -> DriftsAndBranches:
    torch.manual_seed(0)
    return DriftsAndBranches().eval()


class Patches14(nn.Module):
    """A ViT-style patch split: H and W must be multiples of 14 (DINOv2's guard)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * 14 * 14, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        patches = x.reshape(b, c, h // 14, 14, w // 14, 14).permute(0, 2, 4, 1, 3, 5)
        return self.proj(patches.reshape(b, (h // 14) * (w // 14), c * 14 * 14))


def patches14() -> Patches14:
    torch.manual_seed(0)
    return Patches14().eval()


class BrightDetector(nn.Module):
    """Already in the detection contract: one object, only on an image whose mean is over
    0.5, its box and score following the brightness. The first images of a data set may hold
    nothing; later ones do."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(1.0))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        mean = images.mean(dim=(1, 2, 3)) * self.gain
        found = (mean > 0.5).to(torch.float32)
        bright = torch.clamp(mean, 0.0, 1.0)
        side = 8.0 + 16.0 * bright
        corner = torch.full_like(side, 2.0)
        first = torch.stack([corner, corner, side + 2, side + 2], dim=-1)
        boxes = torch.stack([first * found[:, None], torch.zeros_like(first)], dim=1)
        scores = torch.stack([(0.5 + 0.4 * bright) * found,
                              torch.zeros_like(found)], dim=1)
        labels = torch.stack([found, torch.zeros_like(found)], dim=1).to(torch.int64)
        return {"num_detections": found.to(torch.int64), "boxes": boxes, "scores": scores,
                "labels": labels}


def bright_detector() -> BrightDetector:
    return BrightDetector().eval()


class NormalisedRawHead(nn.Module):
    """A raw head whose boxes are xyxy normalised to 0-1 (not the contract's pixels)."""

    def __init__(self, anchors: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.boxes = nn.Linear(32, anchors * 4)
        self.logits = nn.Linear(32, anchors * classes)
        self.anchors, self.classes = anchors, classes

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(images)
        raw = self.boxes(features).view(-1, self.anchors, 4).sigmoid() * 0.5
        boxes = torch.cat([raw[..., :2], raw[..., :2] + raw[..., 2:]], dim=-1)
        scores = self.logits(features).view(-1, self.anchors, self.classes).sigmoid()
        return {"boxes": boxes, "scores": scores}


def normalised_raw_head() -> NormalisedRawHead:
    torch.manual_seed(0)
    return NormalisedRawHead().eval()


class LargeActivations(nn.Module):
    """A projection whose outputs run to about 1e6 (past fp16's 65504), normalised by a
    LayerNorm: in fp32 harmless, in plain fp16 inf and then NaN (the weights themselves fit)."""

    def __init__(self) -> None:
        super().__init__()
        self.project = nn.Linear(16, 32)
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, 4)
        with torch.no_grad():
            self.project.weight.mul_(1e5)  # weights up to 25000: in range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.project(x)))


def large_activations() -> LargeActivations:
    torch.manual_seed(0)
    return LargeActivations().eval()


class OffsetWeights(nn.Module):
    """A layer whose weights ride on a common offset of 16, taken back out after it: the same
    function in fp32 (to its tolerance), but fp16 weights near 16 are spaced 1/64 apart,
    which rounds away some 5 % of the part that matters (~0.1). No activation leaves fp16's
    range, so the range scan keeps nothing; and ONNX Runtime's CPU computes in fp32 between
    casts, so weight rounding is the fp16 loss it shows. Keeping that layer's block in fp32
    recovers it."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(16, 32)
        self.second = nn.Linear(32, 4)
        with torch.no_grad():
            self.first.weight += 16.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x) - 16.0 * x.sum(dim=-1, keepdim=True)
        return self.second(torch.relu(h))


def offset_weights() -> OffsetWeights:
    torch.manual_seed(0)
    return OffsetWeights().eval()


class OutlierDigits(nn.Module):
    """A digits classifier with one hidden unit scaled up 1000x and its outgoing weights down
    as much: the same function in fp32 (ReLU is positively homogeneous), but the hidden
    activation's range is 1000x what the other 63 units need, so per-tensor INT8 rounds them
    all to zero. A CNN with an outlier-heavy layer, built on purpose."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.hidden = nn.Linear(32 * 64, 64)
        self.out = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(self.features(x))))


def train_outlier_digits(steps: int = 300, scale: float = 1000.0
                         ) -> tuple[OutlierDigits, dict[str, np.ndarray]]:
    """OutlierDigits trained on the embedded digits (seconds), then its unit 0 made to fire
    (bias +1: that changes the model a little) and scaled (that changes nothing in fp32)."""
    torch.manual_seed(0)
    model = OutlierDigits()
    splits = _train_on_digits(model, steps, lr=3e-3)
    with torch.no_grad():
        model.hidden.bias[0] = model.hidden.bias[0].abs() + 1.0  # the unit fires
        model.hidden.weight[0] *= scale
        model.hidden.bias[0] *= scale
        model.out.weight[:, 0] /= scale
    return model.eval(), splits


def outlier_digits(path: str) -> OutlierDigits:
    """The factory an export loads: OutlierDigits with saved weights."""
    model = OutlierDigits()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()

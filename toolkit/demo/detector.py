"""`ShapesDetector`: a tiny anchor-free raw-head detector for the synthetic shapes data.

3×64×64 → three stride-2 conv blocks (16, 32, 64 channels) → two 3×3 conv blocks at stride 8
→ per cell of the 8×8 grid: class logits (sigmoid scores, one per class) and four distances
(left, top, right, bottom; softplus × stride) from the cell centre, turned into xyxy pixels.
`forward(x)` returns `dict(boxes=[B,N,4], scores=[B,N,C])`, N = 64: the raw-head layout that
`--nms` appends class-aware NMS to (`toolkit.detection.postprocess.RawHeadNMS`).

Training is FCOS-like: a cell is positive for the smallest ground-truth box containing its
centre; sigmoid focal loss on the class scores, GIoU loss on the positives' boxes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

try:  # the toolkit supports both packagings of Lightning
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on the environment
    import pytorch_lightning as pl  # type: ignore[no-redef]

from toolkit.demo.detection_data import IMAGE_SIZE, NUM_CLASSES, make_detection_data

STRIDE = 8
EXAMPLE_BATCH = 4  # > 1 so the exported batch dimension stays dynamic
CHECKPOINT_NAME = "shapes_detector.ckpt"


def example_batch(batch: int = EXAMPLE_BATCH) -> Tensor:
    """The first `batch` validation images: real objects, so golden samples have detections."""
    return torch.from_numpy(make_detection_data(batch, split="val")["x"])


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class ShapesDetector(pl.LightningModule):
    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        image_size: int = IMAGE_SIZE,
        width: int = 64,
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            _block(3, width // 4, 2), _block(width // 4, width // 2, 2),
            _block(width // 2, width, 2), _block(width, width, 1), _block(width, width, 1),
        )
        self.cls_head = nn.Conv2d(width, num_classes, 1)
        self.box_head = nn.Conv2d(width, 4, 1)
        # Start every score near 1% (focal-loss prior) so early training isn't swamped by
        # the many background cells.
        nn.init.constant_(self.cls_head.bias, -4.6)
        cells = image_size // STRIDE
        centre = (torch.arange(cells, dtype=torch.float32) + 0.5) * STRIDE
        cy, cx = torch.meshgrid(centre, centre, indexing="ij")
        # [N, 4] as (cx, cy, cx, cy); a buffer so it follows .to() and is saved with the model.
        self.register_buffer("centres", torch.stack([cx, cy, cx, cy], -1).reshape(-1, 4),
                             persistent=False)
        # Distances are predicted in stride units; left/top go back from the centre.
        self.register_buffer("ltrb_scale", torch.tensor([-1.0, -1.0, 1.0, 1.0]) * STRIDE,
                             persistent=False)
        self.example_input_array = example_batch()

    def raw(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(class logits [B,N,C], xyxy boxes [B,N,4])."""
        f = self.features(x)
        logits = self.cls_head(f).flatten(2).transpose(1, 2)
        ltrb = F.softplus(self.box_head(f)).flatten(2).transpose(1, 2)
        return logits, self.centres + ltrb * self.ltrb_scale

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        logits, boxes = self.raw(x)
        return {"boxes": boxes, "scores": torch.sigmoid(logits)}

    def _targets(self, boxes: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Per cell: class index (-1 background) [B,N] and its ground-truth box [B,N,4]."""
        cx, cy = self.centres[:, 0], self.centres[:, 1]  # [N]
        valid = labels >= 0  # [B,M]
        inside = (
            (cx[None, :, None] > boxes[:, None, :, 0]) & (cx[None, :, None] < boxes[:, None, :, 2])
            & (cy[None, :, None] > boxes[:, None, :, 1])
            & (cy[None, :, None] < boxes[:, None, :, 3]) & valid[:, None, :]
        )  # [B,N,M]
        area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])  # [B,M]
        area = torch.where(inside, area[:, None, :], torch.full_like(inside, 1e9, dtype=area.dtype))
        best = area.argmin(dim=2)  # [B,N]: the smallest box containing the centre
        positive = inside.any(dim=2)
        cls = torch.where(positive, labels.gather(1, best), torch.full_like(best, -1))
        target_boxes = boxes.gather(1, best[..., None].expand(-1, -1, 4))
        return cls, target_boxes

    def _loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

        x, boxes, labels = batch
        logits, pred = self.raw(x)
        cls, target = self._targets(boxes, labels)
        positive = cls >= 0
        num_pos = positive.sum().clamp(min=1).float()
        one_hot = F.one_hot(cls.clamp(min=0), self.hparams.num_classes).to(logits.dtype)
        one_hot = one_hot * positive[..., None]
        cls_loss = sigmoid_focal_loss(logits, one_hot, reduction="sum") / num_pos
        box_loss = generalized_box_iou_loss(pred[positive], target[positive], reduction="sum")
        return cls_loss, box_loss / num_pos

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        cls_loss, box_loss = self._loss(batch)
        self.log("train_cls_loss", cls_loss)
        self.log("train_box_loss", box_loss)
        return cls_loss + box_loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        cls_loss, box_loss = self._loss(batch)
        self.log("val_loss", cls_loss + box_loss, prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr,
                                      weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.hparams.lr,
                                                       total_steps=total)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Record the class like LightningCLI, so a checkpoint alone names its module.
        hparams = checkpoint.setdefault("hyper_parameters", {})
        hparams["_class_path"] = f"{type(self).__module__}.{type(self).__qualname__}"


def _loader(split: str, n: int, seed: int, batch_size: int, shuffle: bool) -> Any:
    from torch.utils.data import DataLoader, TensorDataset

    data = make_detection_data(n, split=split, seed=seed)
    dataset = TensorDataset(*(torch.from_numpy(data[k]) for k in ("x", "boxes", "labels")))
    generator = torch.Generator().manual_seed(seed)  # the same shuffles on every run
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def train_detector(
    epochs: int = 12,
    n_train: int = 2000,
    n_val: int = 200,
    seed: int = 0,
    batch_size: int = 32,
    lr: float = 1e-2,
    checkpoint_dir: str | Path | None = None,
) -> ShapesDetector:
    """Train `ShapesDetector` on CPU, seeded and deterministic; returns it in eval mode.

    With `checkpoint_dir`, also writes `checkpoint_dir/shapes_detector.ckpt`.
    """
    import logging
    import warnings

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    pl.seed_everything(seed, workers=True, verbose=False)
    model = ShapesDetector(lr=lr)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, deterministic=True,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )
    trainer.fit(
        model,
        train_dataloaders=_loader("train", n_train, seed, batch_size, shuffle=True),
        val_dataloaders=_loader("val", n_val, seed, batch_size, shuffle=False),
    )
    if checkpoint_dir is not None:
        out = Path(checkpoint_dir)
        out.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(out / CHECKPOINT_NAME)
    return model.eval()

"""Lightning modules: the loss and validation metrics of each stage."""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from allseg.models import AllsegModel
from allseg.training.config import StageConfig
from allseg.training.samples import CLASS_NUCLEUS, IGNORE


class PooledDice(Metric):
    """Dice = 2TP / (2TP + FP + FN) pooled over every pixel seen (summed across ranks)."""

    def __init__(self) -> None:
        super().__init__()
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.tp += (pred & target).sum()
        self.fp += (pred & ~target).sum()
        self.fn += (~pred & target).sum()

    def compute(self) -> torch.Tensor:
        denom = 2 * self.tp + self.fp + self.fn
        return torch.where(denom > 0, 2 * self.tp / denom.clamp(min=1), torch.tensor(1.0))


def _soft_dice_loss(prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    prob, target = prob * valid, target.float() * valid
    inter = (prob * target).sum()
    return 1 - (2 * inter + 1) / (prob.sum() + target.sum() + 1)


class _StageModule(L.LightningModule):
    """What both stages share: the wrapped model and its optimiser schedule."""

    def __init__(self, model: AllsegModel, stage: StageConfig) -> None:
        super().__init__()
        self.model = model
        self.stage = stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def configure_optimizers(self):  # noqa: ANN201 - Lightning's own return types
        opt = torch.optim.AdamW(self.parameters(), lr=self.stage.lr,
                                weight_decay=self.stage.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self._lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _lr_factor(self, step: int) -> float:
        """Linear warm-up then cosine decay over the run's steps.

        The total is read from the trainer at every step (not stored in the scheduler's
        state), so resuming with more epochs stretches the schedule instead of failing.
        """
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, total // 20)
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))


class SegmenterModule(_StageModule):
    """Cross-entropy + soft Dice on the parts, BCE on the centre map."""

    def __init__(self, model: AllsegModel, stage: StageConfig) -> None:
        super().__init__(model, stage)
        self.nucleus_dice = PooledDice()
        self.cell_dice = PooledDice()

    def _loss(self, out: torch.Tensor, classes: torch.Tensor, centre: torch.Tensor
              ) -> torch.Tensor:
        logits, centre_logit = out[:, :3], out[:, 3]
        valid = (classes != IGNORE).float()
        ce = F.cross_entropy(logits, classes, ignore_index=IGNORE)
        prob = logits.softmax(1)
        cell_t = (classes > 0) & (classes != IGNORE)
        dice = 0.5 * (_soft_dice_loss(1 - prob[:, 0], cell_t, valid)
                      + _soft_dice_loss(prob[:, 2], classes == CLASS_NUCLEUS, valid))
        bce = F.binary_cross_entropy_with_logits(centre_logit, centre, weight=valid)
        return ce + dice + bce

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(self(batch["image"]), batch["classes"], batch["centre"])
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self(batch["image"])
        classes = batch["classes"]
        self.log("val_loss", self._loss(out, classes, batch["centre"]), sync_dist=True,
                 batch_size=len(classes))
        pred = out[:, :3].argmax(1)
        valid = classes != IGNORE
        self.nucleus_dice.update((pred == CLASS_NUCLEUS) & valid, (classes == CLASS_NUCLEUS))
        self.cell_dice.update((pred > 0) & valid, (classes > 0) & valid)

    def on_validation_epoch_end(self) -> None:
        nucleus, cell = self.nucleus_dice.compute(), self.cell_dice.compute()
        self.log_dict({"val_nucleus_dice": nucleus, "val_cell_dice": cell,
                       "val_score": (nucleus + cell) / 2}, prog_bar=True)
        self.nucleus_dice.reset()
        self.cell_dice.reset()


class ClassifierModule(_StageModule):
    """Binary cross-entropy on P(blast), weighted per cell; validation AUROC and accuracy."""

    def __init__(self, model: AllsegModel, stage: StageConfig) -> None:
        super().__init__(model, stage)
        self.auroc = BinaryAUROC()
        self.accuracy = BinaryAccuracy()
        self._val_labels: list[torch.Tensor] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logit = self(batch["image"])[:, 0]
        weight = batch["weight"]
        loss = (F.binary_cross_entropy_with_logits(logit, batch["label"], weight=weight,
                                                   reduction="sum") / weight.sum())
        self.log("train_loss", loss, prog_bar=True, batch_size=len(logit))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logit = self(batch["image"])[:, 0]
        label = batch["label"]
        self.log("val_loss", F.binary_cross_entropy_with_logits(logit, label), sync_dist=True,
                 batch_size=len(label))
        self.auroc.update(logit.sigmoid(), label.long())
        self.accuracy.update(logit.sigmoid(), label.long())
        self._val_labels.append(label)

    def on_validation_epoch_end(self) -> None:
        acc = self.accuracy.compute()
        labels = torch.cat(self._val_labels) if self._val_labels else torch.zeros(0)
        both_classes = labels.numel() > 0 and 0 < labels.sum() < labels.numel()
        auc = self.auroc.compute() if both_classes else acc
        self.log_dict({"val_auroc": auc, "val_accuracy": acc, "val_score": (auc + acc) / 2},
                      prog_bar=True)
        self.auroc.reset()
        self.accuracy.reset()
        self._val_labels.clear()

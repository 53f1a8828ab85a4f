"""Fine-tune a pruned YOLO with ultralytics' own trainer, at its pruned widths.

``YOLO(path).train(...)`` hands the trainer the loaded network only as weights: the trainer
builds a new network from its yaml (the unpruned widths) and copies in the tensors whose shapes
still fit, so a pruned checkpoint would train a network of the original size (torch-pruning
#363, #399; ultralytics #3507, #9813). A yaml cannot say the pruned widths, so the fix is the
trainer's: ``pruned_trainer`` makes the task's own trainer (detect, segment, pose, obb) whose
``get_model`` trains the network it is given, as it is (a copy; the last conv of each class
branch made anew when the dataset has another number of classes). Everything else (data,
augmentation, loss, EMA, validation, the last.pt/best.pt it writes, which hold the pruned
network) is ultralytics' own. Without weights (``pretrained=False``) it builds from the yaml
as usual.

Example (not run here: it needs a dataset):
    from ultralytics import YOLO
    from surgery.recover.yolo import pruned_trainer
    YOLO("small.pt").train(trainer=pruned_trainer, data="data.yaml", epochs=10)
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from surgery.errors import SurgeryError
from surgery.io.yolo import fit_classes, prediction_outputs

try:  # optional: yolo:FILE models
    from ultralytics.models import yolo
except ImportError:
    yolo = None


class KeepWidths:
    """Mixin for an ultralytics trainer: ``get_model`` trains the network given as
    ``weights`` (a model, or a checkpoint dict holding one) at its own widths."""

    def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> nn.Module:
        """A copy of ``weights`` (its classes fitted to the dataset's), else the trainer's own
        model built from ``cfg``."""
        source = (weights.get("ema") or weights.get("model")) if isinstance(weights, dict) \
            else weights
        if not isinstance(source, nn.Module):
            return super().get_model(cfg=cfg, weights=weights, verbose=verbose)
        if source.is_fused():
            raise SurgeryError("the model was fused for inference (predict or val fuse "
                               "conv and BatchNorm in place): load it again with YOLO(path) "
                               "before train")
        model = prediction_outputs(copy.deepcopy(source).float(), on=False)
        for p in model.parameters():
            p.requires_grad_(True)
        return fit_classes(model, self.data["nc"])


if yolo is not None:
    class PrunedDetectionTrainer(KeepWidths, yolo.detect.DetectionTrainer):
        """ultralytics' DetectionTrainer that trains a pruned network as it is."""

    class PrunedSegmentationTrainer(KeepWidths, yolo.segment.SegmentationTrainer):
        """ultralytics' SegmentationTrainer that trains a pruned network as it is."""

    class PrunedPoseTrainer(KeepWidths, yolo.pose.PoseTrainer):
        """ultralytics' PoseTrainer that trains a pruned network as it is."""

    class PrunedOBBTrainer(KeepWidths, yolo.obb.OBBTrainer):
        """ultralytics' OBBTrainer that trains a pruned network as it is."""

    TRAINERS = {"detect": PrunedDetectionTrainer, "segment": PrunedSegmentationTrainer,
                "pose": PrunedPoseTrainer, "obb": PrunedOBBTrainer}
else:
    TRAINERS = {}


def pruned_trainer(overrides: dict | None = None, _callbacks: Any = None) -> Any:
    """The trainer for ``overrides["task"]`` that keeps a pruned network's widths; pass it as
    ``YOLO(path).train(trainer=pruned_trainer, ...)`` (ultralytics calls it as it calls a
    trainer class). See the module example.

    Example:
        >>> pruned_trainer({"task": "classify"})
        Traceback (most recent call last):
        surgery.errors.SurgeryError: pruned_trainer trains detect, obb, pose, segment models, \
not 'classify'
    """
    task = (overrides or {}).get("task") or "detect"
    if task not in TRAINERS:
        tasks = ", ".join(sorted(TRAINERS)) or "nothing (ultralytics is not installed)"
        raise SurgeryError(f"pruned_trainer trains {tasks} models, not {task!r}")
    return TRAINERS[task](overrides=overrides, _callbacks=_callbacks)


__all__ = ["TRAINERS", "KeepWidths", "pruned_trainer"]

"""A pruned YOLO goes home: ``export_ultralytics`` writes a checkpoint that plain
``ultralytics.YOLO(path)`` loads at the pruned widths, and predict, val, ONNX export and
training (with ``pruned_trainer``) run on that network, never one rebuilt from the yaml."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from surgery import prune
from surgery.errors import SurgeryError
from surgery.io.bases import resolve_builtin
from surgery.io.yolo import (
    check_yaml_layers,
    export_ultralytics,
    fit_classes,
    prediction_outputs,
    resolve_yolo,
    yaml_params,
)
from surgery.recover.yolo import pruned_trainer

ultralytics = pytest.importorskip("ultralytics")
YOLO = ultralytics.YOLO
X = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
FULL = {"yolov8n.yaml": 3_157_200, "yolov8n-seg.yaml": 3_409_968, "yolov8n-pose.yaml": 3_295_470}
TASKS = {"yolov8n.yaml": "detect", "yolov8n-seg.yaml": "segment", "yolov8n-pose.yaml": "pose"}
RUN = {"imgsz": 64, "device": "cpu", "workers": 0, "plots": False, "verbose": False}


def pruned(yaml: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model, _ = resolve_yolo(yaml)
    return prune(model, X, ratio=0.5).model


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """(the pruned yolov8n, the path of its ultralytics checkpoint)."""
    small = pruned("yolov8n.yaml")
    return small, export_ultralytics(small, tmp_path_factory.mktemp("yolo") / "small.pt")


def make_dataset(root, task: str = "detect"):
    """A YOLO-format dataset for ``task``: 4 random 64x64 images, one object each (a box, a
    polygon, or a box with 17 keypoints), 2 classes; returns its data.yaml."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    shape = {"detect": "0.5 0.5 0.4 0.3", "segment": "0.3 0.3 0.7 0.3 0.7 0.6 0.3 0.6",
             "pose": "0.5 0.5 0.4 0.3" + " 0.5 0.5 2" * 17}[task]
    for i in range(4):
        pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i}.jpg")
        (root / "labels" / f"{i}.txt").write_text(f"{i % 2} {shape}\n")
    keypoints = "kpt_shape: [17, 3]\n" if task == "pose" else ""
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images\nval: images\n{keypoints}"
                                    f"names:\n  0: a\n  1: b\n")
    return root / "data.yaml"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("yaml", sorted(FULL))
def test_yolo_loads_the_pruned_network_and_predicts(yaml, tmp_path):
    small = pruned(yaml)
    assert params(resolve_yolo(yaml)[0]) == FULL[yaml] > params(small)
    loaded = YOLO(str(export_ultralytics(small, tmp_path / "small.pt")))
    assert loaded.task == TASKS[yaml]
    assert params(loaded.model) == params(small)
    assert {k: v.shape for k, v in loaded.model.state_dict().items()} == \
        {k: v.shape for k, v in small.state_dict().items()}
    with torch.no_grad():  # the same network: the same decoded predictions
        ours, theirs = small(X), prediction_outputs(copy.deepcopy(loaded.model))(X)
    for a, b in zip(*(o if isinstance(o, tuple) else (o,) for o in (ours, theirs))):
        assert torch.equal(a, b)
    results = loaded.predict(np.zeros((64, 64, 3), dtype=np.uint8), imgsz=64, verbose=False)
    assert len(results) == 1 and results[0].boxes is not None


def test_the_checkpoint_pickles_only_torch_and_ultralytics_classes(detector):
    found = torch.serialization.get_unsafe_globals_in_checkpoint(str(detector[1]))
    assert found and all(name.startswith(("torch.", "ultralytics.", "collections.",
                                          "builtins.")) for name in found), found


def test_val_and_onnx_export_run_on_the_pruned_network(detector, dataset):
    small, path = detector
    metrics = YOLO(str(path)).val(data=str(dataset), batch=4, project=str(path.parent),
                                  name="val", **RUN)
    assert 0 <= metrics.box.map <= 1
    onnx_path = YOLO(str(path)).export(format="onnx", imgsz=64, simplify=False)
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: X.numpy()})
    with torch.no_grad():
        assert np.allclose(out, small(X).numpy(), rtol=1e-3, atol=1e-3)


def test_train_keeps_the_pruned_widths(detector, dataset, tmp_path):
    small, path = detector
    yolo = YOLO(str(path))
    yolo.train(trainer=pruned_trainer, data=str(dataset), epochs=1, batch=4,
               project=str(tmp_path), name="train", **RUN)
    trained = {k: v.shape for k, v in yolo.model.state_dict().items()}
    widths = {k: v.shape for k, v in small.state_dict().items()}
    classes = {k for k in widths if ".cv3." in k and k.split(".")[4] == "2"}  # cv3[i][2]
    assert {k: widths[k] for k in widths if k not in classes} == \
        {k: trained[k] for k in trained if k not in classes}
    assert {trained[k][0] for k in classes} == {2}  # the dataset's two classes
    best = YOLO(str(tmp_path / "train" / "weights" / "best.pt"))
    assert params(best.model) == params(yolo.model) < params(small) < FULL["yolov8n.yaml"]


@pytest.mark.zoo  # about 10 s on 2 idle cores
@pytest.mark.parametrize("yaml", ["yolov8n-seg.yaml", "yolov8n-pose.yaml"])
def test_segment_and_pose_train_at_the_pruned_widths(yaml, tmp_path):
    small = pruned(yaml)
    yolo = YOLO(str(export_ultralytics(small, tmp_path / "small.pt")))
    data = make_dataset(tmp_path / "data", TASKS[yaml])
    yolo.train(trainer=pruned_trainer, data=str(data), epochs=1, batch=4,
               project=str(tmp_path), name="train", **RUN)
    assert yolo.model.model[-1].nc == 2
    convs = {k: v.shape for k, v in small.state_dict().items() if "model.22." not in k}
    assert convs == {k: v.shape for k, v in yolo.model.state_dict().items()
                     if "model.22." not in k}  # every width before the head as pruned
    metrics = YOLO(str(tmp_path / "train" / "weights" / "best.pt")).val(
        data=str(data), batch=4, project=str(tmp_path), name="val", **RUN)
    assert 0 <= metrics.box.map <= 1


def test_fit_classes_keeps_the_pruned_width_of_the_class_branch():
    small = pruned("yolov8n.yaml")
    width = small.model[-1].cv3[0][-1].in_channels
    fit_classes(small, 3)
    assert [b[-1].out_channels for b in small.model[-1].cv3] == [3, 3, 3]
    assert small.model[-1].cv3[0][-1].in_channels == width
    assert small(X).shape == (1, 4 + 3, 84)  # 4 box rows, 3 class rows; 8*8+4*4+2*2 anchors


def test_pruning_updates_the_split_width_the_exporter_reads():
    small = pruned("yolov8n.yaml")
    c2f = [m for m in small.modules() if type(m).__name__ == "C2f"]
    assert c2f and all(2 * m.c == m.cv1.conv.out_channels for m in c2f)


def test_a_missing_checkpoint_is_not_downloaded(tmp_path):
    with pytest.raises(SurgeryError, match="file not found"):
        resolve_yolo(str(tmp_path / "yolov8n.pt"))
    with pytest.raises(SurgeryError, match="nothing is downloaded"):
        resolve_yolo("https://example.com/yolov8n.yaml")


def test_a_folder_may_name_a_yaml_base_but_never_a_checkpoint(tmp_path):
    model, shape = resolve_builtin("yolo:yolov8n.yaml", "plan.json")
    assert params(model) == FULL["yolov8n.yaml"] and shape == (1, 3, 640, 640)
    path = tmp_path / "best.pt"
    path.write_bytes(b"not read")
    with pytest.raises(SurgeryError, match="not a built-in model.*pickle"):
        resolve_builtin(f"yolo:{path}", "plan.json")


@pytest.mark.parametrize("layer,match", [
    ([-1, 1, "attempt_load_weights", ["evil.pt"]], "not a torch or ultralytics layer"),
    ([-1, 1, "TorchVision", [8, "resnet18"]], "not a torch or ultralytics layer"),
    ([-1, 1, "nn.functional", []], "not a torch or ultralytics layer"),
    ([-1, 10**9, "Conv", [16, 3, 2]], "n <= 64"),
])
def test_a_yaml_from_a_folder_builds_only_layers(layer, match):
    with pytest.raises(SurgeryError, match=match):
        check_yaml_layers({"backbone": [layer], "head": []}, "x.yaml")


def test_a_yaml_activation_is_a_layer_with_literal_arguments(tmp_path):
    spec = {"backbone": [[-1, 1, "Conv", [16, 3, 2]]], "head": []}
    check_yaml_layers({**spec, "activation": "nn.LeakyReLU(0.1)"}, "x.yaml")
    for bad in ("__import__('os').system('true')", "nn.ReLU(print(1))", "os.system"):
        with pytest.raises(SurgeryError, match="activation"):
            check_yaml_layers({**spec, "activation": bad}, "x.yaml")
    path = tmp_path / "evil.yaml"
    path.write_text("nc: 2\nactivation: __import__('os').system('true')\n"
                    "backbone:\n  - [-1, 1, Conv, [16, 3, 2]]\nhead:\n  - [-1, 1, Conv, [8, 1]]\n")
    with pytest.raises(SurgeryError, match="activation"):
        resolve_builtin(f"yolo:{path}", "plan.json")


def test_yaml_params_counts_on_the_meta_device_what_ultralytics_builds():
    seg = resolve_yolo("yolov8n-seg.yaml", num_classes=2)[0]
    assert yaml_params("yolov8n-seg.yaml", num_classes=2) == params(seg)


def test_export_refuses_a_model_that_is_not_ultralytics(tmp_path):
    with pytest.raises(SurgeryError, match="ultralytics model"):
        export_ultralytics(torch.nn.Linear(2, 2), tmp_path / "x.pt")


def test_a_checkpoint_is_a_model_too_and_prunes_again(detector):
    small, path = detector
    model, shape = resolve_yolo(str(path), num_classes=3)
    assert shape == (1, 3, 640, 640) and model.model[-1].export
    assert model.model[-1].nc == 3 and model(X).shape == (1, 4 + 3, 84)
    assert params(prune(model, X, ratio=0.5).model) < params(model) < params(small)

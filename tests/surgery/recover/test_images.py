"""Fine-tuning on the user's own image folder (train/ and val/ class sub-folders, any size)."""

from __future__ import annotations

import pytest
from PIL import Image

from surgery.cli import main
from surgery.errors import SurgeryError
from surgery.recover.data import load_image_folder

COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


def image_folder(root, classes=("red", "blue"), per_class=4):
    """Plain-colour images of mixed sizes, one class per colour."""
    for split in ("train", "val"):
        for label in classes:
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (24 + 9 * i, 40 - 3 * i), COLORS[label]).save(folder / f"{i}.png")
    return root


def test_image_folder_any_size_to_the_model_input(tmp_path):
    splits = load_image_folder(image_folder(tmp_path), size=(16, 20))
    assert splits.classes == ["blue", "red"]
    assert len(splits.train) == len(splits.test) == 8
    assert {tuple(splits.test[i][0].shape) for i in range(8)} == {(3, 16, 20)}
    assert load_image_folder(tmp_path, size=(16, 16), channels=1).train[0][0].shape[0] == 1


def test_image_folder_without_val_is_refused(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(SurgeryError, match="missing: val"):
        load_image_folder(tmp_path)


def test_finetune_a_pruned_torchvision_model_on_an_image_folder(tmp_path, capsys):
    images = image_folder(tmp_path / "images")
    pruned, tuned = tmp_path / "r18", tmp_path / "tuned"
    assert main(["prune", "resnet18", "--num-classes", "2", "--input-shape", "1,3,32,32",
                 "--ratio", "0.5", "--out", str(pruned)]) == 0
    assert main(["finetune", str(pruned), "--images", str(images), "--epochs", "1",
                 "--batch-size", "4", "--out", str(tuned)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and (tuned / "model.safetensors").is_file()
    three = image_folder(tmp_path / "three", classes=("red", "blue", "green"), per_class=1)
    assert main(["finetune", str(pruned), "--images", str(three), "--out",
                 str(tmp_path / "x")]) == 2
    assert "the model has 2 outputs but" in capsys.readouterr().err

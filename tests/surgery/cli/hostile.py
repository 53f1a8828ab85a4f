"""Hostile inputs for the command line's tests: tampered folders, broken weights and images,
models whose forward misbehaves, unwritable places, and a tiny MNIST so training is quick."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from surgery import prune
from surgery.cli import main
from surgery.io.models import LeNet
from surgery.io.saving import save
from surgery.rebuild.apply import apply_plan

NETS = '''\
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, out="tensor"):
        super().__init__()
        self.c1, self.c2, self.out = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 3), out

    def forward(self, x):
        y = self.c2(torch.relu(self.c1(x)))
        return {"tensor": y, "dict": {"y": y, "note": "text"}, "str": "text",
                "none": None, "int": 3}[self.out]


def build(num_classes=None):
    return Tiny()


def dict_out():
    return Tiny("dict")


def str_out():
    return Tiny("str")


def none_out():
    return Tiny("none")


def int_out():
    return Tiny("int")


def meta():
    with torch.device("meta"):
        return Tiny()


def boom():
    raise RuntimeError("factory failed")
'''


@dataclass(frozen=True)
class Hostile:
    """Paths to the hostile inputs under ``root``."""

    root: Path
    folder: Path  # a good `surgery prune lenet` folder
    tampered: dict[str, Path]  # name -> a folder edited that way
    weights: Path  # LeNet's weights, safetensors
    garbage: Path  # not a weights file
    nets: Path  # nets.py with the factories above
    mnist: Path  # a torchvision MNIST root of 32 + 16 images
    images: dict[str, Path]  # good, corrupt, huge, truncated -> an image folder
    readonly: Path | None  # a folder nothing can be written in (None if not possible here)


def make_hostile(root: Path) -> Hostile:
    """Write every hostile input under ``root`` (a fresh folder)."""
    folder = root / "lenet"
    assert main(["prune", "lenet", "--ratio", "0.5", "--quiet", "--out", str(folder)]) == 0
    weights = root / "lenet.safetensors"
    save_file(LeNet().state_dict(), str(weights))
    garbage = root / "garbage.pt"
    garbage.write_bytes(b"\x80\x04not a pickle" * 50)
    nets = root / "nets.py"
    nets.write_text(NETS)
    return Hostile(root, folder, tampered_folders(folder, root / "tampered"), weights, garbage,
                   nets, tiny_mnist(root / "mnist"), image_folders(root / "images"),
                   readonly_folder(root / "readonly"))


def _edit(folder: Path, out: Path, edit) -> Path:
    shutil.copytree(folder, out)
    text = (out / "plan.json").read_text()
    data = json.loads(text)
    result = edit(data)
    (out / "plan.json").write_text(result if isinstance(result, str) else json.dumps(data))
    return out


def _size_member(data: dict, attr: str, kept: list[int], removed: list[int]) -> None:
    data["groups"][0]["members"].append({"module": "conv1", "role": "size", "dim": 0,
                                         "kept": kept, "removed": removed, "attr": attr})


def tampered_folders(folder: Path, root: Path) -> dict[str, Path]:
    """Copies of ``folder`` each edited one hostile way."""
    edits = {
        "ansi": lambda d: d["groups"][0]["members"][0].update(module="\x1b[31mconv1\x1b[0m"),
        "infinite": lambda d: json.dumps(d).replace('"ratio": 0.5', '"ratio": 1e999'),
        "timm": lambda d: d.update(base="timm:resnet18"),
        "file": lambda d: d.update(base="evil.py:build"),
        "huge_base": lambda d: d.update(base="vit_h_14"),
        "many_classes": lambda d: d.update(base="vgg11", num_classes=99_999),
        "big_shape": lambda d: d.update(input_shape=[1, 1, 8192, 8192]),
        "stride": lambda d: _size_member(d, "stride", [0], []),
        "padding": lambda d: _size_member(d, "padding", [0, 1], [2]),
        "padded": lambda d: d["groups"][0].update(members=d["groups"][0]["members"] * 2000),
        "not_json": lambda d: "{" * 10_000,
    }
    out = {name: _edit(folder, root / name, edit) for name, edit in edits.items()}
    out["inconsistent"] = inconsistent_folder(root / "inconsistent")
    out["bad_weights"] = root / "bad_weights"
    shutil.copytree(folder, out["bad_weights"])
    (out["bad_weights"] / "model.safetensors").write_bytes(b"\x10" * 100)
    out["plan_is_folder"] = root / "plan_is_folder"
    shutil.copytree(folder, out["plan_is_folder"])
    (out["plan_is_folder"] / "plan.json").unlink()
    (out["plan_is_folder"] / "plan.json").mkdir()
    return out


def inconsistent_folder(out: Path) -> Path:
    """A self-consistent folder without input_shape whose model cannot run: conv1 loses
    channels that conv2 still reads (the plan and its weights agree on it)."""
    result = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5)
    first = result.plan.groups[0]
    cut = replace(first, members=[m for m in first.members if m.module == "conv1"])
    plan = replace(result.plan, groups=[cut, *result.plan.groups[1:]])
    model = LeNet()
    apply_plan(model, plan)
    save(SimpleNamespace(model=model, plan=plan), out, base="lenet")
    return out


def tiny_mnist(root: Path) -> Path:
    """A torchvision MNIST root with 32 training and 16 test images."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 32), ("t10k", 16)):
        for kind, magic, array in (("images-idx3", 2051, rng.integers(0, 256, (count, 28, 28))),
                                   ("labels-idx1", 2049, np.arange(count) % 10)):
            header = struct.pack(">I", magic) + b"".join(struct.pack(">I", n)
                                                         for n in array.shape)
            (raw / f"{prefix}-{kind}-ubyte").write_bytes(header +
                                                         array.astype(np.uint8).tobytes())
    return root


def huge_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (its data is one row)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + \
        chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b"")


def image_folders(root: Path) -> dict[str, Path]:
    """Image folders (train/ and val/, two classes, 28x28 grey): one good, and one each with a
    corrupt, a 400-Mpixel and a truncated image."""
    folders = {}
    for name in ("good", "corrupt", "huge", "truncated"):
        for split in ("train", "val"):
            for label in ("a", "b"):
                (root / name / split / label).mkdir(parents=True)
                Image.new("L", (28, 28), 40 if label == "a" else 200).save(
                    root / name / split / label / "0.png")
        folders[name] = root / name
    (root / "corrupt" / "train" / "a" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 64)
    (root / "huge" / "val" / "b" / "1.png").write_bytes(huge_png(20_000, 20_000))
    good = (root / "good" / "train" / "a" / "0.png").read_bytes()
    (root / "truncated" / "train" / "b" / "1.png").write_bytes(good[:len(good) // 2])
    return folders


def readonly_folder(path: Path) -> Path | None:
    """A folder in which no file can be created: mode 0o555, and immutable (chattr +i) when
    running as root; None where neither holds."""
    path.mkdir()
    path.chmod(0o555)
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    try:
        (path / "probe").write_text("x")
    except OSError:
        return path
    (path / "probe").unlink()
    return None


def release(hostile: Hostile) -> None:
    """Undo ``readonly_folder`` so the folder can be deleted."""
    if hostile.readonly is not None and os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(hostile.readonly)], capture_output=True, check=False)

"""Every file the toolkit writes goes through ``surgery.atomic.write_atomic``: a link at the
destination (symlink or hard link) is replaced, never written through; the new file's mode
follows the umask; no temporary file is left behind, on success or on failure."""

import os
import stat

import pytest
import torch

import surgery.io.export
from surgery import SurgeryError, prune
from surgery.atomic import write_atomic, write_text
from surgery.cli import main
from surgery.io.export import export_onnx, export_program
from surgery.io.models import LeNet
from surgery.io.saving import load, save
from surgery.measure.report import build_report

X = torch.zeros(1, 1, 28, 28)
OUTSIDE = b"not yours to overwrite"


@pytest.fixture(scope="module")
def result():
    torch.manual_seed(0)
    return prune(LeNet().eval(), X, ratio=0.5)


@pytest.fixture
def outside(tmp_path):
    """A file outside the output folder that links at the destination point to."""
    path = tmp_path / "outside" / "victim.bin"
    path.parent.mkdir()
    path.write_bytes(OUTSIDE)
    return path


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _link(dest, target, hard=False):
    dest.parent.mkdir(parents=True, exist_ok=True)
    (os.link if hard else os.symlink)(target, dest)
    return dest


def _replaced(dest, outside):
    """The destination is a new plain file of its own, and the link's target is untouched."""
    return (not dest.is_symlink() and dest.is_file() and outside.read_bytes() == OUTSIDE
            and not os.path.samefile(dest, outside) and outside.stat().st_nlink == 1)


def _temporaries(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("hard", [False, True], ids=["symlink", "hardlink"])
def test_write_atomic_replaces_a_link_and_leaves_no_temporary(tmp_path, outside, hard):
    dest = _link(tmp_path / "out" / "a.json", outside, hard)
    write_text(dest, "[1]")
    assert dest.read_text() == "[1]" and _replaced(dest, outside)
    assert _temporaries(dest.parent) == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    dest = tmp_path / "a.json"
    dest.write_text("old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt  # not even an Exception: the temporary file still goes

    with pytest.raises(KeyboardInterrupt):
        write_atomic(dest, half_then_fail)
    assert dest.read_text() == "old" and _temporaries(tmp_path) == []


def test_new_files_follow_the_umask(tmp_path, umask_027, result):
    write_text(tmp_path / "a.txt", "x")
    weights, plan = save(result, tmp_path / "saved")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "a.txt", weights, plan)}
    assert modes == {"a.txt": 0o640, "model.safetensors": 0o640, "plan.json": 0o640}


def test_save_replaces_links_at_its_files(tmp_path, outside, result):
    folder = tmp_path / "saved"
    weights = _link(folder / "model.safetensors", outside)
    plan = _link(folder / "plan.json", outside, hard=True)
    save(result, folder, input_shape=list(X.shape), overwrite=True)
    assert _replaced(weights, outside) and _replaced(plan, outside)
    assert _temporaries(folder) == []
    torch.testing.assert_close(load(folder, LeNet())(X), result.model(X))


@pytest.mark.parametrize("hard", [False, True], ids=["symlink", "hardlink"])
def test_exports_replace_links(tmp_path, outside, result, hard):
    pytest.importorskip("onnx")
    onnx_file = _link(tmp_path / "out" / "model.onnx", outside, hard)
    export_onnx(result.model, X, onnx_file)
    assert _replaced(onnx_file, outside)
    onnx_file.unlink()
    program = _link(tmp_path / "out" / "model.pt2", outside, hard)
    export_program(result.model, X, program)
    assert _replaced(program, outside) and torch.export.load(str(program)) is not None
    assert _temporaries(tmp_path / "out") == []


def test_onnx_is_checked_before_it_replaces_the_old_file(tmp_path, result, monkeypatch):
    pytest.importorskip("onnx")
    dest = tmp_path / "model.onnx"
    dest.write_bytes(b"old")

    def reject(path):
        raise ValueError("checker says no")

    monkeypatch.setattr(surgery.io.export.onnx.checker, "check_model", reject)
    with pytest.raises(SurgeryError, match="checker says no"):
        export_onnx(result.model, X, dest)
    assert dest.read_bytes() == b"old" and _temporaries(tmp_path) == []


def test_report_replaces_links_at_its_files(tmp_path, outside, result):
    folder = tmp_path / "report"
    links = [_link(folder / "report.json", outside), _link(folder / "report.md", outside),
             _link(folder / "report.png", outside, hard=True)]
    report = build_report(LeNet().eval(), X, result.model, name="lenet", timing=None)
    paths = report.write(folder)
    assert sorted(paths) == ["json", "md", "png"]
    assert all(_replaced(p, outside) for p in links) and _temporaries(folder) == []
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_cli_export_and_report_replace_a_hard_link_in_the_folder(tmp_path, outside, capsys):
    folder = tmp_path / "pruned"
    assert main(["prune", "lenet", "--ratio", "0.5", "--out", str(folder), "--quiet"]) == 0
    onnx_file = _link(folder / "model.onnx", outside, hard=True)
    pytest.importorskip("onnx")
    assert main(["export", str(folder), "--format", "onnx"]) == 0
    assert _replaced(onnx_file, outside)
    report = _link(folder / "report.md", outside, hard=True)
    assert main(["report", "lenet", "--pruned", str(folder), "--no-latency", "--no-plot",
                 "--quiet"]) == 0
    assert _replaced(report, outside) and _temporaries(folder) == []
    capsys.readouterr()


@pytest.mark.parametrize("name", ["\\", "a\\", ".pt2"])
def test_torch_archives_take_any_file_name(tmp_path, result, name):
    """torch's zip writer refuses some file names it is handed (one ending in a backslash):
    exports hand it the open temporary file instead (``surgery.atomic.write_file_atomic``)."""
    path = export_program(result.model, X, tmp_path / name)
    assert path.name == name and torch.export.load(path).module()(X).shape == (1, 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]

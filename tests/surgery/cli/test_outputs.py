"""surgery/cli/outputs.py: missing folders above --out are created (as ``mkdir -p``); a file in
the way, an existing output and a symlink are still refused."""

from __future__ import annotations

import pytest

from surgery.cli.outputs import check_out_file, check_out_folder, prepare_out_folder
from surgery.errors import SurgeryError


def test_missing_parents_of_an_output_folder_are_created(tmp_path):
    out = check_out_folder(str(tmp_path / "out" / "deeper" / "lenet"), force=False)
    assert out.parent.is_dir() and not out.exists()
    assert prepare_out_folder(out).is_dir()
    assert [p.name for p in out.parent.parent.iterdir()] == ["deeper"]  # no probe left behind


def test_missing_parents_of_an_output_file_are_created(tmp_path):
    out = check_out_file(str(tmp_path / "a" / "b" / "m.onnx"), force=False)
    assert out.parent.is_dir() and list(out.parent.iterdir()) == []


@pytest.mark.parametrize("check", [check_out_folder, check_out_file])
def test_a_file_or_dangling_link_in_the_way_is_refused(tmp_path, check):
    (tmp_path / "file").write_text("mine")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    for above in ("file", "link"):
        with pytest.raises(SurgeryError, match=f"{above} is not a folder"):
            check(str(tmp_path / above / "x" / "out"), force=False)
    assert (tmp_path / "file").read_text() == "mine" and not (tmp_path / "nowhere").exists()


def test_existing_outputs_still_need_force(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    (tmp_path / "m.onnx").write_text("old")
    with pytest.raises(SurgeryError, match="not empty: pass --force"):
        check_out_folder(str(tmp_path / "full"), force=False)
    with pytest.raises(SurgeryError, match="exists: pass --force"):
        check_out_file(str(tmp_path / "m.onnx"), force=False)

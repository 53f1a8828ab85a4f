"""benchmarks/coverage.py: the data file builds, the child reports, the tables count right."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import coverage_models

# by path: the name ``coverage`` may already be coverage.py, the measuring tool
_spec = importlib.util.spec_from_file_location("coverage_bench", ROOT / "benchmarks" / "coverage.py")
coverage = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(coverage)

OK = {"captured": True, "prunable": 1.0, "layers": 0.9, "kept": 0.25, "runs": True,
      "exact": True, "seconds": 1.0}


def test_every_entry_names_a_source_and_an_input_kind():
    entries = coverage_models.load_entries()
    assert {e["source"] for e in entries} == set(coverage_models.SOURCES)
    assert {e["input"]["kind"] for e in entries} <= {"image", "images", "video", "tokens"}
    timm = [e for e in entries if e["source"] == "timm"]
    assert len({e["module"] for e in timm}) == len(timm)  # one model per timm module


def test_inputs_are_seeded_pytrees():
    tokens = coverage_models.make_input({"kind": "tokens", "length": 5, "extra": {"a": 1}})
    assert tokens["input_ids"].shape == (1, 5) and tokens["a"] == 1
    images = coverage_models.make_input({"kind": "images", "size": 16})
    assert images[0][0].shape == (3, 16, 16)
    video = coverage_models.make_input({"kind": "video", "frames": 4, "size": 8})
    assert video.shape == (1, 3, 4, 8, 8)
    assert bool((coverage_models.make_input({"kind": "image"})
                 == coverage_models.make_input({"kind": "image"})).all())


def test_summary_counts_per_source_and_compares_layer_fractions():
    failed = {"captured": False, "status": "TraceError: x"}
    worse = dict(OK, layers=0.5, exact=False)
    results = [{"source": "hf", "name": "a", "ours": OK, "tp": worse},
               {"source": "hf", "name": "b", "ours": OK, "tp": failed}]
    row = coverage.summary(results).splitlines()[2]
    assert row == "| hf | 2 (0) | 2 / 1 | 2 / 1 | 2 / 0 | 1/1 | 0.90 / 0.25 |"
    table = coverage.model_rows(results)
    assert "| hf | b | yes | yes | yes | 1.00 | 0.90 | 0.25 | 1.0 | no | - |" in table
    assert "tp: TraceError: x" in table


def test_combine_keeps_per_tool_the_last_record_that_ran_it_in_data_file_order(tmp_path):
    entries = [{"source": "s", "name": n} for n in "abc"]
    ran = {"status": "ok"}
    (tmp_path / "1.json").write_text(json.dumps([
        {"source": "s", "name": "c", "ours": {"v": 1}, "tp": {"v": 1}},
        {"source": "s", "name": "a", "ours": {"v": 1}, "tp": ran}]))
    (tmp_path / "2.json").write_text(json.dumps([  # a --tools ours run
        {"source": "s", "name": "c", "ours": {"v": 2}, "tp": {"status": "not run"}}]))
    got = coverage.combine(entries, [str(tmp_path / "1.json"), str(tmp_path / "2.json")])
    assert [r["name"] for r in got] == ["a", "b", "c"]
    assert got[0]["ours"] == {"v": 1} and got[0]["tp"] == ran
    assert got[1]["ours"] == got[1]["tp"] == {"status": "not run"}
    assert got[2]["ours"] == {"v": 2} and got[2]["tp"] == {"v": 1}


@pytest.mark.zoo
def test_child_runs_ours_and_torch_pruning_on_resnet18():
    entry = json.dumps({"source": "timm", "name": "resnet18", "build": {"num_classes": 10},
                        "input": {"kind": "image", "size": 32}})
    for tool in ("ours", "tp"):
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "_coverage_child.py"),
                               tool, entry], capture_output=True, text=True, check=True, cwd=ROOT)
        rec = json.loads(done.stdout.splitlines()[-1])
        assert rec["captured"] and rec["runs"] and rec["exact"], rec


@pytest.mark.zoo
def test_child_compares_ours_at_the_entry_compare_at_submodule():
    # the submodule must keep its output width (a detector head: anchors x classes)
    base = {"source": "timm", "name": "resnet18", "build": {"num_classes": 10},
            "input": {"kind": "image", "size": 32}}
    recs = {}
    for at in ("fc", "no_such_module"):
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "_coverage_child.py"),
                               "ours", json.dumps({**base, "compare_at": at})],
                              capture_output=True, text=True, check=True, cwd=ROOT)
        recs[at] = json.loads(done.stdout.splitlines()[-1])
    assert recs["fc"]["runs"] and recs["fc"]["exact"], recs["fc"]
    assert "no_such_module" in recs["no_such_module"]["status"]  # the submodule is looked up
    assert all(isinstance(e.get("compare_at", ""), str) for e in coverage_models.load_entries())

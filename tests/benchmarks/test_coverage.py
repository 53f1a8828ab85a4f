"""benchmarks/coverage.py: the data file builds, the child reports, the tables count right,
a run updates the results per model and resumes. Every hand-written model (one per layer kind)
goes through both tools in the default suite; the library-built sources run under ``-m zoo``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import (
    _coverage_child,
    coverage,  # benchmarks/coverage.py, not coverage.py the measuring tool
    coverage_models,
)
from benchmarks import _coverage_report as report
from graphs.inputs import call_model
from surgery.testing.oracle import tensors_of

ROOT = Path(__file__).resolve().parents[2]

OK = {"captured": True, "prunable": 1.0, "layers": 0.9, "kept": 0.25, "runs": True,
      "exact": True, "seconds": 1.0}


def test_every_entry_names_a_source_and_an_input_kind():
    entries = coverage_models.load_entries()
    assert {e["source"] for e in entries} == set(coverage_models.SOURCES)
    assert {e["input"]["kind"] for e in entries} <= {"image", "images", "video", "tokens",
                                                      "tensors"}
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
    row = report.summary(results).splitlines()[2]
    assert row == "| hf | 2 (0) | 2 / 1 | 2 / 1 | 2 / 0 | 1/1 | 0.90 / 0.25 |"
    table = report.model_rows(results)
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


HAND = [e for e in coverage_models.load_entries() if e["source"] == "hand"]
# hand models ours prunes and runs (at 4600641): a kind that stops pruning fails here
NOT_YET = {"fused_qkv_attention"}  # slices sized from the stream: blocked, nothing pruned
LIBRARY = {"diffusers": "diffusers", "smp": "segmentation_models_pytorch",
           "hf-families": "transformers", "ultralytics-tasks": "ultralytics"}


def test_hand_entries_name_every_hand_written_model():
    hand_conv, hand_seq = coverage_models._sibling("hand_models_conv"), \
        coverage_models._sibling("hand_models_seq")
    names = set(hand_conv.CONV_MODELS) | set(hand_seq.SEQUENCE_MODELS)
    assert {e["name"] for e in HAND} == names and len(HAND) == len(names)


def test_tensor_inputs_are_positional_or_keyword_and_seeded():
    ids, image = {"shape": [1, 5], "vocab": 7}, {"shape": [1, 3, 4, 4]}
    one = coverage_models.make_input({"kind": "tensors", "args": [ids]})
    assert one.dtype == torch.long and one.shape == (1, 5) and int(one.max()) < 7
    pair = coverage_models.make_input({"kind": "tensors", "args": [image, ids]})
    assert pair[0].shape == (1, 3, 4, 4) and pair[0].is_floating_point()
    kw = coverage_models.make_input({"kind": "tensors", "kwargs": {"x": image}, "extra": {"f": 0}})
    assert sorted(kw) == ["f", "x"] and torch.equal(kw["x"], pair[0])  # same seed, same order


@pytest.mark.parametrize("entry", HAND, ids=[e["name"] for e in HAND])
def test_hand_model_goes_through_both_tools(entry):
    model, x = coverage_models.build(entry)
    first, again = (tensors_of(call_model(model, x)) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # eval mode, deterministic
    assert float(first[0].abs().mean()) > 1e-3  # the oracle would not be vacuous
    for tool in ("ours", "tp"):
        rec = _coverage_child.record(tool, entry)
        json.dumps(rec)  # what the child prints
        assert rec["captured"] or (tool == "tp" and rec["status"]), rec  # trace lists, not raises
        if rec.get("runs"):
            assert 0 < rec["kept"] < 1 and 0 <= rec["layers"] <= 1, rec
        assert rec["wall"] > 0
        if tool == "ours" and entry["name"] not in NOT_YET:
            assert rec.get("runs"), f"ours no longer prunes {entry['name']}: {rec.get('status')}"


def fake_child(tool: str, entry: dict, timeout: float, memory: float) -> dict:
    fake_child.calls.append((tool, entry["name"]))
    return dict(OK, layers=0.5 if tool == "ours" else 0.75)


def test_a_run_updates_the_results_in_place_resumes_and_keeps_the_notes(tmp_path, monkeypatch):
    monkeypatch.setattr(coverage, "run_child", fake_child)
    fake_child.calls, out = [], tmp_path / "c.md"
    coverage.main(["--only", "hand", "--models", "lstm_tagger", "--out", str(out)])
    out.write_text(out.read_text().replace("## Per source", "<!-- notes:start -->\nkept\n"
                                           "<!-- notes:end -->\n\n## Per source"))
    coverage.main(["--models", "lstm_tagger,tied_lm", "--resume", "--tools", "ours",
                   "--out", str(out)])
    assert fake_child.calls == [("ours", "lstm_tagger"), ("tp", "lstm_tagger"),
                                ("ours", "tied_lm")]
    records = {r["name"]: r for r in json.loads(out.with_suffix(".json").read_text())}
    assert len(records) == len(coverage_models.load_entries())
    assert records["tied_lm"]["tp"] == {"status": "not run"}
    assert records["lstm_tagger"]["tp"]["run"]["command"].startswith("coverage.py --only hand")
    text = out.read_text()
    assert "<!-- notes:start -->\nkept\n<!-- notes:end -->" in text
    assert "| hand | lstm_tagger | layers 0.50 < 0.75 | yes / yes |" in text  # tp does better
    assert "- hand: `coverage.py --only hand --models lstm_tagger --out" in text


def test_made_by_names_each_source_s_runs():
    run = {"command": "coverage.py --only hand", "timeout": 240, "memory": 8, "date": "d",
           "commit": "c"}
    results = [{"source": "hand", "name": "a", "ours": dict(OK, run=run), "tp": dict(OK)},
               {"source": "smp", "name": "b", "ours": {"status": "not run"},
                "tp": {"status": "not run"}}]
    hand = ("- hand: `coverage.py --only hand` (timeout 240 s, 8 GB; d, c): 1 record; "
            "earlier runs (see the notes): 1 record")
    assert report.made_by(results).splitlines() == [hand, "- smp: not run yet"]


LIBRARY_ENTRIES = [e for e in coverage_models.load_entries() if e["source"] in LIBRARY]


@pytest.mark.zoo
@pytest.mark.parametrize("entry", LIBRARY_ENTRIES,
                         ids=[f"{e['source']}-{e['name']}" for e in LIBRARY_ENTRIES])
def test_library_model_builds_from_its_small_config_and_runs(entry):
    pytest.importorskip(LIBRARY[entry["source"]])
    model, x = coverage_models.build(entry)
    out = tensors_of(call_model(model, x))
    assert out and float(out[0].abs().mean()) > 1e-6


@pytest.mark.zoo
@pytest.mark.parametrize("source", sorted(LIBRARY))
def test_child_records_both_tools_on_the_first_model_of_each_library_source(source):
    pytest.importorskip(LIBRARY[source])
    entry = next(e for e in LIBRARY_ENTRIES if e["source"] == source)
    for tool in ("ours", "tp"):
        rec = _coverage_child.record(tool, entry)
        assert rec["captured"] or rec["status"], rec


def test_constraints_pin_the_torch_that_make_install_installs():
    # `make survey-deps` installs the survey extra with -c constraints.txt: same pins as TORCH
    torch_line = next(ln for ln in (ROOT / "Makefile").read_text().splitlines()
                      if ln.startswith("TORCH"))
    pins = [ln for ln in (ROOT / "constraints.txt").read_text().splitlines()
            if ln and not ln.startswith("#")]
    assert sorted(torch_line.split(":=")[1].split()) == sorted(pins)

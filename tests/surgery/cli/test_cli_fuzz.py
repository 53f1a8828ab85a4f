"""Fuzzed command lines: random argument lists per subcommand, with hostile values (negative,
huge, NaN, inf, 1e999, empty, unicode, escape sequences) and hostile files (tampered folders,
garbage weights, corrupt and 400-Mpixel images, unwritable and symlinked outputs). Every run
must exit 0 or 2, print no traceback and, on 2, end with exactly one printable ``error:`` line.

Run in-process through ``main(argv)``. The default budget is small (a few seconds per
subcommand); ``-m zoo`` runs 300 examples per subcommand.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from surgery.cli import main
from tests.surgery.cli.hostile import Hostile

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=12)
HOSTILE_NUMBERS = st.sampled_from([
    "0", "-1", "-0.5", "1e999", "-1e999", "nan", "inf", "-inf", "", "1.5",
    "99999999999999999999", "18446744073709551616", "0x10", "1_0", "\u0663", "1e-320", " 1 ",
    "100000"]) | st.integers(-10**20, 10**20).map(str) | st.floats().map(str) | TEXT


def mostly(valid: list[str], hostile: st.SearchStrategy = HOSTILE_NUMBERS) -> st.SearchStrategy:
    """A valid value two times in three, else a hostile one."""
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid), hostile)


# options that set how much work a valid run does: valid values stay small
WORK = mostly(["1", "2"], st.sampled_from(["0", "-1", "nan", "1e999", "", "10**3", "x", "-0",
                                           "99999999999999999999"]))
SHAPE = mostly(["1,1,28,28", "2,1,28,28", "1,3,16,16"], st.sampled_from(
    ["1,3,32,32", "-1,3", "0", "1,1,8192,8192", "", "1,x", "1," * 9 + "1", "99999999999,1",
     "1,1,28,28,1", "1;1"]) | TEXT)


def _paths(h: Hostile, out: Path) -> dict[str, list[str]]:
    """Hostile values per kind of path option; ``out`` is a fresh folder for this run."""
    (out / "file").write_text("mine")
    (out / "full").mkdir()
    (out / "full" / "notes.txt").write_text("mine")
    (out / "link").symlink_to(out / "file")
    readonly = [str(h.readonly / "x")] if h.readonly else []
    return {
        "out": [str(out / "new"), str(out / "file"), str(out / "full"), str(out / "link"),
                str(out / "missing" / "x"), "", str(out / "new\x1b[31m"), str(out / "m.onnx"),
                *readonly],
        "folder": [str(h.folder), *map(str, h.tampered.values()), str(out / "missing"),
                   str(out / "file"), str(h.weights)],
        "model": ["lenet", "nope", "timm:nope", "", "\x1b[2J", *(
            f"{h.nets}:{f}" for f in ("build", "dict_out", "str_out", "meta", "boom", "nope")),
                  str(h.weights) + ":x", "file.py:build"],
        "weights": [str(h.weights), str(h.garbage), str(out / "missing.pt"), str(h.folder),
                    str(h.folder / "plan.json")],
        "images": [*map(str, h.images.values()), str(out / "missing"), str(h.folder)],
        "data": [str(h.mnist), str(out / "missing"), str(h.weights)],
    }


def pick(paths: dict[str, list[str]], kind: str) -> st.SearchStrategy:
    """The first (good) path of ``kind`` two times in three, else a hostile one or any text."""
    return mostly(paths[kind][:1], st.sampled_from(paths[kind][1:]) | TEXT)


def _options(paths: dict[str, list[str]]) -> dict[str, dict[str, st.SearchStrategy]]:
    """Per subcommand: option -> strategy of its value (None: a flag without value)."""
    def path(kind):
        return pick(paths, kind)

    graph = {"--input-shape": SHAPE, "--weights": path("weights"),
             "--num-classes": mostly(["10", "3"]), "--seed": mostly(["0", "7"]),
             "--ignore": st.sampled_from(["conv1", "nope", "fc3"])}
    model = {**graph, "--device": mostly(["cpu"], st.sampled_from(["cuda", "cuda:9", "meta",
                                                                    "tpu", ""]))}
    return {
        "prune": {**model, "--ratio": mostly(["0.5", "0", "conv1=0.5,fc1=0.3"], st.sampled_from(
            ["conv1=0.5,conv1=0.2", "=", "fc3=nan", "conv9=0.5", "conv1=1e999", "1", "nan"])),
            "--target-macs": mostly(["100k", "0.2M"], st.sampled_from(["1e999", "0", "1e999T"])),
            "--target-latency": st.sampled_from(["nan", "inf", "-1ms", "0s", "1e999", "x"]),
            "--threads": mostly(["1"]), "--max-ratio": mostly(["0.5", "1"]),
            "--round-to": mostly(["1", "4"]),
            "--importance": mostly(["l1", "l2", "random"], st.sampled_from(["nope", ""])),
            "--out": path("out"), "--dry-run": None, "--force": None, "--global": None},
        "graph": graph,
        "report": {**model, "--pruned": path("folder"), "--out": path("out"), "--runs": WORK,
                   "--warmup": WORK, "--threads": mostly(["1", "0"]), "--no-latency": None,
                   "--backend": mostly(["eager"], st.sampled_from(["nope"])), "--force": None},
        "export": {"--format": mostly(["onnx", "torch-export"], st.sampled_from(["nope"])),
                   "--base": path("model"), "--input-shape": SHAPE, "--out": path("out"),
                   "--input-dtype": mostly(["float"], st.sampled_from(["long", "nope"])),
                   "--force": None},
        "finetune": {"--out": path("out"), "--epochs": WORK, "--lr": mostly(["0.01", "100"]),
                     "--batch-size": mostly(["8", "1"]), "--seed": mostly(["0", "3"]),
                     "--images": path("images"), "--data": path("data"), "--max-images": WORK,
                     "--temperature": mostly(["4"]), "--alpha": mostly(["0.5", "1"]),
                     "--optimizer": mostly(["sgd", "adam"], st.sampled_from(["x"])),
                     "--distill": path("weights"), "--base": path("model"),
                     "--input-shape": SHAPE, "--force": None},
        "sparsify": {"--sparsity": mostly(["conv1=0.5", "conv1=0.5,fc1=0.9"], st.sampled_from(
                         ["conv1=0.5,conv1=0.9", "x", "conv9=0.5", "conv1=nan", "conv1=1e999"])),
                     "--weights": path("weights"), "--train-epochs": WORK,
                     "--finetune-epochs": WORK, "--lr": mostly(["0.01", "100"]),
                     "--data": path("data"), "--out": path("out"), "--seed": mostly(["1"]),
                     "--force": None},
    }


# What each run starts from (fuzzed options come after, so they override these): quick work
# with valid values, the positional argument drawn from hostile ones.
BASE = {"prune": ["--ratio", "0.5"], "graph": [], "report": ["--runs", "2", "--warmup", "0",
                                                       "--no-plot"],
        "export": ["--format", "onnx"], "finetune": ["--max-images", "8", "--data", "@mnist"],
        "sparsify": ["--train-epochs", "1", "--finetune-epochs", "1", "--data", "@mnist"]}
POSITIONAL = {"prune": "model", "graph": "model", "report": "model", "export": "folder",
              "finetune": "folder", "sparsify": "model"}


@st.composite
def command_lines(draw, command: str, h: Hostile, out: Path) -> list[str]:
    paths = _paths(h, out)
    options = _options(paths)[command]
    argv = [command, draw(pick(paths, POSITIONAL[command]))]
    argv += [a.replace("@mnist", str(h.mnist)) for a in BASE[command]]
    if command != "graph":
        argv += ["--out", str(out / ("new.safetensors" if command == "sparsify" else "new"))]
    for flag in draw(st.lists(st.sampled_from(sorted(options)), max_size=4, unique=True)):
        value = options[flag]
        argv += [flag] if value is None else [flag, draw(value)]
    if draw(st.sampled_from([False] * 9 + [True])):  # a stray token somewhere
        argv.insert(draw(st.integers(1, len(argv))), draw(TEXT | st.sampled_from(["-x", "--"])))
    return argv


def run_cli(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """main(argv) run in ``cwd`` (so relative paths land there): exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def check_run(argv: list[str], cwd: Path) -> None:
    """Exit 0 or 2; no traceback; on 2 the last stderr line is one printable error line."""
    code, out, err = run_cli(argv, cwd)
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err and "Traceback" not in out, (argv, err)
    assert "\x1b" not in err, (argv, err)
    if code == 2:
        last = err.rstrip("\n").splitlines()[-1]
        assert last.startswith("error: ") and last.isprintable(), (argv, err)
        assert not last.startswith("error: unexpected "), (argv, last)  # no bug


COMMANDS = ["prune", "graph", "report", "export", "finetune", "sparsify"]


def _fuzz(command: str, hostile: Hostile, examples: int) -> None:
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data):
        out = Path(tempfile.mkdtemp(dir=hostile.root, prefix="run-"))
        check_run(data.draw(command_lines(command, hostile, out)), out)
    run()


@pytest.mark.parametrize("command", COMMANDS)
def test_fuzzed_command_lines_exit_0_or_2_in_one_line(command, hostile):
    _fuzz(command, hostile, examples=25)


@pytest.mark.zoo
@pytest.mark.parametrize("command", COMMANDS)
def test_fuzzed_command_lines_many(command, hostile):
    _fuzz(command, hostile, examples=300)

"""The hostile inputs (``hostile.py``), written once for the command line's tests."""

import pytest

from tests.surgery.cli.hostile import make_hostile, release


@pytest.fixture(scope="session")
def hostile(tmp_path_factory):
    h = make_hostile(tmp_path_factory.mktemp("hostile"))
    yield h
    release(h)

"""Test support shipped for users and benchmarks: the exactness oracle (``oracle``)."""

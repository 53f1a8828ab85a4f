"""Errors raised while tracing a model."""


class TraceError(ValueError):
    """The model cannot be traced or the example inputs do not fit it; the message says where."""


class Refused(Exception):
    """Raised by a coupling rule that cannot follow this call (the op is reported as
    unsupported with the message); any other exception from a rule is a bug and surfaces."""

"""Errors raised while tracing a model."""


class TraceError(ValueError):
    """The model cannot be traced or the example inputs do not fit it; the message says where."""

"""Measuring a model: MACs and params (``flops``, fvcore), latency (``latency``) and the
before/after report (``report``) with its chart (``plot``)."""

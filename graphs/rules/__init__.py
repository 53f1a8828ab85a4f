"""Coupling rules, one module per family of ops; ``graphs.rules.defaults`` is the one table of
every op the tracer understands and its rule (the layer kinds' own calls come from
``graphs.kinds``). A rule is ``rule(ctx, node) -> Flow | tuple | None`` (``graphs.context``).

Example:
    >>> from graphs.rules.defaults import default_rules
    >>> default_rules().lookup("call_method", "view").__name__
    'reshape'
"""

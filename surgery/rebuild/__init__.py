"""Rebuilding layers: one surgeon per layer kind (``surgeons``, ``attention``), applying a plan to
a model (``apply``) and checking every layer's channel counts afterwards (``lint``)."""

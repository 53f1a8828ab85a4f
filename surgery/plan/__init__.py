"""Deciding what to cut: channel importance (``importance``, ``taylor``), how many channels each
group loses (``budget``, ``target``) and the JSON-able plan of kept and removed indices (``plan``)."""

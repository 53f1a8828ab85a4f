"""Reading and writing models: models by name (``models``), save/load of pruned models as
safetensors + plan.json (``saving``), ONNX and torch.export files (``export``)."""

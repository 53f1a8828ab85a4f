"""Recovering accuracy after pruning: MNIST data (``data``), training and fine-tuning (``train``),
unstructured sparsity masks (``sparsity``) and iterative prune -> fine-tune (``schedule``)."""

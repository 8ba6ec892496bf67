"""Training both stages with PyTorch Lightning."""

"""Training: the one fit() loop, datasets and sampling, losses, augmentation, self-training policies."""

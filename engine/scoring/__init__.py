"""Validator-style scoring: the validator's transform, its 16 views, CLIP text alignment.

`engine.scoring.alignment` is torch-free; the other modules import torch.
"""

"""Depth priors and confidence maps for depth-supervised training and refinement.

estimators.py  MiDaS through torch.hub (local code + weights only), and disparity from ground-truth depth
confidence.py  confidence from depth variance under augmentations (or depth gradients), and its per-image cache
pseudo.py      pseudo cameras on the rig's orbit between training cameras, drawn from a refilling stack
priors.py      a batch's depth prior and confidence, attached by the data module for the loss terms
"""

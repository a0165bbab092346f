"""Decoders (brain -> embedding), preprocessing and checkpoints.

Every decoder is built as ``cls(n_inputs, n_outputs, config)`` and found by name through
:mod:`fmri2img.models.registry`.
"""

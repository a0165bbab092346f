"""Models: decoders (brain -> embedding), adapters (embedding -> embedding), preprocessing
and the pipeline that fits, saves and loads them.

Every model is built as ``cls(input_shape, n_outputs, config)`` (:mod:`.base`) and found by
name through one of the two registries of :mod:`.registry` (``decoders``, ``adapters``).
Decoders: ``ridge`` (:mod:`.ridge`), ``mlp``, ``two_stage``, ``contrastive_mlp`` (torch,
:mod:`.torch_decoder`), ``multi_target`` (:mod:`.multi_target`), and for
``(channels, times)`` EEG epochs ``eeg_conv`` and ``cbramod`` (:mod:`.eeg`); adapters:
``linear``, ``mlp`` (:mod:`.adapters`). Image generators (embeddings -> images, on
diffusers pipelines: ``unclip``, ``ip_adapter``, ``kandinsky``) live in :mod:`.diffusion`
and are found through the third registry, ``generators``.
"""

"""Embedding targets: the stimuli of an index (:mod:`.images`), the embedding backends
(:mod:`.embedder_base`, :mod:`.embedders`) and the ``embed-images`` / ``embed-captions``
commands (:mod:`.embed`) that write embedding tables (:mod:`fmri2img.io.embedding_table`)."""

"""Data: the readers (NSD, NSD-Imagery, ``.mat``), the trial index and its beta cache,
every split (:mod:`.splits`), trials joined to betas and targets (:mod:`.trials`) and the
simulator (:mod:`.simulate`). Imports only the ground floor (``io/``, config, errors)."""

"""Orchestration only: each module runs one command from its validated config, reading
with ``data/`` and ``targets/``, fitting with ``models/`` and ``training/``, scoring with
``eval/``, judging with ``analysis/`` and writing with ``io/`` and ``report/``:
:mod:`.train_decoder`, :mod:`.adapter_train`, :mod:`.finetune` (on :mod:`.fold_training`),
:mod:`.evaluate` (with :mod:`.predictors`), :mod:`.ablation` (a method table), :mod:`.h1`
and :mod:`.study` (the main job)."""

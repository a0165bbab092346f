"""Analyses of decoding results: the study's hypothesis verdicts (:mod:`.hypotheses`).

Pure numerics on result rows and arrays; what is written and shown lives in ``report/``.
"""

"""Everything that renders: console tables (:mod:`.console`), the evaluation README and
figures (:mod:`.eval_report`), the hypotheses page (:mod:`.hypotheses_report`), the
ablation's tables and figures (:mod:`.ablation_tables`, :mod:`.ablation_figures`), and the
PNG + PDF helpers (:mod:`.figures`). Takes results, never computes them."""

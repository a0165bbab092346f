"""Everything that renders: console tables (:mod:`.console`), the evaluation README and
figures (:mod:`.eval_report`), the hypotheses page (:mod:`.hypotheses_report`), the
ablation's tables and figures (:mod:`.ablation_tables`, :mod:`.ablation_figures`), the
reconstruction grid and image-metrics table (:mod:`.reconstruction_figures`), the study's
self-contained HTML page (:mod:`.html_page` renders, :mod:`.study_page` gathers), and the
PNG + PDF helpers (:mod:`.figures`). Takes results, never computes them."""

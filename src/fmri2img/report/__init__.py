"""Tables and figures for people: printed tables, Markdown/LaTeX, PNG/PDF plots."""

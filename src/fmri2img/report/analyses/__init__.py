"""Figures of the perception-vs-imagery analyses, one module per analysis."""

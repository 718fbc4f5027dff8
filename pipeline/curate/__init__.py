"""Stage `curate`: descriptor analysis, DuckDB rules, splits, and the swap dictionary."""

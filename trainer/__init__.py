"""The DuET-MC trainer and evaluator (built in later issues)."""

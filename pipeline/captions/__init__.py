"""Stage `captions`: Augment (LLM captions from tags) and Drop (views from tag subsets)."""

"""Data stages: demo data, captions (Augment + Drop), curation, shards."""

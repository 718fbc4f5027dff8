"""Using a trained model: search an embedded catalog (exact or approximate), serve the
search and listening-test pages. Reads what `adswap embed` writes (schemas/embeddings);
imports `trainer` for the model and `schemas` for the contracts, never `pipeline`."""

"""Model building blocks: linear (with quantisation methods), norms, rotary, activations, embeddings."""

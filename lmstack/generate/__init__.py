"""Generation: sampling, beam search, speculative and constrained decoding over any model with the cache protocol."""

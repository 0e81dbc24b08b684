"""Corpora: where utterances come from, their speakers, caching, held-out split and batches."""

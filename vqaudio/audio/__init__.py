"""Audio helpers shared by data and model code: μ-law companding and file I/O."""

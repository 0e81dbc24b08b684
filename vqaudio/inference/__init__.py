"""Using trained models: one `load` for every checkpoint kind, encode, decode, convert, priors
(pairing, scoring, sampling) and entropy coding."""

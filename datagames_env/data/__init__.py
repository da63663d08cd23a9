"""Data: dataset loaders and splits, per-robot streams (class mixes, drift, initial cloud), visual domains
(corruptions) and the privacy filter."""

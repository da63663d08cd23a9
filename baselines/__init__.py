"""Analytic baselines of the Data Games paper. Filled by the baselines issue."""

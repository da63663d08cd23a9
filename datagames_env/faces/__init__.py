"""Faces: the ways users drive a scenario (PettingZoo parallel + AEC, the vector env, rendering)."""

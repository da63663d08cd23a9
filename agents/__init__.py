"""Learned sharing policies (RLlib, Stable-Baselines3). Filled by the learned-policies issue."""

"""Packages, and ``configs/*.yaml`` shipped inside the package as ``datagames_env/configs`` (a mapped package
directory: pyproject's ``packages.find`` cannot add one), so a non-editable ``pip install .`` finds the configs
from any folder; ``hydra_plugins.datagames_benchmarl`` (a portion of hydra's plugin namespace package) lets
BenchMARL's own CLI find the ``task/datagames/*.yaml`` tree. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["datagames_env*", "agents*", "baselines*"])
    + ["datagames_env.configs", "hydra_plugins.datagames_benchmarl"],
    package_dir={"datagames_env.configs": "configs"},
    package_data={"datagames_env.configs": ["*.yaml", "benchmarl/task/datagames/*.yaml"]},
)

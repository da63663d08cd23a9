"""The shared harness: one CLI for every scenario (same flags, scenario defaults), clear config and policy errors,
run folders that name their overrides, console tables not cut in logs, configs found from any folder."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from datagames_env.harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
P2P_SMALL = ["--set", "rounds=1", "--set", "obs_per_round=20", "--set", "perception.train_steps=30"]
DUAL_SMALL = ["--set", "n_robots=3", "--set", "rounds=1", "--set", "obs_per_round=30", "--set", "n_cache=4",
              "--set", "label_budget=6", "--set", "initial_cloud_size=40", "--set", "perception.train_steps=60"]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def test_a_config_error_lists_the_known_keys_once_for_the_scenario_it_names(capsys):
    # before the shared CLI: `datagames run --config p2p_default` validated a p2p config as the cloud game's and
    # printed ~2,000 characters, the cloud game's key list repeated once per p2p key
    assert main(["run", "--config", "p2p_default", "--set", "topolgy=ring", "--set", "rounds=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'topolgy' (did you mean 'topology'?)" in err
    assert err.count("known keys") == 1 and "share_fraction" in err  # the p2p keys, once
    assert "action_mode" not in err and len(err) < 600
    from datagames_env.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="the config is for scenario 'p2p', not 'datagames'") as info:
        load_config("p2p_default")
    assert len(str(info.value)) < 300


def test_unknown_policy_lists_the_policies_of_the_named_scenario(capsys):
    assert main(["eval", "--config", "dual_default", "--policies", "gu", "--seeds", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unknown policies ['gu']" in err and "scenario 'dual'" in err and "submodular-independent" in err
    assert "interactive-sum" not in err  # a cloud-game policy is not offered for dual


def test_run_works_on_every_scenario_and_prints_the_final_accuracy(tmp_path, capsys):
    assert main(["run", "--config", "p2p_default", "--out", str(tmp_path), "--no-progress", *P2P_SMALL]) == 0
    assert main(["run", "--config", "dual_default", "--policy", "random/margin", "--out", str(tmp_path),
                 "--no-progress", *DUAL_SMALL]) == 0
    out = capsys.readouterr().out
    assert "final test accuracy of the cloud model: 0." in out
    # the dual table has 7 columns: in a log (not a terminal) its header stays on one line
    assert any("upload obj. gain" in line and "blurred/dropped" in line for line in out.splitlines())
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert folders[0].startswith("dual_default-random_margin-seed0+n_robots=3+rounds=1")
    assert folders[1].startswith("p2p_default-gu-seed0+rounds=1")
    for folder, files in zip(folders, (("accuracy.png", "rounds.csv"), ("accuracy.png", "rare_share.png"))):
        payload = json.loads((tmp_path / folder / "results.json").read_text())
        assert len(payload["episodes"]) == 1 and all((tmp_path / folder / f).is_file() for f in files)


def test_run_folders_name_their_overrides():
    from datagames_env.harness.cli import run_folder

    plain = run_folder("default", "greedy", 0, [])
    assert plain == "default-greedy-seed0"
    assert run_folder("default", "greedy", 0, ["n_robots=50"]) == "default-greedy-seed0+n_robots=50"
    # a config path (two files may share a stem): the readable name and a hash of the exact inputs
    with_path = run_folder("configs/default.yaml", "greedy", 0, ["n_robots=50"])
    assert with_path.startswith("default-greedy-seed0+n_robots=50+h")
    long = run_folder("default", "rllib:run/x", 1, [f"stream.mixes.{k}=0.5" for k in range(20)])
    assert len(long) < 120 and long != run_folder("default", "rllib:run/x", 1, ["stream.alpha=1"])


def test_consoles_are_wide_when_output_is_not_a_terminal(monkeypatch):
    from rich.table import Table

    from datagames_env.harness.cli import LOG_WIDTH, make_console

    monkeypatch.setenv("COLUMNS", "80")  # exported by many tools to their children: must not cut a log
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    console = make_console()
    assert console.width == LOG_WIDTH > 80
    table = Table()
    for k in range(9):
        table.add_column(f"column number {k}")
    console.print(table)
    header = [line for line in sys.stdout.getvalue().splitlines() if "column number 0" in line]
    assert len(header) == 1 and "column number 8" in header[0]


def test_first_run_says_the_kernels_compile_once(monkeypatch):
    from rich.console import Console

    from datagames_env.harness import warmup

    buffer = io.StringIO()
    monkeypatch.setattr(warmup, "kernels_compiled", lambda: False)
    warmup.notice_if_compiling(Console(file=buffer, width=200))
    assert "compiling the numba kernels once" in buffer.getvalue()
    monkeypatch.setattr(warmup, "kernels_compiled", lambda: True)
    buffer.truncate(0)
    warmup.notice_if_compiling(Console(file=buffer, width=200))
    assert buffer.getvalue() == ""


def test_report_rebuilds_a_results_folder(tmp_path):
    out = tmp_path / "ev"
    assert main(["eval", "--set", "n_robots=3", "--set", "rounds=2", "--policies", "uniform,greedy", "--seeds", "1",
                 "--workers", "1", "--out", str(out), "--no-progress"]) == 0
    (out / "summary.md").unlink()
    (out / "distance.png").unlink()
    assert main(["report", str(out)]) == 0
    assert "greedy" in (out / "summary.md").read_text() and (out / "distance.png").is_file()


def test_configs_resolve_from_any_folder(tmp_path):
    probe = ("from datagames_env.scenarios import scenario_of; from datagames_env.config import resolve_config_path;"
             "print(resolve_config_path('p2p_default'), scenario_of('dual_default'))")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    path, scenario = out.stdout.split()
    assert Path(path).is_file() and scenario == "dual"


def test_the_wheel_ships_the_configs(tmp_path):
    """A non-editable install finds configs/ as package data (datagames_env/configs in the wheel)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("configs", "datagames_env", "agents", "baselines", "hydra_plugins"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    if build.returncode != 0 and "No module named" in build.stderr:
        pytest.skip(f"cannot build wheels here: {build.stderr[-200:]}")
    assert build.returncode == 0, build.stderr
    names = zipfile.ZipFile(next((tmp_path / "dist").glob("*.whl"))).namelist()
    shipped = {n.removeprefix("datagames_env/configs/") for n in names if n.startswith("datagames_env/configs/")}
    expected = {p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert expected <= shipped, sorted(expected - shipped)  # the top-level configs and the BenchMARL task files
    assert any(n.endswith("entry_points.txt") for n in names)


def test_every_scenario_has_a_results_writer_policies_and_defaults_that_parse():
    from datagames_env.harness.reports import REPORTERS, reporter
    from datagames_env.policy import parse_policy_spec
    from datagames_env.scenarios import SCENARIOS, scenario_of

    assert set(REPORTERS) == set(SCENARIOS)
    for scenario in SCENARIOS:
        rep = reporter(scenario)
        assert scenario_of(rep.default_config) == scenario
        for spec in [rep.default_policy, *rep.default_policies.split(",")]:
            assert parse_policy_spec(spec, scenario).scenario == scenario

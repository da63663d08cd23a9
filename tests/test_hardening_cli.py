"""Hardening of the command line, the reports and the training logs (issue 16): the data folder of the shipped
configs, numbers checked by argparse, run folders that never share a name, scenario aliases that do not nest,
resumed runs that report their counts one way, one labelling rule for every table, training logs without
third-party noise, and figures a reader can put in a paper (titles, labels, spread, seed counts)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from datagames_env.harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATAGAMES_SMALL = {"n_robots": 3, "rounds": 3}
DUAL_SMALL = {"n_robots": 3, "rounds": 2, "obs_per_round": 30, "n_cache": 4, "label_budget": 6,
              "initial_cloud_size": 40, "perception.train_steps": 60}
P2P_SMALL = {"rounds": 2, "obs_per_round": 20, "perception.train_steps": 30}
CHECKPOINT = "rllib:/somewhere/runs/train/default-ppo-20260101/checkpoint"  # a learned policy's spec: a long path


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


# ------------------------------------------------------------------------------------------ 1. dataset paths
def test_the_p2p_toy_config_lets_the_data_dir_variable_win(monkeypatch, tmp_path):
    from datagames_env.data.datasets import DATA_DIR_ENV_VAR, resolve_data_dir
    from datagames_env.scenarios.p2p import load_p2p_config

    monkeypatch.setenv(DATA_DIR_ENV_VAR, str(tmp_path))
    assert resolve_data_dir(load_p2p_config("p2p_toy").data_dir) == tmp_path
    # an explicit folder (--data-dir sets the config key) still wins over the variable
    assert resolve_data_dir(load_p2p_config("p2p_toy", data_dir=str(ROOT)).data_dir) == ROOT


def test_no_shipped_config_carries_a_machine_path():
    import yaml

    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        dataset = raw.get("dataset") if isinstance(raw.get("dataset"), dict) else {}
        assert raw.get("data_dir") is None and dataset.get("data_dir") is None, f"{path.name} names a data folder"


# ---------------------------------------------------------------------------------------- 2. numbers in argparse
BAD_ARGUMENTS = [
    (["eval", "--seeds", "-2"], "--seeds"),
    (["eval", "--seeds", "0"], "--seeds"),
    (["eval", "--first-seed", "-1"], "--first-seed"),
    (["eval", "--workers", "0"], "--workers"),
    (["p2p", "eval", "--seeds", "-2"], "--seeds"),
    (["run", "--seed", "-1"], "--seed"),
    (["run", "--seed", "1.5"], "--seed"),
    (["run", "--seed", str(2**64)], "--seed"),
    (["run", "--set", "n_robots"], "--set"),
    (["run", "--set", "=3"], "--set"),
    (["train", "--iterations", "-1"], "--iterations"),
    (["train", "--iterations", "0"], "--iterations"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--lr", "-0.1"], "--lr"),
    (["train", "--entropy-coeff", "inf"], "--entropy-coeff"),
    (["train", "--initial-log-std", "nan"], "--initial-log-std"),
    (["train", "--train-batch-size", "0"], "--train-batch-size"),
    (["train", "--minibatch-size", "0"], "--minibatch-size"),
    (["train", "--num-epochs", "0"], "--num-epochs"),
    (["train", "--checkpoint-every", "-1"], "--checkpoint-every"),
    (["train", "--num-env-runners", "-1"], "--num-env-runners"),
    (["train", "--num-envs-per-env-runner", "-1"], "--num-envs-per-env-runner"),
    (["train", "--num-learners", "-1"], "--num-learners"),
    (["train", "--num-gpus-per-learner", "-0.5"], "--num-gpus-per-learner"),
    (["train", "--torch-threads", "-1"], "--torch-threads"),
    (["train", "--seed", "-3"], "--seed"),
    (["train", "--imitation-episodes", "0"], "--imitation-episodes"),
    (["train", "--imitation-epochs", "0"], "--imitation-epochs"),
    (["train", "--imitation-dagger-rounds", "-1"], "--imitation-dagger-rounds"),
    (["train", "--env-runner-resource", "sampler=x"], "--env-runner-resource"),
    (["train", "--env-runner-resource", "sampler=-1"], "--env-runner-resource"),
]


@pytest.mark.parametrize("argv, flag", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_bad_numbers_are_argparse_errors_that_name_the_flag(argv, flag, tmp_path, capsys):
    # --out points into tmp_path so that a command which wrongly starts writes nothing into the checkout
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(tmp_path / "out"), "--no-progress"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and f"error: argument {flag}" in err
    assert not (tmp_path / "out").exists()


def test_good_numbers_still_parse():
    from datagames_env.harness.cli import build_parser

    args = build_parser().parse_args(["eval", "--seeds", "1", "--first-seed", "0", "--workers", "1"])
    assert (args.seeds, args.first_seed, args.workers) == (1, 0, 1)
    args = build_parser().parse_args(["train", "--iterations", "1", "--lr", "1e-3", "--checkpoint-every", "0",
                                      "--num-envs-per-env-runner", "0", "--torch-threads", "0", "--set", "a.b=c=d",
                                      "--env-runner-resource", "sampler", "--env-runner-resource", "gpu_node=0.5"])
    assert (args.iterations, args.lr, args.checkpoint_every, args.set) == (1, 1e-3, 0, ["a.b=c=d"])
    assert args.env_runner_resource == [("sampler", 1.0), ("gpu_node", 0.5)]


# ------------------------------------------------------------------------------------------ 3. run folders
def test_run_folders_are_injective_over_the_exact_overrides():
    from datagames_env.harness.cli import run_folder

    # the pair: both slugged to one folder, and the second run overwrote the first
    assert run_folder("default", "greedy", 0, ["dataset.name=/x/a:b.npz"]) != \
        run_folder("default", "greedy", 0, ["dataset.name=/x/a?b.npz"])
    overrides = [[], ["x=1+y=2"], ["x=1", "y=2"], ["x=a b"], ["x=ab"], ["x= ab"], ["x=a_b"], ["x=a/b"],
                 ["stream.alpha=1"], [f"stream.mixes.{k}=0.5" for k in range(20)],
                 [f"stream.mixes.{k}=0.5" for k in range(21)]]
    names = [run_folder("default", "greedy", 0, pairs) for pairs in overrides]
    assert len(set(names)) == len(names) and all(len(n) < 120 for n in names)
    # two checkpoints whose runs share a name: one short label, two folders
    assert run_folder("default", "rllib:run", 0, [], spec="rllib:/a/run/checkpoint") != \
        run_folder("default", "rllib:run", 0, [], spec="rllib:/b/run/checkpoint")
    # a config stem with '-' could be read as config + label: hashed
    assert run_folder("a-b", "c", 0, []) != run_folder("a", "b-c", 0, [])
    # readable where the name is exact
    assert run_folder("default", "greedy", 0, ["n_robots=50"]) == "default-greedy-seed0+n_robots=50"


# ------------------------------------------------------------------------- 4. subcommand help and result labels
def test_scenario_aliases_do_not_nest(capsys):
    with pytest.raises(SystemExit) as info:
        main(["p2p", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert set(re.search(r"\{([a-z,]+)\}", out).group(1).split(",")) == {"run", "eval", "report", "train", "warmup"}
    with pytest.raises(SystemExit) as info:
        main(["p2p", "dual", "run"])
    assert info.value.code == 2 and "invalid choice: 'dual'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the top level still offers them
        main(["--help"])
    assert "p2p" in capsys.readouterr().out


def test_benchmarl_history_logs_the_return_per_robot():
    pytest.importorskip("benchmarl")
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from tensordict import TensorDict

    from agents.benchmarl_train import _history_callback

    lines = []
    recorder = _history_callback(3, lines.append)
    recorder.experiment = SimpleNamespace(total_frames=4, n_iters_performed=0)
    # 2 envs x 2 frames, 3 robots; the episodes of env 0 and env 1 end at frame 1
    rewards = torch.arange(12, dtype=torch.float32).reshape(2, 2, 3, 1)
    done = torch.tensor([[False, True], [False, True]]).unsqueeze(-1)
    batch = TensorDict({"next": {"done": done, "distance": torch.ones(2, 2, 1),
                                 "robots": {"episode_reward": rewards}}}, batch_size=[2, 2])
    recorder.on_batch_collected(batch)
    row = recorder.history[-1]
    assert row["episode_return_per_robot"] == pytest.approx(float(rewards[done.squeeze(-1)].mean()))
    assert "episode_return" not in row  # no fleet sum beside it
    assert "return per robot" in lines[-1]


# --------------------------------------------------------------------------- payloads for the report tests
def _evaluate(config, policies, seeds, **overrides) -> dict:
    from datagames_env.harness import evaluate

    return evaluate(config, policies, seeds, workers=1, progress=False, **overrides)


def _relabel(payload: dict, old: str, new: str) -> dict:
    """The payload as if policy ``old`` had been ``new`` (what `datagames report` reads from results.json)."""
    out = dict(payload)
    out["policies"] = [new if p == old else p for p in payload["policies"]]
    out["episodes"] = [dict(e, policy=new) if e["policy"] == old else e for e in payload["episodes"]]
    return out


def _one_seed(payload: dict) -> dict:
    first = payload["seeds"][0]
    return dict(payload, seeds=[first], episodes=[e for e in payload["episodes"] if e["seed"] == first])


@pytest.fixture(scope="module")
def datagames_payload():
    return _evaluate("default", ["uniform", "greedy", "oracle"], [0, 1, 2], **DATAGAMES_SMALL)


@pytest.fixture(scope="module")
def dual_payload():
    return _evaluate("dual_default", ["random/random", "entropy", "margin", "submodular-independent", "greedy",
                                      "oracle"], [0, 1], **DUAL_SMALL)


@pytest.fixture(scope="module")
def p2p_payload():
    return _evaluate("p2p_default", ["random", "gu"], [0, 1], **P2P_SMALL)


def _write(payload: dict, out: Path):
    """The reporter's files of ``payload`` (re-summarised) and the metadata of its figures."""
    from datagames_env.harness.reports import reporter

    rep = reporter(payload["scenario"])
    ctx = rep.context_from_config(payload["config"])
    payload = dict(payload, summary=rep.summarise(payload, ctx))
    out.mkdir(parents=True, exist_ok=True)
    return rep.write_files(out, payload, ctx), (out / "summary.md").read_text()


@pytest.mark.parametrize("which", ["datagames", "p2p", "dual"])
def test_learned_policies_get_one_short_label_in_every_table_and_legend(which, request, tmp_path):
    payload = request.getfixturevalue(f"{which}_payload")
    payload = _relabel(payload, payload["policies"][-1], CHECKPOINT)
    figures, summary = _write(payload, tmp_path)
    assert "/somewhere/" not in summary and "rllib:default-ppo-20260101" in summary
    shown = [t for info in figures.values() for t in info["names"]]  # legends, line labels, ticks, panel titles
    assert not any("/somewhere/" in t for t in shown)
    assert any(t.startswith("rllib:default-ppo-20260101") for t in shown)


def test_dual_names_every_policy_upload_slash_labeler(dual_payload, tmp_path):
    figures, summary = _write(dual_payload, tmp_path)
    labeler = dual_payload["config"]["labeler"]
    named = {label for info in figures.values() for ax in info["axes"] for label, _color in ax["lines"]}
    assert "random/random" in named and f"entropy/{labeler}" in named
    assert all(t.count("/") == 1 for t in named), named
    assert f"| entropy/{labeler} |" in summary


# ------------------------------------------------------------------------------------------- 6. figures
def _has_words(info: dict) -> None:
    assert info["title"], "no title"
    for ax in info["axes"]:
        assert ax["xlabel"] or info["supxlabel"], f"an axes without an x label: {ax}"
        assert ax["ylabel"] or info["supylabel"], f"an axes without a y label: {ax}"


def test_cloud_game_figures_have_titles_labels_spread_and_seed_counts(datagames_payload, tmp_path):
    figures, _ = _write(datagames_payload, tmp_path)
    assert {"distance.png", "final_counts.png", "final_distance.png"} <= set(figures)
    for name, info in figures.items():
        _has_words(info)
        assert (tmp_path / name).is_file()
    n = len(datagames_payload["seeds"])
    assert f"mean ± sd over {n} seeds" in figures["distance.png"]["title"]
    assert f"{n} seeds" in figures["final_counts.png"]["title"] and figures["final_counts.png"]["error_bars"] > 0
    # one point per (policy, seed) and the policy's spread
    final = figures["final_distance.png"]
    assert final["points"] == len(datagames_payload["episodes"])
    assert final["boxes"] == len(datagames_payload["policies"])
    assert figures["final_counts.png"]["axes"][0]["xlabel"] == "class"


@pytest.mark.parametrize("which", ["p2p", "dual"])
def test_p2p_and_dual_figures_have_titles_and_labels(which, request, tmp_path):
    payload = request.getfixturevalue(f"{which}_payload")
    figures, _ = _write(payload, tmp_path)
    assert figures
    for name, info in figures.items():
        _has_words(info)
        assert f"{len(payload['seeds'])} seeds" in info["title"], (name, info["title"])


def test_dual_figure_keeps_many_policies_readable(dual_payload, tmp_path):
    figures, _ = _write(dual_payload, tmp_path)
    info = figures["accuracy.png"]
    n = len(dual_payload["policies"])
    # small multiples: no panel holds more than the policy and the baseline, each policy keeps one color
    assert len(info["axes"]) >= n - 1 and max(len(ax["lines"]) for ax in info["axes"]) <= 2
    colors: dict[str, set] = {}
    for ax in info["axes"]:
        for label, color in ax["lines"]:
            colors.setdefault(label, set()).add(color)
    assert all(len(c) == 1 for c in colors.values()), colors


@pytest.mark.parametrize("which", ["datagames", "p2p", "dual"])
def test_one_seed_tables_print_no_zero_spread(which, request, tmp_path):
    payload = _one_seed(request.getfixturevalue(f"{which}_payload"))
    _figures, summary = _write(payload, tmp_path)
    assert "± 0.0" not in summary and "±" not in summary.split("\n", 3)[-1]
    assert "1 seed" in summary


def test_comparison_figure_keeps_its_labels_inside_and_the_plot_wide(tmp_path):
    from datagames_env.harness import marl_eval

    order = ["oracle", "interactive", "benchmarl-sample:default-mappo300", "rllib:default-ppo", "uniform"]
    distance = {a: {"point": 10.0 * k + 5, "low": 10.0 * k + 3, "high": 10.0 * k + 8} for k, a in enumerate(order)}
    fig = marl_eval.comparison_figure(distance, order)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    ax = fig.axes[0]
    for text in (ax.xaxis.label, ax.title, *ax.get_yticklabels()):
        extent = text.get_window_extent(renderer)
        assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, text.get_text()
    assert ax.get_position().width > 0.45
    assert ax.get_title() and ax.get_xlabel()
    marl_eval.save_comparison(fig, tmp_path / "comparison.png")
    assert (tmp_path / "comparison.png").is_file()


# ---------------------------------------------------------------- 4 (resume) and 5 (log noise): one RLlib run
NOISE = ("Token authentication", "RLModule(config=", "gputil", "new API stack")


@pytest.mark.xdist_group("ray")
def test_rllib_train_prints_no_third_party_noise_and_resume_reports_run_and_total(tmp_path):
    pytest.importorskip("ray.rllib")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "PYTHONWARNINGS")}
    env["PYTHONPATH"] = str(ROOT)
    small = ["--set", "n_robots=3", "--set", "rounds=3", "--set", "obs_per_round=30", "--set", "n_cache=2",
             "--train-batch-size", "90", "--minibatch-size", "45", "--num-epochs", "1", "--out", str(tmp_path),
             "--no-progress", "--checkpoint-every", "0"]

    def train(*extra: str) -> str:
        done = subprocess.run([sys.executable, "-m", "datagames_env.harness.cli", "train", *small, *extra],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        for notice in NOISE:
            assert notice not in done.stdout + done.stderr, (notice, done.stderr[-2000:])
        return done.stdout

    pattern = (r"this run: (\d+) iterations?, ([\d,]+) agent steps; in all: (\d+) iterations?, ([\d,]+) agent steps")
    first = re.search(pattern, train("--iterations", "2", "--name", "first"))
    assert first, "no run/total line"
    run_iters, run_steps, all_iters, all_steps = (int(g.replace(",", "")) for g in first.groups())
    assert (run_iters, all_iters) == (2, 2) and run_steps == all_steps > 0
    second = re.search(pattern, train("--iterations", "1", "--name", "second", "--resume",
                                      str(tmp_path / "first" / "checkpoint")))
    assert second, "no run/total line after --resume"
    r_iters, r_steps, a_iters, a_steps = (int(g.replace(",", "")) for g in second.groups())
    assert (r_iters, a_iters) == (1, 3)
    assert 0 < r_steps and a_steps == all_steps + r_steps


def test_sb3_resume_counts_iterations_and_agent_steps_from_the_first_run(tmp_path):
    pytest.importorskip("stable_baselines3")
    from dataclasses import replace

    from agents.rllib_train import TrainSettings
    from agents.sb3_train import train_sb3
    from datagames_env.harness.cli import training_counts

    settings = TrainSettings(config="default", overrides={"n_robots": 3, "rounds": 3, "obs_per_round": 30,
                                                          "n_cache": 2}, iterations=2, train_batch_size=90,
                             minibatch_size=45, num_epochs=1, out=str(tmp_path), run_name="a", progress=False,
                             num_envs_per_env_runner=2)
    first = train_sb3(settings, log=lambda *a: None)
    second = train_sb3(replace(settings, iterations=1, resume=first["checkpoint"], run_name="b"), log=lambda *a: None)
    assert [h["iteration"] for h in second["history"]] == [3]  # cumulative, as RLlib's training_iteration
    assert second["this_run"]["iterations"] == 1 and second["total"]["iterations"] == 3
    assert second["total"]["agent_steps"] == first["total"]["agent_steps"] + second["this_run"]["agent_steps"]
    assert second["history"][-1]["agent_steps"] == second["total"]["agent_steps"]
    assert training_counts(second).startswith("this run: 1 iteration, ") and "; in all: 3 iterations" in \
        training_counts(second)

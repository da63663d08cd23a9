"""``datagames`` command line: ``datagames run --config default --policy random --seed 0``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np


def _parse_overrides(pairs: list[str]) -> dict:
    """``--set n_robots=50 --set stream.alpha=0.1`` -> overrides (values parsed as YAML scalars)."""
    import yaml

    overrides = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--set expects KEY=VALUE, got '{pair}'")
        key, value = pair.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def plot_distance(record: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot([r["round"] for r in record["rounds"]], [r["distance"] for r in record["rounds"]], marker="o")
    ax1.set_xlabel("round")
    ax1.set_ylabel("distance to target")
    ax1.set_title(title)
    ax1.grid(alpha=0.3)
    x = np.arange(len(record["class_names"]))
    ax2.bar(x - 0.2, record["rounds"][-1]["cloud_counts"], width=0.4, label="cloud (final)")
    ax2.bar(x + 0.2, record["target_counts"], width=0.4, label="target")
    ax2.set_xticks(x, record["class_names"], fontsize=8)
    ax2.set_title("final class counts")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from datagames_env import parallel_env
    from datagames_env.evaluate import Job, run_job
    from datagames_env.policy import make_policy

    console = Console(stderr=False)
    overrides = _parse_overrides(args.set)
    if args.data_dir:
        overrides["dataset.data_dir"] = args.data_dir
    with console.status("building environment (dataset, first model version)..."):
        env = parallel_env(args.config, **overrides)
        policy = make_policy(args.policy, env)  # fails early on an unknown name
    cfg = env.config
    console.print(f"[bold]datagames_v0[/] config [cyan]{args.config}[/]: {cfg.n_robots} robots, {cfg.rounds} rounds, "
                  f"{cfg.obs_per_round} obs/round, n_cache {cfg.n_cache}, dataset {cfg.dataset.name}, "
                  f"policy [cyan]{policy.name}[/], seed {args.seed}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("round 0", total=cfg.rounds)

        def on_round(r: dict) -> None:
            progress.update(task, advance=1, description=f"round {r['round']}  distance {r['distance']:.2f}")

        record = run_job(Job(cfg.model_dump(), args.policy, args.seed), on_round=on_round, env=env)
    table = Table(title=f"final cloud vs target ({cfg.loss} distance {record['initial_distance']:.2f} -> "
                        f"{record['final_distance']:.2f})")
    for column in ("class", "cloud", "target", "gap"):
        table.add_column(column, justify="right")
    for name, c, t in zip(record["class_names"], record["rounds"][-1]["cloud_counts"], record["target_counts"]):
        table.add_row(name, f"{c:.0f}", f"{t:.1f}", f"{t - c:+.1f}")
    console.print(table)
    out = Path(args.out) / f"{Path(str(args.config)).stem}-{policy.name}-seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    record["config"] = cfg.model_dump()
    (out / "episode.json").write_text(json.dumps(record, indent=1))
    plot_distance(record, out / "distance.png", f"{policy.name} on {Path(str(args.config)).stem}")
    console.print(f"return {record['return']:.4f}; wrote {out / 'episode.json'} and {out / 'distance.png'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markdown import Markdown

    from datagames_env.evaluate import evaluate

    overrides = _parse_overrides(args.set)
    if args.data_dir:
        overrides["dataset.data_dir"] = args.data_dir
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    out = Path(args.out) if args.out else Path("results") / Path(str(args.config)).stem
    payload = evaluate(args.config, policies, seeds, out, workers=args.workers, ray_address=args.ray_address,
                       **overrides)
    console = Console()
    console.print(Markdown((out / "summary.md").read_text()))
    console.print(f"results in {out}/: results.json rounds.csv final.csv distance.png final_counts.png summary.md "
                  f"({payload['elapsed_s']:.0f} s)")
    return 0


def _parse_resources(items: list[str]) -> dict[str, float]:
    """``["datagames_runner=1"]`` -> ``{"datagames_runner": 1.0}`` (custom Ray resources)."""
    out = {}
    for item in items:
        name, sep, amount = item.partition("=")
        try:
            out[name.strip()] = float(amount) if sep else 1.0
        except ValueError:
            raise SystemExit(f"--env-runner-resource: '{item}' is not NAME=AMOUNT") from None
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    try:
        from agents.rllib_train import TrainSettings
    except ImportError as exc:
        raise SystemExit(f"datagames train needs the rl extra (pip install -e '.[rl]'): {exc}") from None
    if args.data_dir:  # every scenario, and the Ray workers, read $DATAGAMES_DATA_DIR
        from datagames_env.datasets import DATA_DIR_ENV_VAR

        os.environ[DATA_DIR_ENV_VAR] = str(Path(args.data_dir).resolve())
    settings = TrainSettings(
        config=args.config, overrides=_parse_overrides(args.set), iterations=args.iterations, model=args.model,
        selection_dist=args.selection_dist, allocation_dist=args.allocation_dist,
        per_robot=args.per_robot, num_env_runners=args.num_env_runners,
        num_envs_per_env_runner=args.num_envs_per_env_runner, num_learners=args.num_learners,
        num_gpus_per_learner=args.num_gpus_per_learner, ray_address=args.ray_address, tune=args.tune,
        seed=args.seed, lr=args.lr, train_batch_size=args.train_batch_size, minibatch_size=args.minibatch_size,
        num_epochs=args.num_epochs, entropy_coeff=args.entropy_coeff, initial_log_std=args.initial_log_std, out=args.out, run_name=args.name,
        resume=args.resume, checkpoint_every=args.checkpoint_every, torch_threads=args.torch_threads or None,
        critic=args.critic, imitate=args.imitate, imitation_episodes=args.imitation_episodes,
        imitation_epochs=args.imitation_epochs, message_sweeps=args.message_sweeps,
        env_runner_resources=_parse_resources(args.env_runner_resource))
    if args.algo == "ppo":
        from agents.rllib_train import train
    else:
        from agents.sb3_train import train_sb3 as train
    result = train(settings, log=console.print)
    last = result["history"][-1] if result["history"] else {}
    console.print(f"trained {len(result['history'])} iterations, {last.get('agent_steps', 0):,} agent steps in "
                  f"{result['elapsed_s']:.0f} s; checkpoint {result['checkpoint']}")
    console.print(f"evaluate: datagames eval --config {args.config} --policies greedy,interactive,oracle,"
                  f"{'rllib' if args.algo == 'ppo' else 'sb3'}:{result['checkpoint']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datagames", description="Fleet data collection environment (Data Games).")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="play one episode with a policy, print the final table, save a plot")
    run.add_argument("--config", default="default", help="config name in configs/ or a YAML path (default: default)")
    run.add_argument("--policy", default="random", help="policy name (random, uniform, ...)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--data-dir", default=None, help="folder with dataset files (else $DATAGAMES_DATA_DIR)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="config override, repeatable: --set n_robots=50 --set stream.alpha=0.1")
    run.add_argument("--out", default="runs", help="results folder (default: runs/)")
    run.set_defaults(func=cmd_run)

    ev = sub.add_parser("eval", help="compare policies on the same seeds; writes a results folder with plots")
    ev.add_argument("--config", default="default")
    ev.add_argument("--policies", default="uniform,random,greedy,interactive,oracle",
                    help="comma-separated policy names (default: all analytic baselines)")
    ev.add_argument("--seeds", type=int, default=10, help="number of seeds (default 10)")
    ev.add_argument("--first-seed", type=int, default=0)
    ev.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                    help="local processes (default: min(2, cores))")
    ev.add_argument("--ray-address", default=None,
                    help="spread jobs over a Ray cluster ('auto', 'ray://host:10001', or 'local'); "
                         "falls back to local processes if unreachable")
    ev.add_argument("--data-dir", default=None)
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ev.add_argument("--out", default=None, help="results folder (default: results/<config>)")
    ev.set_defaults(func=cmd_eval)

    tr = sub.add_parser("train", help="train a learned sharing policy (RLlib PPO or SB3 PPO); same command on a "
                                      "laptop CPU and a GPU Ray cluster")
    tr.add_argument("--config", default="default", help="config name in configs/ or a YAML path (any scenario)")
    tr.add_argument("--algo", default="ppo", choices=["ppo", "sb3-ppo"], help="ppo: RLlib (new API stack); "
                    "sb3-ppo: Stable-Baselines3 on the (envs x robots) VecEnv")
    tr.add_argument("--iterations", type=int, default=20, help="training iterations (PPO updates)")
    tr.add_argument("--model", default="auto", choices=["auto", "scoring", "mlp"],
                    help="RLlib module: scoring (per-class / per-sample shared network, the GU model) or mlp")
    tr.add_argument("--selection-dist", default="plackett-luce", choices=["plackett-luce", "gaussian"],
                    help="selection mode: Plackett-Luce over the top-k picks (default) or a Gaussian on the scores")
    tr.add_argument("--allocation-dist", default="multinomial", choices=["multinomial", "gaussian"],
                    help="allocation mode: n_cache multinomial draws over classes (default) or a Gaussian on shares")
    tr.add_argument("--per-robot", action="store_true", help="one module per robot instead of parameter sharing")
    tr.add_argument("--critic", default="local", choices=["local", "central"],
                    help="value function: local (the robot's observation) or central (MAPPO style: + the global "
                         "state; the actor still reads only its own observation)")
    tr.add_argument("--imitate", default=None, choices=["oracle", "interactive", "interactive-sum", "greedy"],
                    help="warm start: behaviour-clone this analytic policy's upload counts before PPO")
    tr.add_argument("--imitation-episodes", type=int, default=100, help="expert episodes for --imitate")
    tr.add_argument("--imitation-epochs", type=int, default=30, help="behaviour-cloning epochs for --imitate")
    tr.add_argument("--message-sweeps", type=int, default=0, choices=[0, 1, 2, 3],
                    help="learned communication: K sweeps of intended-contribution messages before acting")
    tr.add_argument("--num-env-runners", type=int, default=0, help="sampling actors (0: sample in the driver)")
    tr.add_argument("--num-envs-per-env-runner", type=int, default=0,
                    help="environments per runner (sb3-ppo: environments of the vector core); 0 (default): the "
                         "most, up to 10, that keep the update's batch as with one")
    tr.add_argument("--num-learners", type=int, default=0, help="learner actors (0: learn in the driver)")
    tr.add_argument("--num-gpus-per-learner", type=float, default=0.0, help="GPUs per learner (cluster)")
    tr.add_argument("--ray-address", default=None, help="an existing Ray cluster ('auto', 'ray://host:10001')")
    tr.add_argument("--env-runner-resource", action="append", default=[], metavar="NAME=AMOUNT",
                    help="custom Ray resource each env runner needs (repeatable): places runners on the nodes "
                         "started with it, e.g. ray start --resources '{\"sampler\": 4}'")
    tr.add_argument("--tune", action="store_true", help="Ray Tune sweep over the learning rate")
    tr.add_argument("--lr", type=float, default=3e-4)
    tr.add_argument("--train-batch-size", type=int, default=2000, help="agent steps per iteration")
    tr.add_argument("--minibatch-size", type=int, default=250)
    tr.add_argument("--num-epochs", type=int, default=10)
    tr.add_argument("--entropy-coeff", type=float, default=0.0)
    tr.add_argument("--initial-log-std", type=float, default=-1.0,
                    help="initial log std of the Gaussian exploration (scoring modules, SB3)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    tr.add_argument("--data-dir", default=None, help="folder with dataset files (sets $DATAGAMES_DATA_DIR)")
    tr.add_argument("--out", default="runs/train", help="runs folder (default runs/train)")
    tr.add_argument("--name", default=None, help="run name (default <config>-<algo>-<time>)")
    tr.add_argument("--resume", default=None, help="checkpoint folder to resume from")
    tr.add_argument("--checkpoint-every", type=int, default=10, help="iterations between checkpoints (0: only at end)")
    tr.add_argument("--torch-threads", type=int, default=1,
                    help="torch threads in the driver (default 1: fastest for these small networks; 0 = torch's default)")
    tr.set_defaults(func=cmd_train)

    # The other scenarios own their command lines: `datagames p2p --help`, `datagames dual --help`
    for name, module in SCENARIO_COMMANDS.items():
        sub.add_parser(name, add_help=False, help=f"scenario commands, see `datagames {name} --help` ({module})")
    return parser


SCENARIO_COMMANDS = {"p2p": "datagames_env.p2p_cli", "dual": "datagames_env.dual_cli"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SCENARIO_COMMANDS:
        import importlib

        return importlib.import_module(SCENARIO_COMMANDS[argv[0]]).main(argv[1:])
    args = build_parser().parse_args(argv)
    from datagames_env.config import ConfigError
    from datagames_env.datasets import DatasetError

    try:
        return args.func(args)
    except (ConfigError, DatasetError, ValueError) as exc:
        print(f"datagames: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

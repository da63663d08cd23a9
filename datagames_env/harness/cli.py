"""``datagames``: one command line for every scenario; the config's ``scenario`` key picks the scenario.

    datagames run    --config p2p_default --policy gu --seed 0          # one episode, a table, a results folder
    datagames eval   --config dual_default --policies random/random,entropy --seeds 3
    datagames report results/dual_default                               # rewrite summary, CSV, plots
    datagames train  --config default --iterations 20                   # RLlib PPO (or --algo sb3-ppo,
                                                                        #   benchmarl-mappo|ippo|masac)
    datagames warmup                                                    # compile the numba kernels ahead

``run``, ``eval``, ``report`` and ``train`` take the same ``--config``, ``--set KEY=VALUE``, ``--data-dir`` and
``--no-progress`` for every scenario; defaults (policies, seeds) are the scenario's. ``datagames p2p ...`` and
``datagames dual ...`` are the same commands with ``p2p_default`` / ``dual_default`` as the default config.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from pathlib import Path

from ..scenarios import DEFAULT_SCENARIO, SCENARIOS
from .quiet import quiet_third_party

# entry points of the trainers: agents/ is a layer above this package, loaded only when training
TRAINERS = {"settings": "agents.rllib_train:TrainSettings", "ppo": "agents.rllib_train:train",
            "sb3-ppo": "agents.sb3_train:train_sb3", "benchmarl-mappo": "agents.benchmarl_train:train_mappo",
            "benchmarl-ippo": "agents.benchmarl_train:train_ippo",
            "benchmarl-masac": "agents.benchmarl_train:train_masac"}
# the policy spec that evaluates each trainer's checkpoint, and the extra each trainer needs
CHECKPOINT_SPEC = {"ppo": "rllib", "sb3-ppo": "sb3", "benchmarl-mappo": "benchmarl", "benchmarl-ippo": "benchmarl",
                   "benchmarl-masac": "benchmarl"}
LOG_WIDTH = 200  # console width when the output is not a terminal (logs, CI): rich would cut tables at 80


def scenario_aliases() -> dict[str, str]:
    """``datagames p2p eval ...`` = ``datagames eval`` with the scenario's default config: every scenario but the
    cloud game (whose default config is the CLI's default) is an alias."""
    return {name: info.default_config for name, info in SCENARIOS.items() if name != DEFAULT_SCENARIO}


def make_console(stderr: bool = False):
    """A rich console; in logs and CI (not a terminal) wide enough that tables are not cut. Tools often export
    COLUMNS=80 to child processes (pytest-xdist workers do): it may widen a log, never narrow it."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if not stream.isatty():
        columns = os.environ.get("COLUMNS", "")
        return Console(stderr=stderr, width=max(LOG_WIDTH, int(columns) if columns.isdigit() else 0))
    return Console(stderr=stderr)


def _parse_overrides(pairs: list[str]) -> dict:
    """``--set n_robots=50 --set stream.alpha=0.1`` -> overrides (values parsed as YAML scalars); argparse has
    checked the KEY=VALUE form (``override_pair``)."""
    import yaml

    overrides = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


# -- argparse types: a bad value is argparse's error (exit 2, usage, the flag named), before any work starts ----
SEED_MAX = 2**32 - 1  # numpy's legacy seeding, torch and Ray all take 32-bit seeds


def int_range(low: int, high: int | None = None):
    """An argparse ``type``: an integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {text}")
        return value

    parse.__name__ = "integer"
    return parse


def float_range(low: float | None = None, positive: bool = False, high: float | None = None):
    """An argparse ``type``: a finite float, ``> 0`` (``positive``) or ``>= low``, and ``<= high``."""
    import math

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text}")
        if positive and value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low:g}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def override_pair(text: str) -> str:
    """``--set KEY=VALUE`` (kept as text: the run folder names the exact overrides)."""
    key, sep, _value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. n_robots=50), got '{text}'")
    return text


def resource_amount(text: str) -> tuple[str, float]:
    """``--env-runner-resource NAME[=AMOUNT]`` -> ``(name, amount)`` (custom Ray resources; amount 1 if left out)."""
    name, sep, amount = text.partition("=")
    if not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=AMOUNT, got '{text}'")
    try:
        value = float_range(low=0.0)(amount) if sep else 1.0
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"'{text}': the amount {exc}") from None
    return name.strip(), value


def _setup(args: argparse.Namespace):
    """The config's scenario, its reporter, and the overrides of ``--set`` and ``--data-dir``."""
    from ..scenarios import scenario_of
    from .reports import reporter

    overrides = _parse_overrides(args.set)
    scenario = scenario_of(args.config, **overrides)
    rep = reporter(scenario)
    if args.data_dir:
        overrides[rep.data_dir_key] = str(Path(args.data_dir).resolve())
    return scenario, rep, overrides


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_")


_EXACT = re.compile(r"[A-Za-z0-9._-]+=[A-Za-z0-9._-]+")  # a pair whose slug is itself (no '+': the separator)


def run_folder(config: str, label: str, seed: int, set_pairs: list[str], spec: str | None = None) -> str:
    """``default-greedy-seed0``, and with ``--set`` overrides ``default-greedy-seed0+n_robots=3+rounds=2``: a run
    with overrides never overwrites the plain run's folder. Names are injective: where the readable name loses
    anything (a character the slug replaces, a long list cut short, a config path, a checkpoint's short label for
    its ``spec``), a hash of the exact config, spec and overrides follows as ``+h<8 hex>`` (no pair lacks '=')."""
    stem = Path(str(config)).stem
    name = f"{stem}-{_slug(label)}-seed{seed}"
    # exact: the parts can be read back ('-' splits config from label, '+' starts the overrides)
    exact = (str(config) == stem and "-" not in stem and _slug(label) == label and "+" not in label
             and (spec is None or spec == label))
    if set_pairs:
        exact = exact and all(_EXACT.fullmatch(p) for p in set_pairs)
        suffix = "+".join(_slug(p.replace(" ", "")) for p in set_pairs)
        if len(suffix) > 80:
            suffix, exact = suffix[:60].rpartition("+")[0] or suffix[:60], False  # whole pairs where possible
        name += "+" + suffix
    if not exact:
        digest = hashlib.sha1(repr((str(config), spec or label, list(set_pairs))).encode()).hexdigest()[:8]
        name += f"+h{digest}"
    return name


def cmd_run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..policy import make_policy, parse_policy_spec
    from .episode import build_env, run_episode
    from .evaluate import write_results
    from .warmup import notice_if_compiling

    console = make_console()
    scenario, rep, overrides = _setup(args)
    spec = parse_policy_spec(args.policy or rep.default_policy, scenario)  # fails early on an unknown name
    notice_if_compiling(console)
    with console.status("building environment (dataset, first model version)..."):
        env = build_env(args.config, spec, **overrides)
        policy = make_policy(spec, env)
    ctx = rep.context(env)
    console.print(f"[bold]{scenario}[/] config [cyan]{args.config}[/]: {rep.describe(ctx)}, policy "
                  f"[cyan]{spec.label}[/], seed {args.seed}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=args.no_progress) as progress:
        task = progress.add_task("round 0", total=env.config.rounds)

        def on_round(record: dict) -> None:
            progress.update(task, advance=1, description=f"round {record['round']}  {rep.round_progress(record)}")

        episode = run_episode(env, policy, args.seed, on_round, name=spec.text)
    console.print(rep.run_table(episode, ctx))
    if episode.get("final_test_accuracy") is not None:
        console.print(f"final test accuracy of the cloud model: {episode['final_test_accuracy']:.4f}")
    payload = {"scenario": scenario, "config": env.config.model_dump(), "policies": [spec.text],
               "seeds": [args.seed], "elapsed_s": episode["wall_s"], "episodes": [episode]}
    payload.update(rep.payload_extras(ctx))
    payload["summary"] = rep.summarise(payload, ctx)
    out = write_results(Path(args.out) / run_folder(args.config, spec.label, args.seed, args.set, spec.text),
                        payload, ctx)
    returned = episode.get("return")
    prefix = f"return {returned:.4f}; " if isinstance(returned, float) else ""
    console.print(f"{prefix}wrote {out}/: results.json {' '.join(rep.files)}")
    return 0


def _print_summary(console, path: Path) -> None:
    text = path.read_text()
    if console.is_terminal:
        from rich.markdown import Markdown

        console.print(Markdown(text))
    else:  # logs and CI: the markdown itself, whose tables no width can cut
        console.print(text, markup=False, highlight=False, soft_wrap=True)


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate
    from .warmup import notice_if_compiling

    console = make_console()
    _scenario, rep, overrides = _setup(args)
    policies = [p.strip() for p in (args.policies or rep.default_policies).split(",") if p.strip()]
    seeds = list(range(args.first_seed, args.first_seed + (args.seeds or rep.default_seeds)))
    out = Path(args.out) if args.out else Path("results") / Path(str(args.config)).stem
    notice_if_compiling(console)
    with quiet_third_party():
        payload = evaluate(args.config, policies, seeds, out, workers=args.workers, ray_address=args.ray_address,
                           progress=not args.no_progress, baseline=args.baseline, **overrides)
    _print_summary(console, out / "summary.md")
    console.print(f"results in {out}/: results.json {' '.join(rep.files)} ({payload['elapsed_s']:.0f} s)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .evaluate import report

    report(args.folder, args.baseline, **_report_overrides(args))
    _print_summary(make_console(), Path(args.folder) / "summary.md")
    return 0


def _report_overrides(args: argparse.Namespace) -> dict:
    """``--data-dir`` for a results folder: the data-dir key of the scenario its results.json names."""
    if not args.data_dir:
        return {}
    import json

    from .reports import reporter

    path = Path(args.folder) / "results.json"
    config = json.loads(path.read_text()).get("config", {}) if path.is_file() else {}
    return {reporter(config.get("scenario", DEFAULT_SCENARIO)).data_dir_key: str(Path(args.data_dir).resolve())}


def train_settings(args: argparse.Namespace, TrainSettings, overrides: dict):
    """``TrainSettings`` of the parsed ``datagames train`` flags: with ``--preset`` the preset's values for the flags
    left unset (``TrainSettings.from_preset``), else the defaults; explicit flags win."""
    preset_fields = {k: v for k, v in (("train_batch_size", args.train_batch_size),
                                       ("minibatch_size", args.minibatch_size), ("num_epochs", args.num_epochs),
                                       ("vector_runner", args.vector_runner or None)) if v is not None}
    fields = dict(
        config=args.config, overrides=overrides, iterations=args.iterations, model=args.model,
        selection_dist=args.selection_dist, allocation_dist=args.allocation_dist,
        per_robot=args.per_robot, num_env_runners=args.num_env_runners,
        num_envs_per_env_runner=args.num_envs_per_env_runner, num_learners=args.num_learners,
        num_gpus_per_learner=args.num_gpus_per_learner, ray_address=args.ray_address, tune=args.tune,
        seed=args.seed, lr=args.lr, entropy_coeff=args.entropy_coeff, gamma=args.gamma, initial_log_std=args.initial_log_std,
        out=args.out, run_name=args.name, resume=args.resume, checkpoint_every=args.checkpoint_every,
        torch_threads=args.torch_threads or None, progress=not args.no_progress,
        critic=args.critic, imitate=args.imitate, imitation_episodes=args.imitation_episodes,
        imitation_epochs=args.imitation_epochs, message_sweeps=args.message_sweeps,
        imitation_dagger_rounds=args.imitation_dagger_rounds,
        env_runner_resources=dict(args.env_runner_resource), lr_final=args.lr_final,
        fraction_concentration=args.fraction_concentration, initial_fraction=args.initial_fraction,
        fraction_concentration_final=args.fraction_concentration_final,
        fraction_concentration_schedule=args.fraction_concentration_schedule,
        fraction_concentration_pinned=args.fraction_concentration_pinned,
        lambda_=args.gae_lambda)
    fields.update(preset_fields)
    return TrainSettings.from_preset(args.preset, **fields) if args.preset else TrainSettings(**fields)


def cmd_train(args: argparse.Namespace) -> int:
    from ..policy import load_entry_point

    if args.preset and args.algo != "ppo":
        raise SystemExit(f"datagames train --preset {args.preset} is for --algo ppo (RLlib), not --algo {args.algo}")
    console = make_console()
    try:  # the trainers live in agents/ (a layer above): loaded by entry point, never imported here
        TrainSettings = load_entry_point(TRAINERS["settings"])
        train = load_entry_point(TRAINERS[args.algo])
    except ValueError as exc:
        extra = "benchmarl" if args.algo.startswith("benchmarl") else "rl"
        raise SystemExit(f"datagames train --algo {args.algo} needs the {extra} extra (pip install -e '.[{extra}]'): "
                         f"{exc}") from None
    _scenario, _rep, overrides = _setup(args)
    if args.data_dir:  # the Ray workers read $DATAGAMES_DATA_DIR too
        from ..data.datasets import DATA_DIR_ENV_VAR

        os.environ[DATA_DIR_ENV_VAR] = str(Path(args.data_dir).resolve())
    from .warmup import notice_if_compiling

    notice_if_compiling(console)
    settings = train_settings(args, TrainSettings, overrides)
    with quiet_third_party():
        result = train(settings, log=console.print)
    console.print(f"{training_counts(result)}; {result['elapsed_s']:.0f} s; checkpoint {result['checkpoint']}")
    console.print(f"evaluate: datagames eval --config {args.config} --policies "
                  f"{CHECKPOINT_SPEC[args.algo]}:{result['checkpoint']},...")
    return 0


def training_counts(result: dict) -> str:
    """``this run: 1 iteration, 180 agent steps; in all: 3 iterations, 540 agent steps``: a resumed run's counts
    and those since its first run, each named (the trainers' ``this_run`` / ``total``)."""
    def counts(c: dict) -> str:
        return f"{c['iterations']} iteration{'' if c['iterations'] == 1 else 's'}, {c['agent_steps']:,} agent steps"

    if "total" not in result:  # a Tune sweep: its trials' counts are in the Tune folder
        return f"trained {len(result['history'])} iterations"
    return f"this run: {counts(result['this_run'])}; in all: {counts(result['total'])}"


def cmd_warmup(args: argparse.Namespace) -> int:
    from .warmup import compile_kernels, warm_perception

    console = make_console()
    console.print("compiling the numba kernels (once per machine; cached afterwards)...")
    console.print(f"kernels ready ({compile_kernels(log=console.print):.0f} s)")
    console.print("pretraining the fast perception tier's extractors (once per machine and config; cached on disk)...")
    console.print(f"fast perception ready ({warm_perception(log=console.print):.0f} s)")
    return 0


def _common(p: argparse.ArgumentParser, default_config: str | None) -> None:
    """The flags every scenario command shares."""
    default_config = default_config or SCENARIOS[DEFAULT_SCENARIO].default_config
    p.add_argument("--config", default=default_config,
                   help=f"config name in configs/ or a YAML path, any scenario (default: {default_config})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", type=override_pair,
                   help="config override, repeatable: --set n_robots=50 --set stream.alpha=0.1")
    p.add_argument("--data-dir", default=None, help="folder with dataset files (else $DATAGAMES_DATA_DIR)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs)")


def build_parser(default_config: str | None = None, prog: str = "datagames") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Fleet data collection environments: run, evaluate, "
                                     "report and train on any scenario (datagames, p2p, dual).")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="play one episode of one policy, print a table, write a results folder")
    _common(run, default_config)
    run.add_argument("--policy", default=None, help="policy spec (default: the scenario's; see datagames_env.policy)")
    run.add_argument("--seed", type=int_range(0, SEED_MAX), default=0)
    run.add_argument("--out", default="runs", help="parent folder (default runs/; the run's folder names config, "
                                                   "policy, seed and --set overrides)")
    run.set_defaults(func=cmd_run)

    ev = sub.add_parser("eval", help="compare policies on the same seeds; writes a results folder with plots")
    _common(ev, default_config)
    ev.add_argument("--policies", default=None, help="comma-separated specs (default: the scenario's baselines); "
                    "NAME, rllib:PATH, rllib-sample:PATH, sb3:PATH, sb3-sample:PATH, benchmarl:PATH, "
                    "benchmarl-sample:PATH, torchrl:PATH, module:factory, dual UPLOAD/LABELER")
    ev.add_argument("--seeds", type=int_range(1, SEED_MAX), default=None,
                    help="number of seeds (default: 10 datagames, 3 p2p and dual)")
    ev.add_argument("--first-seed", type=int_range(0, SEED_MAX), default=0)
    ev.add_argument("--workers", type=int_range(1), default=min(2, os.cpu_count() or 1),
                    help="local processes (default: min(2, cores)); p2p plays in one process (models train once)")
    ev.add_argument("--ray-address", default=None,
                    help="spread jobs over a Ray cluster ('auto', 'ray://host:10001', or 'local'); "
                         "falls back to local processes if unreachable")
    ev.add_argument("--baseline", default=None, help="spec the summary compares against (dual; default the first)")
    ev.add_argument("--out", default=None, help="results folder (default: results/<config>)")
    ev.set_defaults(func=cmd_eval)

    rep = sub.add_parser("report", help="rewrite summary.md, CSV and plots of a results folder from results.json")
    rep.add_argument("folder", help="folder holding results.json")
    rep.add_argument("--baseline", default=None)
    rep.add_argument("--data-dir", default=None)
    rep.set_defaults(func=cmd_report)

    tr = sub.add_parser("train", help="train a learned policy (RLlib PPO, SB3 PPO, BenchMARL MAPPO/IPPO/MASAC); "
                                      "RLlib: any scenario, same command on a laptop CPU and a GPU Ray cluster")
    _common(tr, default_config)
    tr.add_argument("--algo", default="ppo", choices=list(CHECKPOINT_SPEC), help="ppo: RLlib (new API stack); "
                    "sb3-ppo: Stable-Baselines3 on the (envs x robots) VecEnv; benchmarl-mappo|ippo|masac: BenchMARL "
                    "on the batched TorchRL env (the benchmarl extra; agents/benchmarl_train.py)")
    tr.add_argument("--iterations", type=int_range(1), default=20, help="training iterations (PPO updates)")
    tr.add_argument("--model", default="auto", choices=["auto", "scoring", "mlp", "gap-fraction", "sweep-fraction",
                                                         "gap-share", "sample-scoring"],
                    help="RLlib module: scoring (per-class / per-sample shared network, the GU model), mlp, or "
                         "gap-fraction (one fraction per robot, Greedy towards it; PPO with --vector-runner, or benchmarl-*); "
                         "sweep-fraction (the same f, then --message-sweeps K Gauss-Seidel solver sweeps towards f of "
                         "the gap the others' announcements leave); gap-share (the same f as greedy-share's floor "
                         "per robot: a fraction per class from its share of last round's uploads; --vector-runner); "
                         "sample-scoring (benchmarl-* on p2p / dual / selection: one MLP shared across the samples, "
                         "agents.benchmarl_models)")
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
    tr.add_argument("--imitation-episodes", type=int_range(1), default=100, help="expert episodes for --imitate")
    tr.add_argument("--imitation-epochs", type=int_range(1), default=30, help="behaviour-cloning epochs for --imitate")
    tr.add_argument("--imitation-dagger-rounds", type=int_range(0), default=1,
                    help="with --message-sweeps: DAgger rounds on the clone's own announcements")
    tr.add_argument("--message-sweeps", type=int_range(0, 3), default=0,
                    help="learned communication: K sweeps of intended-contribution messages before acting")
    tr.add_argument("--num-env-runners", type=int_range(0), default=0, help="sampling actors (0: sample in the driver)")
    tr.add_argument("--num-envs-per-env-runner", type=int_range(0), default=0,
                    help="environments per runner (sb3-ppo: environments of the vector core); 0 (default): the "
                         "most, up to 10, that keep the update's batch as with one")
    tr.add_argument("--num-learners", type=int_range(0), default=0, help="learner actors (0: learn in the driver)")
    tr.add_argument("--num-gpus-per-learner", type=float_range(low=0.0), default=0.0, help="GPUs per learner (cluster)")
    tr.add_argument("--ray-address", default=None, help="an existing Ray cluster ('auto', 'ray://host:10001')")
    tr.add_argument("--env-runner-resource", action="append", default=[], metavar="NAME=AMOUNT", type=resource_amount,
                    help="custom Ray resource each env runner needs (repeatable): places runners on the nodes "
                         "started with it, e.g. ray start --resources '{\"sampler\": 4}'")
    tr.add_argument("--tune", action="store_true", help="Ray Tune sweep over the learning rate")
    tr.add_argument("--vector-runner", action="store_true",
                    help="sample through vector_env in bulk and hand PPO arrays (agents/rllib_vector_runner.py; "
                         "any scenario; for throughput: --train-batch-size 32000 --minibatch-size 4000 --num-epochs 2)")
    tr.add_argument("--lr", type=float_range(positive=True), default=3e-4)
    tr.add_argument("--lr-final", type=float_range(positive=True), default=None,
                    help="decay the learning rate linearly from --lr to this over --iterations (default: constant)")
    tr.add_argument("--fraction-concentration", type=float_range(low=2.0, high=1000.0), default=8.0,
                    help="--model gap-fraction: the starting Beta's concentration (default 8: about 0.17 std in f "
                         "at f = 0.5; 40: about 0.08)")
    tr.add_argument("--initial-fraction", type=float_range(low=0.01, high=0.99), default=0.5,
                    help="--model gap-fraction: the starting Beta's mean fraction of the gap (default 0.5)")
    tr.add_argument("--fraction-concentration-final", type=float_range(low=2.0, high=1000.0), default=None,
                    help="--model gap-fraction: anneal the exploration noise; a floor on the Beta's concentration "
                         "rises from 2 to this over --iterations (default: no floor; 200: about 0.03 std in f)")
    tr.add_argument("--fraction-concentration-schedule", choices=["linear", "geometric"], default="linear",
                    help="how the floor of --fraction-concentration-final rises (default linear)")
    tr.add_argument("--fraction-concentration-pinned", action="store_true",
                    help="the floor is also a ceiling: the concentration follows the schedule exactly, from "
                         "--fraction-concentration to --fraction-concentration-final (the learned one is not used)")
    tr.add_argument("--preset", default=None, choices=["throughput"],
                    help="RLlib PPO settings by name; explicit flags win. throughput: --vector-runner "
                         "--train-batch-size 32000 --minibatch-size 4000 --num-epochs 2 (about 12x the agent-steps/s "
                         "of the defaults on `default`; docs/rllib_speed.md)")
    tr.add_argument("--train-batch-size", type=int_range(1), default=None,
                    help="agent steps per iteration (default 2000, or the preset's)")
    tr.add_argument("--minibatch-size", type=int_range(1), default=None, help="default 250, or the preset's")
    tr.add_argument("--num-epochs", type=int_range(1), default=None, help="default 10, or the preset's")
    tr.add_argument("--entropy-coeff", type=float_range(low=0.0), default=0.0)
    tr.add_argument("--gamma", type=float_range(low=0.0, high=1.0), default=0.99,
                    help="discount (0: each round's reward credits that round's action only, e.g. p2p's feedback)")
    tr.add_argument("--lambda", dest="gae_lambda", type=float_range(low=0.0, high=1.0), default=0.95,
                    help="GAE lambda (RLlib PPO; BenchMARL with --model gap-fraction)")
    tr.add_argument("--initial-log-std", type=float_range(), default=-1.0,
                    help="initial log std of the Gaussian exploration (scoring modules, SB3)")
    tr.add_argument("--seed", type=int_range(0, SEED_MAX), default=0)
    tr.add_argument("--out", default="runs/train", help="runs folder (default runs/train)")
    tr.add_argument("--name", default=None, help="run name (default <config>-<algo>-<time>)")
    tr.add_argument("--resume", default=None, help="checkpoint folder to resume from")
    tr.add_argument("--checkpoint-every", type=int_range(0), default=10,
                    help="iterations between checkpoints (0: only at end)")
    tr.add_argument("--torch-threads", type=int_range(0), default=1,
                    help="torch threads in the driver (default 1: fastest for these small networks; 0 = torch's default)")
    tr.set_defaults(func=cmd_train)

    warm = sub.add_parser("warmup", help="compile the numba kernels and pretrain the fast perception tier now (make "
                                         "install runs it; else the first run spends 1-2 min on it)")
    warm.set_defaults(func=cmd_warmup)
    if default_config is None:  # `datagames p2p ...` takes the commands, not the aliases again
        for alias, config in scenario_aliases().items():
            sub.add_parser(alias, add_help=False, help=f"the same commands with --config {config} as the default")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    default_config, prog = None, "datagames"
    aliases = scenario_aliases()
    if argv and argv[0] in aliases:
        default_config, prog = aliases[argv[0]], f"datagames {argv[0]}"
        argv = argv[1:]
    parser = build_parser(default_config, prog)
    args = parser.parse_args(argv)
    if args.command == "eval" and args.seeds and args.first_seed + args.seeds - 1 > SEED_MAX:
        parser.error(f"argument --first-seed/--seeds: the last seed {args.first_seed + args.seeds - 1} is above "
                     f"{SEED_MAX}")
    from ..config import ConfigError
    from ..data.datasets import DatasetError

    try:
        return args.func(args)
    except (ConfigError, DatasetError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`datagames train --preset` (explicit flags win) and the modules' tanh computed through sigmoid (agents/modules.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")
import torch  # noqa: E402
from torch import nn  # noqa: E402

from agents.modules import TanhMLP, _mlp  # noqa: E402
from agents.rllib_train import TRAIN_PRESETS, TrainSettings  # noqa: E402
from datagames_env.harness.cli import build_parser, train_settings  # noqa: E402


def _settings(*flags: str) -> TrainSettings:
    args = build_parser().parse_args(["train", *flags])
    return train_settings(args, TrainSettings, {})


def test_throughput_preset_sets_the_vector_runner_and_large_updates():
    settings = _settings("--preset", "throughput")
    assert settings.vector_runner
    assert (settings.train_batch_size, settings.minibatch_size, settings.num_epochs) == (32000, 4000, 2)
    assert TRAIN_PRESETS["throughput"]["train_batch_size"] == settings.train_batch_size


def test_explicit_flags_win_over_the_preset():
    settings = _settings("--preset", "throughput", "--num-epochs", "1", "--minibatch-size", "8000", "--seed", "2")
    assert (settings.train_batch_size, settings.minibatch_size, settings.num_epochs) == (32000, 8000, 1)
    assert settings.vector_runner and settings.seed == 2


def test_without_a_preset_the_defaults_and_the_flags_are_as_before():
    defaults = TrainSettings()
    settings = _settings()
    assert (settings.train_batch_size, settings.minibatch_size, settings.num_epochs, settings.vector_runner) == (
        defaults.train_batch_size, defaults.minibatch_size, defaults.num_epochs, defaults.vector_runner)
    settings = _settings("--vector-runner", "--train-batch-size", "4000")
    assert settings.vector_runner and settings.train_batch_size == 4000 and settings.num_epochs == defaults.num_epochs


def test_bad_presets_are_refused_with_their_name():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--preset", "fastest"])
    with pytest.raises(ValueError, match="fastest"):
        TrainSettings.from_preset("fastest")
    from datagames_env.harness.cli import main

    with pytest.raises(SystemExit, match="--algo ppo"):
        main(["train", "--preset", "throughput", "--algo", "sb3-ppo"])


def test_help_names_the_preset():
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "--preset" in help_text and "throughput" in help_text


@pytest.mark.parametrize("sizes", [[17, 64, 64, 1], [5, 8], [9, 16, 3]])
def test_tanh_mlp_is_the_tanh_network(sizes):
    torch.manual_seed(0)
    mlp = _mlp(sizes, out_gain=1.0)
    assert isinstance(mlp, TanhMLP)
    for layer in mlp:  # non-trivial biases, so the folded bias terms are exercised
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.bias, std=0.5)
    x = torch.randn(256, sizes[0]) * 3
    reference = nn.Sequential(*mlp)  # the same layers through torch.tanh
    assert [k for k in mlp.state_dict()] == [k for k in reference.state_dict()]
    out = mlp(x)
    expected = reference(x)
    # float32 round-off of two formulas of the same function (measured max about 1e-6 here)
    assert torch.allclose(out, expected, atol=1e-5, rtol=1e-5)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in mlp.parameters()]
    mlp.zero_grad()
    expected.square().sum().backward()
    for got, want in zip(grads, [p.grad for p in mlp.parameters()]):
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)

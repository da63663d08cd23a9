"""TorchRL / BenchMARL policies behind the one policy protocol: ``benchmarl:PATH`` and ``torchrl:PATH``.

``make_policy("benchmarl:runs/train/<run>/checkpoint", env)`` (``datagames_env.policy`` registers these by entry
point) loads the actor that ``datagames train --algo benchmarl-*`` saved (``policy.pt``: a pickled TensorDict
module reading ``("robots", "observation")`` of shape ``(..., N, obs_dim)`` and writing ``("robots", "action")``);
``torchrl:PATH`` loads any such module file (or a folder holding ``policy.pt``) saved with ``torch.save(module)``.
Actions are deterministic (``ExplorationType.DETERMINISTIC``: BenchMARL's TanhNormal gives tanh of the Gaussian
mean, scaled to [0, 1]); ``benchmarl-sample:PATH`` / ``torchrl-sample:PATH`` sample the policy, seeded by the
episode seed. The actor reads only the robots' own observations: not privileged (MAPPO's and MASAC's critics read
the global state in training only). A checkpoint trained on the gap-fraction action (meta ``"action":
"gap-fraction"``) emits one fraction per robot; the policy maps it to Greedy's shares towards that fraction of
the gap from each robot's own infos (``baselines.fraction``), as the training env did.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .policies import _CheckpointPolicy

POLICY_FILE = "policy.pt"
META_FILE = "datagames_meta.json"
GROUP = "robots"


def policy_file(path: str | Path) -> Path:
    path = Path(path)
    file = path / POLICY_FILE if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"torchrl checkpoint: {file} not found (expected {POLICY_FILE} of `datagames train --algo "
                         "benchmarl-*`, or a file saved with torch.save(module))")
    return file


class TorchRLCheckpointPolicy(_CheckpointPolicy):
    """A TorchRL policy module from a checkpoint (``policy.pt`` or its folder), acting for all robots at once."""

    kind = "torchrl"

    def __init__(self, env, path: str | Path, explore: bool = False) -> None:
        import torch

        super().__init__(explore)
        self.torch = torch
        self.path = Path(path)
        file = policy_file(self.path)
        # a pickled module: only load checkpoints you trust (weights_only=False runs the pickle)
        self.module = torch.load(file, map_location="cpu", weights_only=False)
        self.module.eval()
        self.name = f"{self.kind}{'-sample' if explore else ''}:{self.path}"
        meta_file = file.parent / META_FILE
        self.meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        expected = self.meta.get("observation_shape")
        shape = [len(env.possible_agents), int(env.observation_space(env.possible_agents[0]).shape[0])]
        if expected is not None and list(expected) != shape:
            raise ValueError(f"checkpoint {self.path}: trained on {expected[0]} robots x {expected[1]} observation "
                             f"features, this environment has {shape[0]} x {shape[1]}; evaluate it on the config it "
                             "was trained on")
        self.action_space = env.action_space(env.possible_agents[0])
        self.action = self.meta.get("action", "env")
        if self.action == "gap-fraction":
            self.n_cache, self.loss = env.config.n_cache, env.config.loss
        self.last_stats: dict = {}

    def act(self, observations: dict, infos: dict) -> dict:
        from tensordict import TensorDict
        from torchrl.envs.utils import ExplorationType, set_exploration_type

        torch = self.torch
        agents = list(observations)
        obs = torch.as_tensor(np.stack([observations[a] for a in agents]), dtype=torch.float32).unsqueeze(0)
        td = TensorDict({GROUP: TensorDict({"observation": obs}, batch_size=obs.shape[:2])}, batch_size=[1])
        mode = ExplorationType.RANDOM if self.explore else ExplorationType.DETERMINISTIC
        with torch.no_grad(), set_exploration_type(mode), self._sampling():
            action = self.module(td).get((GROUP, "action"))[0].numpy()
        if self.action == "gap-fraction":
            return self._fraction_shares(agents, action, infos)
        low, high = self.action_space.low, self.action_space.high
        return dict(zip(agents, np.clip(action, low, high).astype(np.float32)))

    def _fraction_shares(self, agents: list, fractions: np.ndarray, infos: dict) -> dict:
        """(N, 1) fractions -> each robot's Greedy towards its fraction of the gap, from its own infos."""
        from baselines.fraction import greedy_fraction_shares

        first = infos[agents[0]]
        shares = greedy_fraction_shares(np.stack([infos[a]["feasible_matrix"] for a in agents])[None],
                                        np.asarray(first["cloud_counts"])[None], np.asarray(first["target_counts"]),
                                        np.clip(fractions[:, 0], 0.0, 1.0)[None], self.n_cache,
                                        np.stack([infos[a]["available"] for a in agents])[None], self.loss)[0]
        return {a: shares[k].astype(np.float32) for k, a in enumerate(agents)}


class BenchMARLCheckpointPolicy(TorchRLCheckpointPolicy):
    """The actor of a ``datagames train --algo benchmarl-*`` run (its ``checkpoint`` folder)."""

    kind = "benchmarl"

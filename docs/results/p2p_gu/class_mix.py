"""Class mix of the rare samples each policy shares on p2p_default (robot_1, robot_2): normalised entropy and largest
class share of the class histogram. PYTHONPATH=. python docs/results/p2p_gu/class_mix.py 100 104 oracle gu rllib:PATH"""
import sys, importlib.util, numpy as np
spec = importlib.util.spec_from_file_location("sweep_p2p", "benchmarks/sweep_p2p.py")
sw = importlib.util.module_from_spec(spec); spec.loader.exec_module(sw)
from baselines.p2p_policies import BatchedGUPolicy
from datagames_env.scenarios import make_batched
seeds = list(range(int(sys.argv[1]), int(sys.argv[2]) + 1))
for policy in sys.argv[3:]:
    batch = make_batched("p2p_default", len(seeds))
    views = [sw.EnvView(batch, b) for b in range(len(seeds))]
    agents = views[0].possible_agents
    if policy == "gu":
        bp = BatchedGUPolicy(batch); bp.reset(seeds[0]); pols = []
    else:
        bp = None; pols = [sw.make_p2p_policy(policy, v) for v in views]
    for p, s in zip(pols, seeds): p.reset(s)
    obs, infos = batch.reset(np.asarray(seeds))
    hist = np.zeros((len(seeds), 2, 10))
    for t in range(batch.config.rounds):
        pv = batch.privileged_view()
        if bp is not None:
            actions = bp.act(obs, infos)
        else:
            actions = np.zeros((len(seeds), 3, batch.action_width), np.float32)
            for b, p in enumerate(pols):
                a = p.act({ag: obs[b, i] for i, ag in enumerate(agents)}, {ag: sw._per_robot(infos, batch.robot_info_keys, b, i) for i, ag in enumerate(agents)})
                actions[b] = np.stack([a[ag] for ag in agents])
        st = batch.step(actions); obs, infos = st.observations, st.infos
        slots = infos["cached_slots"]
        dom = np.take_along_axis(pv["observed_domains"], slots, 2); lab = np.take_along_axis(pv["observed_labels"], slots, 2)
        for b in range(len(seeds)):
            for i in (1, 2):
                for d, c in zip(dom[b, i], lab[b, i]):
                    if d != 0: hist[b, i - 1, c] += 1
    p = hist / np.maximum(hist.sum(-1, keepdims=True), 1)
    ent = -(p * np.log(np.where(p > 0, p, 1))).sum(-1) / np.log(10)
    print(f"{policy[:40]:40s} rare shared/robot {hist.sum(-1).mean():5.1f}  class-entropy {ent.mean():.3f}  max class share {p.max(-1).mean():.3f}")
    print("   mean class hist", np.round(p.mean((0, 1)), 2))

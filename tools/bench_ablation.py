"""`anchorvla bench ablation`: anchors vs plain diffusion vs L1 regression on a multimodal task, in one run.

The task (tools/obstacle_task.py): reach a goal past an obstacle that demonstrations pass on either side, 50/50.
The same network (our DiT head; for speed it cross-attends to tokens made from the low-dimensional state instead
of the full VLM backbone) is trained as (a) L1 regression, (b) plain diffusion from noise, (c) anchored truncated
diffusion with scoring, and (c) gets (d) the residual module in a second stage. Each is scored on chunks predicted
at the start of held-out episodes, where both routes are open: the fraction of chunks that keep clear of the
obstacle, the error to the nearest demonstration, and the median latency per chunk (batch 1). A last row times
the paper-size configuration (random weights, full VLM backbone) per chunk on this CPU.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

HORIZON = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=1000, help="training steps per variant (default 1000)")
    parser.add_argument("--residual-steps", type=int, default=1500, help="stage-2 steps for (d)")
    parser.add_argument(
        "--residual-plans", type=int, default=2048, help="samples the frozen head plans for stage 2"
    )
    parser.add_argument("--episodes", type=int, default=300, help="demonstrations to train on")
    parser.add_argument("--test-episodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-repeats", type=int, default=30, help="timed chunks per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--no-paper-size", action="store_true", help="skip the paper-size latency row")


def _samples(episodes, horizon: int):
    from tools.obstacle_task import chunk_at

    proprio, actions, future = [], [], []
    for ep in episodes:
        for k in range(len(ep.actions)):
            proprio.append(ep.states[k])
            actions.append(chunk_at(ep.actions, k, horizon))
            idx = np.minimum(np.arange(k, k + horizon), len(ep.states) - 1)
            fut = ep.states[idx].copy()
            past_end = np.arange(k, k + horizon) >= len(ep.states)
            if past_end.any():  # the robot stopped at the goal after the episode's last action
                fut[past_end, :2] = ep.states[-1, :2] + ep.actions[-1] * 0.1
            future.append(fut)
    return np.asarray(proprio), np.asarray(actions), np.asarray(future)


class _Norm:
    def __init__(self, proprio: np.ndarray, actions: np.ndarray):
        self.p_mean, self.p_std = proprio.mean(0), proprio.std(0) + 1e-6
        flat = actions.reshape(-1, actions.shape[-1])
        self.a_low, self.a_high = flat.min(0), flat.max(0)

    def proprio(self, p):
        return (p - self.p_mean) / self.p_std

    def actions(self, a):
        return 2 * (a - self.a_low) / (self.a_high - self.a_low) - 1

    def unactions(self, a):
        return (a + 1) / 2 * (self.a_high - self.a_low) + self.a_low


def _architecture(mode: str):
    from policy_runtime.model.config import ArchitectureConfig, HeadConfig, ResidualConfig

    head = HeadConfig(
        mode=mode, horizon=HORIZON, action_dim=2, proprio_dim=4, cond_dim=32, dim=32, actions_per_token=4, depth=2, heads=4,
        num_anchors=20, schedule_steps=100, truncation_ratio=0.1, inference_steps=10,
    )  # fmt: skip
    return ArchitectureConfig(backbone=None, head=head, residual=ResidualConfig(hidden=64))


def _train(policy, loss_fn, params, data, steps: int, seed: int, lr: float = 1e-3, batch: int = 32) -> float:
    import torch

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    n = data["proprio"].shape[0]
    policy.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        loss, _ = loss_fn(policy, {k: v[idx] for k, v in data.items()}, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    policy.eval()
    return float(loss.detach())


def _evaluate(
    policy, norm: _Norm, states: np.ndarray, num_steps: int | None, residual: bool, seed: int
) -> dict:
    import torch

    from policy_runtime.model.training import residual_corrections
    from tools.obstacle_task import DT_S, clear_of_obstacle, error_to_nearest_demo

    gen = torch.Generator().manual_seed(seed)
    proprio = torch.tensor(norm.proprio(states), dtype=torch.float32)
    noise = torch.randn(policy.head.noise_shape(len(states)), generator=gen)
    with torch.no_grad():
        chunk, _, _, _, context = policy(proprio, noise, num_steps=num_steps)
        planned = chunk.numpy().astype(np.float64)
        if residual:
            executed = np.zeros_like(planned)
            pos = states[:, :2].copy()
            for j in range(planned.shape[1]):
                now = np.concatenate([pos, states[:, 2:]], axis=1)
                fut = torch.tensor(norm.proprio(now), dtype=torch.float32)[:, None].expand(
                    -1, planned.shape[1], -1
                )
                corr = residual_corrections(
                    policy, fut.contiguous(), context, torch.tensor(planned, dtype=torch.float32)
                )
                executed[:, j] = planned[:, j] + corr[:, j].numpy()
                pos = pos + norm.unactions(executed[:, j]) * DT_S
            planned = executed
    actions = norm.unactions(planned)
    clear = clear_of_obstacle(states[:, :2], actions)
    error = error_to_nearest_demo(states, actions, HORIZON)
    return {"clear": float(clear.mean()), "error_m": float(np.median(error))}


def _latencies(variants: list[tuple], policies: dict, proprio_one, repeats: int, seed: int) -> list[float]:
    """Median ms per chunk at batch 1 for each variant, timed round-robin so load on the machine hits all alike.
    With the residual, the H per-step residual calls of the chunk count too."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    times: list[list[float]] = [[] for _ in variants]
    with torch.inference_mode():
        for _ in range(repeats):
            for i, (_, _, mode, steps, residual) in enumerate(variants):
                policy = policies[mode]
                noise = torch.randn(policy.head.noise_shape(1), generator=gen)
                t0 = time.perf_counter()
                chunk, _, _, _, context = policy(proprio_one, noise, num_steps=steps)
                if residual:
                    for j in range(HORIZON):
                        policy.residual(proprio_one, context, chunk[:, j], torch.tensor([j]))
                times[i].append(time.perf_counter() - t0)
    return [1e3 * float(np.median(t)) for t in times]


def paper_size_latency(repeats: int = 2) -> dict:
    """Random-weight paper-size policy (Qwen2.5-0.5B dims, SigLIP-base-like, 2x224 px, 64 queries, M=20, S_tr=10)."""
    import torch

    from policy_runtime.model.policy import AnchorVLAPolicy
    from policy_runtime.model.presets import paper_architecture

    torch.manual_seed(0)
    arch = paper_architecture()
    policy = AnchorVLAPolicy(arch).eval()
    params = sum(p.numel() for p in policy.parameters())
    residual_params = sum(p.numel() for p in policy.residual.parameters())
    bb = arch.backbone
    images = torch.randn(1, bb.num_images, 3, arch.image_size, arch.image_size)
    ids = torch.randint(0, 151936, (1, bb.max_instruction_tokens))
    mask = torch.ones_like(ids)
    proprio = torch.randn(1, arch.head.proprio_dim)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first call warms up
            t0 = time.perf_counter()
            policy(proprio, torch.randn(policy.head.noise_shape(1)), images, ids, mask)
            times.append(time.perf_counter() - t0)
    return {
        "latency_ms": 1e3 * float(np.median(times[1:])),
        "params_m": params / 1e6,
        "residual_params": residual_params,
    }


def main(args: argparse.Namespace):
    import torch

    from policy_runtime.model.policy import AnchorVLAPolicy
    from policy_runtime.model.training import (
        planned_chunks,
        stage1_loss,
        stage2_loss,
        train_only,
    )
    from tools.anchors import fit_anchors
    from tools.obstacle_task import make_episodes

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    proprio, actions, future = _samples(make_episodes(args.episodes, args.seed), HORIZON)
    norm = _Norm(proprio, actions)
    data = {
        "proprio": torch.tensor(norm.proprio(proprio), dtype=torch.float32),
        "actions": torch.tensor(norm.actions(actions), dtype=torch.float32),
        "future_proprio": torch.tensor(norm.proprio(future), dtype=torch.float32),
    }
    anchors, sizes, coverage = fit_anchors(data["actions"].numpy(), 20, args.seed)
    test_states = np.stack([ep.states[0] for ep in make_episodes(args.test_episodes, args.seed + 10_000)])

    policies = {}
    for mode in ("regression", "diffusion", "anchored"):
        torch.manual_seed(args.seed)
        policy = AnchorVLAPolicy(_architecture(mode))
        policy.head.anchors.copy_(torch.from_numpy(anchors))
        t0 = time.perf_counter()
        _train(policy, stage1_loss, policy.main_parameters(), data, args.steps, args.seed)
        print(f"trained {mode} in {time.perf_counter() - t0:.0f} s", flush=True)
        policies[mode] = policy
    anchored = policies["anchored"]
    t0 = time.perf_counter()
    # Stage 2: the head is frozen, so plan a subset of the samples once and train the residual on those plans.
    subset = torch.randperm(len(data["proprio"]), generator=torch.Generator().manual_seed(args.seed))[
        : args.residual_plans
    ]
    plan_data = {k: v[subset] for k, v in data.items()}
    gen = torch.Generator().manual_seed(args.seed + 1)
    plans = [
        planned_chunks(anchored, {k: v[i : i + 256] for k, v in plan_data.items()}, gen)
        for i in range(0, len(subset), 256)
    ]
    for key, part in zip(("planned", "same_mode", "context"), zip(*plans, strict=True), strict=True):
        plan_data[key] = torch.cat(part)
    _train(
        anchored,
        stage2_loss,
        train_only(anchored, "residual"),
        plan_data,
        args.residual_steps,
        args.seed + 1,
        batch=128,
    )
    print(f"trained the residual in {time.perf_counter() - t0:.0f} s", flush=True)

    variants = [
        ("a", "L1 regression", "regression", None, False),
        ("b", "plain diffusion, 10 steps", "diffusion", 10, False),
        ("b", "plain diffusion, 50 steps", "diffusion", 50, False),
        ("c", "anchored, 10 steps", "anchored", 10, False),
        ("c", "anchored, 5 steps", "anchored", 5, False),
        ("d", "anchored, 10 steps + residual", "anchored", 10, True),
    ]
    rows = {}
    for key, label, mode, steps, residual in variants:
        rows[label] = {
            "variant": key,
            **_evaluate(policies[mode], norm, test_states, steps, residual, args.seed),
        }
    one = torch.tensor(norm.proprio(test_states[:1]), dtype=torch.float32)
    latencies = _latencies(variants, policies, one, args.latency_repeats, args.seed)
    for (_, label, *_), ms in zip(variants, latencies, strict=True):
        rows[label]["latency_ms"] = ms

    print()
    print(f"Ablation on the two-route obstacle task: {args.episodes} demos, {args.test_episodes} held-out starts, "
          f"{args.steps} steps per variant, H={HORIZON}, M=20 anchors (coverage L1 {coverage:.3f}).")  # fmt: skip
    print("Compact head on low-dim state features (the same DiT head, not the full VLM backbone).")
    print(f"{'variant':<36} {'clear of obstacle':>17} {'err to demo (m)':>15} {'ms/chunk':>9}")
    for label, r in rows.items():
        print(
            f"({r['variant']}) {label:<32} {r['clear']:>17.1%} {r['error_m']:>15.3f} {r['latency_ms']:>9.2f}"
        )
    figures = {"rows": rows, "anchor_cluster_sizes": sizes, "anchor_coverage_l1": coverage}
    if not args.no_paper_size:
        paper = paper_size_latency()
        figures["paper_size"] = paper
        print(f"(paper size, random weights, full VLM, {paper['params_m']:.0f}M params, CPU) "
              f"{'':>23} {paper['latency_ms']:>9.0f}")  # fmt: skip

    a, b10 = rows["L1 regression"], rows["plain diffusion, 10 steps"]
    b50, c10 = rows["plain diffusion, 50 steps"], rows["anchored, 10 steps"]
    d10 = rows["anchored, 10 steps + residual"]
    checks = {
        "anchored 10 clearly above regression": c10["clear"] >= a["clear"] + 0.2,
        "anchored 10 above plain diffusion 10": c10["clear"] > b10["clear"],
        "anchored 10 several times faster than plain diffusion 50": b50["latency_ms"]
        >= 3 * c10["latency_ms"],
        "residual at or above anchored": d10["clear"] >= c10["clear"] - 0.01
        and d10["error_m"] <= c10["error_m"] + 0.005,
    }
    figures["checks"] = checks
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    return figures, all(checks.values())

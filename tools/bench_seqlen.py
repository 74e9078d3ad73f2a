"""`anchorvla bench seqlen`: backbone forward latency vs sequence length, transformer vs Mamba, in one run.

Both backbones are transformers models with random weights of the same width and depth: a Qwen2 LM (the VLM
backbone's language model; PyTorch's scaled-dot-product attention) and a Mamba LM (the `mamba` backbone option;
on CPU transformers runs its sequential selective scan). Each is timed on one forward pass (batch 1, inputs_embeds,
no cache) at every sequence length, interleaved so machine load hits both alike; the table gives the medians and
the growth exponent of each, the slope of log(latency) over log(length) fitted by least squares: 1 is linear
growth, 2 quadratic. ok when Mamba grows about linearly (exponent <= --linear-max) and the transformer faster
(exponent >= --superlinear-min). Small widths keep the default run near a minute on a 2-core machine; the
attention's quadratic term shows at the long end, where it outgrows the layers' linear cost.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

DEFAULT_LENGTHS = (256, 512, 1024, 2048, 4096)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=list(DEFAULT_LENGTHS), help="sequence lengths in tokens"
    )
    parser.add_argument("--width", type=int, default=64, help="hidden size of both backbones")
    parser.add_argument("--layers", type=int, default=2, help="layers of both backbones")
    parser.add_argument("--repeats", type=int, default=7, help="timed forward passes per length and model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument(
        "--linear-max", type=float, default=1.25, help="Mamba's exponent must be at most this"
    )
    parser.add_argument(
        "--superlinear-min", type=float, default=1.2, help="the transformer's exponent must be at least this"
    )


def build_backbones(width: int, layers: int, max_length: int) -> dict:
    """The two LMs at the same width and depth, random weights, eval mode: {'transformer': ..., 'mamba': ...}."""
    from transformers import MambaConfig, MambaModel, Qwen2Config, Qwen2Model

    heads = max(1, width // 16)
    transformer = Qwen2Model(
        Qwen2Config(
            vocab_size=16, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_length,
        )
    )  # fmt: skip
    mamba = MambaModel(
        MambaConfig(vocab_size=16, hidden_size=width, state_size=16, num_hidden_layers=layers, expand=2)
    )
    return {"transformer": transformer.eval(), "mamba": mamba.eval()}


def growth_exponent(lengths, latencies) -> float:
    """Least-squares slope of log(latency) over log(length)."""
    return float(np.polyfit(np.log(np.asarray(lengths, float)), np.log(np.asarray(latencies, float)), 1)[0])


def measure(models: dict, lengths, width: int, repeats: int) -> dict[str, list[float]]:
    """Median forward latency in ms per model and length; the models alternate within each repeat."""
    import torch

    times: dict[str, dict[int, list[float]]] = {name: {n: [] for n in lengths} for name in models}
    with torch.inference_mode():
        for n in lengths:
            embeds = torch.randn(1, n, width)
            for model in models.values():  # warm-up at this length
                model(inputs_embeds=embeds, use_cache=False)
            for _ in range(repeats):
                for name, model in models.items():
                    t0 = time.perf_counter()
                    model(inputs_embeds=embeds, use_cache=False)
                    times[name][n].append((time.perf_counter() - t0) * 1e3)
    return {name: [statistics.median(times[name][n]) for n in lengths] for name in models}


def summarize(lengths, medians: dict[str, list[float]]) -> dict:
    figures: dict = {"lengths": list(lengths)}
    for name, ms in medians.items():
        figures[f"{name}_ms"] = [round(v, 3) for v in ms]
        figures[f"{name}_exponent"] = round(growth_exponent(lengths, ms), 3)
    return figures


def format_table(figures: dict) -> str:
    lengths = figures["lengths"]
    header = f"{'tokens':>8}{'transformer ms':>16}{'mamba ms':>12}{'ratio T/M':>11}"
    lines = [header, "-" * len(header)]
    for i, n in enumerate(lengths):
        t, m = figures["transformer_ms"][i], figures["mamba_ms"][i]
        lines.append(f"{n:>8}{t:>16.2f}{m:>12.2f}{t / m:>11.2f}")
    lines.append("-" * len(header))
    lines.append(
        f"{'exponent':>8}{figures['transformer_exponent']:>16.2f}{figures['mamba_exponent']:>12.2f}"
        "   (log-log slope; 1 linear, 2 quadratic)"
    )
    return "\n".join(lines)


def verdict(figures: dict, linear_max: float, superlinear_min: float) -> bool:
    return figures["mamba_exponent"] <= linear_max and figures["transformer_exponent"] >= superlinear_min


def main(args: argparse.Namespace) -> tuple[dict, bool]:
    import torch

    from anchorvla.errors import UserError

    lengths = sorted(set(args.lengths))
    if len(lengths) < 2 or lengths[0] < 1:
        raise UserError("--lengths: give at least two positive sequence lengths")
    if args.width < 16 or args.layers < 1 or args.repeats < 1:
        raise UserError("--width must be >= 16, --layers and --repeats >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = build_backbones(args.width, args.layers, lengths[-1])
    print(
        f"backbone forward, batch 1, width {args.width}, {args.layers} layers, {args.threads} thread(s), "
        f"median of {args.repeats}"
    )
    figures = summarize(lengths, measure(models, lengths, args.width, args.repeats))
    figures.update(width=args.width, layers=args.layers, repeats=args.repeats, threads=args.threads)
    print(format_table(figures))
    ok = verdict(figures, args.linear_max, args.superlinear_min)
    print(
        f"{'ok' if ok else 'NOT ok'}: Mamba exponent {figures['mamba_exponent']:.2f} (<= {args.linear_max}), "
        f"transformer {figures['transformer_exponent']:.2f} (>= {args.superlinear_min})"
    )
    return figures, ok

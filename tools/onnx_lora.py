"""Fold LoRA adapters into their base weights in an exported ONNX graph: W' = W + scale * A @ B.

peft's LoRA layer exports as the base MatMul (plus its bias Add) beside a second branch x @ A @ B * scale added
to it: two more MatMuls, a Mul and an Add per adapted projection, each a separate small kernel (and, once
quantized, a separate activation quantization). The deployed graph needs only the merged weight; the result is
the same function up to float rounding.
"""

from __future__ import annotations

import numpy as np


def merge_lora(model) -> int:
    """Merge every `Add(base(x), Mul(MatMul(MatMul(x, A), B), scale))` with constant A, B, scale and a base that
    is `MatMul(x, W)` or `Add(MatMul(x, W), bias)` with constant W. Edits `model` in place; returns how many."""
    from onnx import numpy_helper

    graph = model.graph
    weights = {w.name: w for w in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}

    def resolve(name: str) -> str:  # torch's exporter shares equal weights through Identity nodes
        node = producer.get(name)
        while node is not None and node.op_type == "Identity":
            name = node.input[0]
            node = producer.get(name)
        return name

    def constant(name: str) -> np.ndarray | None:
        name = resolve(name)
        if name in weights:
            return numpy_helper.to_array(weights[name])
        if name in constants:
            return numpy_helper.to_array(constants[name].attribute[0].t)
        return None

    def matmul_with_weight(name: str):
        node = producer.get(name)
        if node is None or node.op_type != "MatMul" or resolve(node.input[1]) not in weights:
            return None
        return node

    def base_matmul(name: str):
        node = producer.get(name)
        if node is not None and node.op_type == "Add":
            return next(filter(None, (matmul_with_weight(i) for i in node.input)), None)
        return matmul_with_weight(name)

    def lora_branch(name: str):
        mul = producer.get(name)
        if mul is None or mul.op_type != "Mul":
            return None
        for product, scale_name in (mul.input, reversed(mul.input)):
            scale, b_node = constant(scale_name), matmul_with_weight(product)
            a_node = b_node and matmul_with_weight(b_node.input[0])
            if scale is not None and scale.size == 1 and a_node is not None:
                return a_node, b_node, mul, float(scale.reshape(()))
        return None

    outputs = {o.name for o in graph.output}
    merged, dropped = 0, set()
    for add in list(graph.node):
        if add.op_type != "Add" or len(add.input) != 2 or add.output[0] in outputs:
            continue
        for base_out, lora_out in (add.input, reversed(add.input)):
            base, lora = base_matmul(base_out), lora_branch(lora_out)
            if base is None or lora is None or lora[0].input[0] != base.input[0]:
                continue
            a_node, b_node, mul, scale = lora
            w_name = resolve(base.input[1])
            delta = scale * (constant(a_node.input[1]) @ constant(b_node.input[1]))
            merged_w = numpy_helper.from_array(
                (numpy_helper.to_array(weights[w_name]) + delta).astype(np.float32), w_name + "_lora_merged"
            )
            graph.initializer.append(merged_w)
            base.input[1] = merged_w.name
            for node in graph.node:  # the Add's users now read the base branch, which holds the merged weight
                for i, name in enumerate(node.input):
                    if name == add.output[0]:
                        node.input[i] = base_out
            dropped.update(id(n) for n in (add, mul, b_node, a_node))
            merged += 1
            break
    keep = [n for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(keep)
    used = {name for node in graph.node for name in node.input}
    for w in [w for w in graph.initializer if w.name not in used]:
        graph.initializer.remove(w)
    return merged

"""`aten::tensor_split` with traced split indices, exported as plain Slices.

transformers' Mamba mixer (5.25 and newer) splits its scan input with `torch.tensor_split(x, [n], dim)`, where
`n` comes from the input's shape. Under the TorchScript exporter that index is a traced value, and torch's own
symbolic for it writes a Tile whose repeats are 2-D, which ONNX Runtime refuses at load ("'Repeats' input must be
1D tensor of type int64"); reshaping the repeats makes the graph load but index out of range. The symbolic here
slices between consecutive indices instead. The exporter hands it the split as one list value, so it returns the
slices as a SequenceConstruct that the graph then unpacks with SequenceAt; `fold_sequences` replaces each such
SequenceAt by the slice it picks, so the saved graph holds no sequence ops (TensorRT has none).
"""

from __future__ import annotations

OPSET = 17
_INT64 = 7  # TensorProto.INT64
_PAST_THE_END = 2**62  # a Slice end beyond any dimension


def _tensor_split(g, self, indices, dim, _outputs=None):
    import torch
    from torch.onnx._internal.torchscript_exporter import symbolic_helper

    axis = g.op("Constant", value_t=torch.tensor([symbolic_helper._get_const(dim, "i", "dim")]))
    as_1d = g.op("Constant", value_t=torch.tensor([1]))
    start = g.op("Constant", value_t=torch.tensor([0]))
    parts = []
    for index in symbolic_helper._unpack_list(indices):
        end = g.op("Reshape", g.op("Cast", index, to_i=_INT64), as_1d)
        parts.append(g.op("Slice", self, start, end, axis))
        start = end
    parts.append(g.op("Slice", self, start, g.op("Constant", value_t=torch.tensor([_PAST_THE_END])), axis))
    return parts if _outputs else g.op("SequenceConstruct", *parts)


def register() -> None:
    """Makes the TorchScript exporter (torch.onnx.export(dynamo=False)) use the symbolic above."""
    from torch.onnx import register_custom_op_symbolic

    register_custom_op_symbolic("aten::tensor_split", _tensor_split, OPSET)


def fold_sequences(model) -> None:
    """Replaces SequenceAt(SequenceConstruct(x0, x1, ...), k) with xk for a constant k, and drops the
    SequenceConstructs nothing reads any more (in place)."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    built = {node.output[0]: node for node in graph.node if node.op_type == "SequenceConstruct"}
    nodes = []
    for node in graph.node:
        source = built.get(node.input[0]) if node.op_type == "SequenceAt" else None
        if source is not None and node.input[1] in constants:
            picked = source.input[int(constants[node.input[1]])]
            node = onnx.helper.make_node("Identity", [picked], list(node.output), name=node.name)
        nodes.append(node)
    read = {name for node in nodes for name in node.input} | {out.name for out in graph.output}
    nodes = [n for n in nodes if n.op_type != "SequenceConstruct" or n.output[0] in read]
    del graph.node[:]
    graph.node.extend(nodes)

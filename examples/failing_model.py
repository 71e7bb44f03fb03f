"""Write examples/models/fails_at_run.onnx: a model that loads but fails on every run.

Run:  pip install onnx==1.23.2 && python examples/failing_model.py

It takes X float32 [N, 30] (like the bench models) and reshapes its 30·N values to [7, 11],
which no N allows, so onnxruntime raises on every session.run. The bench (scenario 8) deploys
it next to a healthy deployment to measure that a broken deployment does not slow the others.
"""
from pathlib import Path

import onnx
from onnx import TensorProto, helper

OUT = Path(__file__).parent / "models" / "fails_at_run.onnx"

graph = helper.make_graph(
    [helper.make_node("Reshape", ["X", "shape"], ["scores"])],
    "fails_at_run",
    [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 30])],
    [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 11])],
    initializer=[helper.make_tensor("shape", TensorProto.INT64, [2], [7, 11])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model)
OUT.write_bytes(model.SerializeToString())
print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")

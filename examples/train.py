"""Train the example models and export them to ONNX.

Run:  pip install -r examples/requirements.txt && python examples/train.py

The .onnx files this writes are committed, so nothing needs Python at run or test time.
Every classifier is exported with zipmap=False: skl2onnx's default ZipMap output is a
sequence of maps, which onnxruntime-node cannot return. One ZipMap model is kept on
purpose (iris_zipmap.onnx) so the tests can check how pgscore handles it.
"""
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

OUT = Path(__file__).parent / "models"
# Pinned so the files load in the onnxruntime-node version package.json pins.
OPSET = {"": 17, "ai.onnx.ml": 3}
IR_VERSION = 8


def save(model: onnx.ModelProto, name: str) -> None:
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path = OUT / name
    path.write_bytes(model.SerializeToString())
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def iris() -> None:
    data = load_iris()
    species = np.array(data.target_names)[data.target]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(data.data, species)
    # The pipeline's final step decides the options key; skl2onnx accepts the pipeline's own id too.
    model = to_onnx(clf, data.data[:1].astype(np.float32), target_opset=OPSET,
                    options={id(clf): {"zipmap": False}})
    save(model, "iris.onnx")
    zipmapped = to_onnx(clf, data.data[:1].astype(np.float32), target_opset=OPSET)
    save(zipmapped, "iris_zipmap.onnx")


def iris_v2() -> None:
    """A second iris model, a shallow tree: same inputs and outputs as iris.onnx, different
    predictions near the class borders. The README's lifecycle walk-through shadows, splits and
    promotes it."""
    data = load_iris()
    species = np.array(data.target_names)[data.target]
    clf = DecisionTreeClassifier(max_depth=2, random_state=0).fit(data.data, species)
    model = to_onnx(clf, data.data[:1].astype(np.float32), target_opset=OPSET,
                    options={id(clf): {"zipmap": False}})
    save(model, "iris_v2.onnx")


def breast_cancer() -> None:
    data = load_breast_cancer()
    x, y = data.data, data.target
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    save(to_onnx(logreg, x[:1].astype(np.float32), target_opset=OPSET,
                 options={id(logreg): {"zipmap": False}}), "breast_cancer_logreg.onnx")
    gbm = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0).fit(x, y)
    save(to_onnx(gbm, x[:1].astype(np.float32), target_opset=OPSET,
                 options={id(gbm): {"zipmap": False}}), "breast_cancer_gbm.onnx")


def diabetes() -> None:
    data = load_diabetes()
    reg = LinearRegression().fit(data.data, data.target)
    save(to_onnx(reg, data.data[:1].astype(np.float32), target_opset=OPSET), "diabetes_linreg.onnx")


def typed() -> None:
    """A hand-built model with one input per tensor element type pgscore supports.

    total = f32[:,0] + f32[:,1] + f64 + i32 + i64 + flag ; echo = tag.
    The tests use it to check every element type end to end.
    """
    def inp(name, elem, width):
        return helper.make_tensor_value_info(name, elem, ["N", width])

    inputs = [
        inp("f32", TensorProto.FLOAT, 2),
        inp("f64", TensorProto.DOUBLE, 1),
        inp("i32", TensorProto.INT32, 1),
        inp("i64", TensorProto.INT64, 1),
        inp("flag", TensorProto.BOOL, 1),
        inp("tag", TensorProto.STRING, 1),
    ]
    nodes = [
        helper.make_node("Cast", ["f32"], ["f32d"], to=TensorProto.DOUBLE),
        helper.make_node("ReduceSum", ["f32d", "axis1"], ["f32s"], keepdims=1),
        helper.make_node("Cast", ["i32"], ["i32d"], to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["i64"], ["i64d"], to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["flag"], ["flagd"], to=TensorProto.DOUBLE),
        helper.make_node("Sum", ["f32s", "f64", "i32d", "i64d", "flagd"], ["total"]),
        helper.make_node("Identity", ["tag"], ["echo"]),
        helper.make_node("Cast", ["i64"], ["doubled_in"], to=TensorProto.INT64),
        helper.make_node("Add", ["doubled_in", "doubled_in"], ["doubled"]),
    ]
    graph = helper.make_graph(
        nodes,
        "typed",
        inputs,
        [
            helper.make_tensor_value_info("total", TensorProto.DOUBLE, ["N", 1]),
            helper.make_tensor_value_info("echo", TensorProto.STRING, ["N", 1]),
            helper.make_tensor_value_info("doubled", TensorProto.INT64, ["N", 1]),
        ],
        initializer=[helper.make_tensor("axis1", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    save(model, "typed.onnx")


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    iris()
    iris_v2()
    breast_cancer()
    diabetes()
    typed()

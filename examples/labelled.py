"""Write test/fixtures/labelled/: rows whose labels arrive after they were scored, and the quality
scikit-learn computes for the bundled models' predictions on them, so the tests can check
ml.performance without Python.

Run:  pip install -r examples/requirements.txt onnxruntime && python examples/labelled.py

The predictions are the ONNX models' own (onnxruntime in Python, as pgscore runs them), so the
figures are those of exactly the values pgscore logs. The breast cancer rows get Gaussian noise
(seeded) so that the classifier makes mistakes worth measuring.
"""

import csv
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, mean_squared_error, roc_auc_score

MODELS = Path(__file__).parent / "models"
OUT = Path(__file__).parent.parent / "test" / "fixtures" / "labelled"


def write_csv(name: str, x: np.ndarray, labels: np.ndarray) -> None:
    with open(OUT / name, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "features", "label"])
        for i, (row, label) in enumerate(zip(x, labels), start=1):
            # float32 values as their shortest round-tripping text: Postgres reads back the same bits.
            writer.writerow([i, "{" + ",".join(str(np.float32(v)) for v in row) + "}", label])


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    data = load_breast_cancer()
    x = (data.data + rng.normal(0.0, 1.0, data.data.shape) * data.data.std(axis=0) * 0.8).astype(np.float32)
    y = data.target
    label, proba = ort.InferenceSession(str(MODELS / "breast_cancer_logreg.onnx")).run(None, {"X": x})
    p1 = proba[:, 1].astype(np.float64)
    classifier = {
        "rows": int(len(y)),
        "accuracy": float(accuracy_score(y, label)),
        "auc": float(roc_auc_score(y, p1)),
        # pgscore clips probabilities at 1e-15, as scikit-learn does for float64.
        "log_loss": float(log_loss(y, np.column_stack([1.0 - p1, p1]))),
    }
    write_csv("breast_cancer.csv", x, y)

    data = load_diabetes()
    x = data.data.astype(np.float32)
    (pred,) = ort.InferenceSession(str(MODELS / "diabetes_linreg.onnx")).run(None, {"X": x})
    pred = pred.reshape(-1).astype(np.float64)
    regressor = {
        "rows": int(len(data.target)),
        "mae": float(mean_absolute_error(data.target, pred)),
        "rmse": float(np.sqrt(mean_squared_error(data.target, pred))),
    }
    write_csv("diabetes.csv", x, data.target)

    expected = {"breast_cancer_logreg": classifier, "diabetes_linreg": regressor}
    (OUT / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(json.dumps(expected, indent=2))


if __name__ == "__main__":
    main()

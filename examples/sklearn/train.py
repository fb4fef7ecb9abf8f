"""Train a scikit-learn pipeline and export it to ONNX, under SageMaker's script-mode contract.

The same script runs unchanged as a SageMaker training job: Galley gives it SageMaker's
variables and /opt/ml layout. It reads the prepared splits from the channels, fits a
StandardScaler + LogisticRegression pipeline, prints metrics Galley logs to the experiment run, and
writes `model.onnx` to SM_MODEL_DIR (plus the fitted pipeline with joblib to SM_OUTPUT_DATA_DIR,
so anyone can check the ONNX model against the library).
"""

import json
import os
import sys
import traceback

import joblib
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType


def main() -> None:
    hps = json.loads(os.environ["SM_HPS"])
    target = hps["target"]
    train = pd.read_csv(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "train.csv"))
    validation = pd.read_csv(os.path.join(os.environ["SM_CHANNEL_VALIDATION"], "validation.csv"))
    x, y = train.drop(columns=[target]), train[target].astype(int)

    model = Pipeline([
        ("scale", StandardScaler()),
        ("classify", LogisticRegression(C=float(hps.get("C", 1.0)), max_iter=int(hps.get("max_iter", 500)))),
    ])
    model.fit(x, y)

    vx, vy = validation.drop(columns=[target]), validation[target].astype(int)
    print(f"galley.metric train_accuracy={accuracy_score(y, model.predict(x))}")
    print(f"galley.metric validation_accuracy={accuracy_score(vy, model.predict(vx))}")

    # One float input of shape [N, features], in the channel files' column order; no ZipMap,
    # so the probabilities are a plain [N, 2] tensor.
    onnx = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, x.shape[1]]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.onnx"), "wb") as f:
        f.write(onnx.SerializeToString())
    joblib.dump(model, os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "model.joblib"))
    print(f"exported {type(model[-1]).__name__} on {len(x)} rows, {x.shape[1]} features")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        # SageMaker's contract: the reason goes to /opt/ml/output/failure.
        with open(os.path.join(os.environ.get("SM_OUTPUT_DIR", "."), "failure"), "w") as f:
            f.write(traceback.format_exc())
        sys.exit(1)

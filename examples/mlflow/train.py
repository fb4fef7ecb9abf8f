"""A scikit-learn pipeline saved as an MLflow model with the ONNX flavor.

Teams that already log models with MLflow keep doing so: the script writes an MLflow model
directory (`MLmodel`, the ONNX file, its signature) to SM_MODEL_DIR, and Galley serves the ONNX
flavor in-process, checking the MLmodel signature's columns against the prepared data.
"""

import json
import os
import sys
import traceback

import joblib
import mlflow.onnx
import pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType


def main() -> None:
    hps = json.loads(os.environ["SM_HPS"])
    target = hps["target"]
    train = pd.read_csv(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "train.csv"))
    x, y = train.drop(columns=[target]), train[target].astype(int)
    model = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(C=float(hps.get("C", 1.0)), max_iter=500))])
    model.fit(x, y)
    print(f"galley.metric train_accuracy={(model.predict(x) == y).mean()}")

    onnx = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, x.shape[1]]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    # The signature names the columns the model takes, in order: Galley checks them.
    mlflow.onnx.save_model(onnx, os.environ["SM_MODEL_DIR"], signature=infer_signature(x, model.predict(x)))
    joblib.dump(model, os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "model.joblib"))


if __name__ == "__main__":
    try:
        main()
    except Exception:
        with open(os.path.join(os.environ.get("SM_OUTPUT_DIR", "."), "failure"), "w") as f:
            f.write(traceback.format_exc())
        sys.exit(1)

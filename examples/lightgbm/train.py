"""Gradient-boosted trees with LightGBM, exported to ONNX with onnxmltools.

SageMaker's script-mode contract, as in ../sklearn: the splits come from SM_CHANNEL_TRAIN and
SM_CHANNEL_VALIDATION, the hyperparameters from SM_HPS, and the model goes to SM_MODEL_DIR.
"""

import json
import os
import sys
import traceback

import joblib
import lightgbm as lgb
import pandas as pd
from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
from skl2onnx import to_onnx, update_registered_converter
from skl2onnx.common.data_types import FloatTensorType
from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes


def main() -> None:
    hps = json.loads(os.environ["SM_HPS"])
    target = hps["target"]
    train = pd.read_csv(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "train.csv"))
    validation = pd.read_csv(os.path.join(os.environ["SM_CHANNEL_VALIDATION"], "validation.csv"))
    x, y = train.drop(columns=[target]), train[target].astype(int)
    vx, vy = validation.drop(columns=[target]), validation[target].astype(int)

    model = lgb.LGBMClassifier(
        n_estimators=int(hps.get("n_estimators", 200)),
        learning_rate=float(hps.get("learning_rate", 0.05)),
        num_leaves=int(hps.get("num_leaves", 15)),
        random_state=int(hps.get("seed", 0)),
        verbose=-1,
    )
    model.fit(x, y)
    print(f"galley.metric train_accuracy={(model.predict(x) == y).mean()}")
    print(f"galley.metric validation_accuracy={(model.predict(vx) == vy).mean()}")

    # LightGBM's own converter, registered with skl2onnx so the model converts like any
    # scikit-learn estimator; ZipMap off for a plain [N, 2] probabilities tensor.
    update_registered_converter(
        lgb.LGBMClassifier, "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes, convert_lightgbm,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    onnx = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, x.shape[1]]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.onnx"), "wb") as f:
        f.write(onnx.SerializeToString())
    joblib.dump(model, os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "model.joblib"))
    print(f"exported LightGBM with {model.n_estimators_} trees on {len(x)} rows")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        with open(os.path.join(os.environ.get("SM_OUTPUT_DIR", "."), "failure"), "w") as f:
            f.write(traceback.format_exc())
        sys.exit(1)

"""Saves the scikit-learn pipeline examples/sklearn/train.py fitted (its model.joblib, which
Galley keeps beside the ONNX export) as an MLflow model, so `mlflow models serve` serves the very
model Galley's endpoint serves as ONNX.   usage: sklearn_as_mlflow.py MODEL.joblib OUT_DIR"""
import sys
import warnings

warnings.filterwarnings("ignore")

import joblib  # noqa: E402
import mlflow.sklearn  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402

from common import FEATURES, emit  # noqa: E402


def main():
    model = joblib.load(sys.argv[1])
    sample = pd.DataFrame([[0.0] * len(FEATURES)], columns=FEATURES)
    mlflow.sklearn.save_model(model, sys.argv[2], signature=infer_signature(sample, model.predict(sample)))
    emit({"model": type(model[-1]).__name__, "path": sys.argv[2]})


if __name__ == "__main__":
    main()

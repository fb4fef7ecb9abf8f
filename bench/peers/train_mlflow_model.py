"""Trains the peer model the quickstart's way: logistic regression on the same 7 features of
the same wine rows, target quality >= 6, features standardized, 80/20 split with seed 42; saves
it as an MLflow model for `mlflow models serve`.   usage: train_mlflow_model.py WINE.csv OUT_DIR"""
import sys
import warnings

warnings.filterwarnings("ignore")

import mlflow.sklearn  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from common import FEATURES, emit  # noqa: E402


def main():
    wine, out = sys.argv[1], sys.argv[2]
    df = pd.read_csv(wine)
    x = df[FEATURES].astype("float64")
    y = (df["quality"] >= 6).astype("int64")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=42)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200))
    model.fit(x_train, y_train)
    accuracy = float(model.score(x_test, y_test))
    signature = infer_signature(x_train, model.predict(x_train))
    mlflow.sklearn.save_model(model, out, signature=signature)
    emit({"rows": len(df), "accuracy": accuracy, "path": out})


if __name__ == "__main__":
    main()

"""MLflow's side of tracking ingest: the same points as `galley-bench tracking` (10 keys, one
step per 10 points, fixed timestamps), logged with MlflowClient.log_batch to an SQLite tracking
store in-process.   usage: tracking.py DIR [METRICS] [BATCH]"""
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")

import mlflow  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from common import emit  # noqa: E402

KEYS = 10
T0_MS = 1_700_000_000_000


def main():
    work = sys.argv[1]
    metrics = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000
    os.makedirs(work, exist_ok=True)
    db = os.path.join(work, "mlflow-tracking.db")
    if os.path.exists(db):
        os.remove(db)
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    client = MlflowClient()
    # Schema creation and migrations happen here, outside the clock, as Galley's open does.
    exp = client.create_experiment("bench", artifact_location=f"file://{work}/mlruns")
    run = client.create_run(exp, run_name="ingest")
    run_id = run.info.run_id

    points = [Metric(f"m{i % KEYS}", i * 0.001, T0_MS + i, i // KEYS) for i in range(metrics)]
    batches = [points[i : i + batch] for i in range(0, metrics, batch)]
    started = time.perf_counter()
    for b in batches:
        client.log_batch(run_id, metrics=b)
    seconds = time.perf_counter() - started

    history = client.get_metric_history(run_id, "m0")
    expected = -(-metrics // KEYS)
    if len(history) != expected:
        sys.exit(f"MLflow holds {len(history)} points of m0, expected {expected}")
    emit({"metrics": metrics, "batch": batch, "seconds": seconds, "metrics_per_s": metrics / seconds,
          "mlflow": mlflow.__version__})


if __name__ == "__main__":
    main()

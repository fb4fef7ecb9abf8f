"""Feast's side of online features: the wine rows keyed by row_id in a feature view with the
quickstart's 7 features, SQLite online store, file offline store; materialized, then read one
entity at a time with FeatureStore.get_online_features, in-process.
usage: features.py DIR WINE.csv [LOOKUPS]"""
import os
import sys
import contextlib
import time
import warnings
from datetime import datetime, timedelta, timezone

warnings.filterwarnings("ignore")

import feast  # noqa: E402
import pandas as pd  # noqa: E402
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType  # noqa: E402
from feast.types import Float64  # noqa: E402

from common import FEATURES, emit, entity, quantile  # noqa: E402

REPO_YAML = """project: galley_bench
registry: {data}/registry.db
provider: local
online_store:
  type: sqlite
  path: {data}/online.db
offline_store:
  type: file
entity_key_serialization_version: 3
"""


def main():
    work, wine = sys.argv[1], sys.argv[2]
    lookups = int(sys.argv[3]) if len(sys.argv) > 3 else 5_000
    repo = os.path.join(work, "feast_repo")
    data = os.path.join(repo, "data")
    os.makedirs(data, exist_ok=True)
    with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
        f.write(REPO_YAML.format(data=data))

    df = pd.read_csv(wine)[FEATURES].astype("float64")
    df.insert(0, "row_id", range(len(df)))
    now = datetime.now(timezone.utc)
    df["event_timestamp"] = now - timedelta(hours=1)
    parquet = os.path.join(data, "wine.parquet")
    df.to_parquet(parquet)

    setup = time.perf_counter()
    store = FeatureStore(repo_path=repo)
    row = Entity(name="row_id", join_keys=["row_id"], value_type=ValueType.INT64)
    source = FileSource(path=parquet, timestamp_field="event_timestamp")
    view = FeatureView(
        name="wine_features",
        entities=[row],
        ttl=timedelta(days=365),
        schema=[Field(name=f, dtype=Float64) for f in FEATURES],
        online=True,
        source=source,
    )
    # Feast reports progress on stdout, which carries only the result line here.
    with contextlib.redirect_stdout(sys.stderr):
        store.apply([row, view])
        store.materialize(start_date=now - timedelta(days=1), end_date=now)
    setup_s = time.perf_counter() - setup

    refs = [f"wine_features:{f}" for f in FEATURES]
    n = len(df)
    samples = []
    started = time.perf_counter()
    for i in range(lookups):
        key = entity(i, n)
        t = time.perf_counter()
        got = store.get_online_features(features=refs, entity_rows=[{"row_id": key}]).to_dict()
        samples.append(time.perf_counter() - t)
        if any(got[f][0] is None for f in FEATURES):
            sys.exit(f"Feast returned no online values for row_id {key}")
    seconds = time.perf_counter() - started
    samples.sort()
    emit({"entities": n, "features": len(FEATURES), "lookups": lookups, "seconds": seconds,
          "lookups_per_s": lookups / seconds, "p50_us": quantile(samples, 0.5) * 1e6,
          "p99_us": quantile(samples, 0.99) * 1e6, "setup_s": setup_s, "feast": feast.__version__})


if __name__ == "__main__":
    main()

"""Galley's bridge to a Feast feature repository.

Feast's complete API is its Python SDK, and importing it takes seconds, so Galley starts this
once per feature store and sends it one JSON request per line on stdin; each answer is one JSON
line on stdout: {"ok": ...} or {"error": "..."}.
Argument 1 is the repository. Registry writes take an exclusive lock on `data/.galley.lock`, so
several Galley processes can share one file registry. Online reads do not pass through here:
Galley asks Feast's feature server.
"""
import fcntl
import json
import os
import sys
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Bool, Float64, Int64, String

REPO = sys.argv[1]
# Feast prints progress on stdout; the answers own it, everything else goes to stderr.
ANSWERS = sys.stdout
sys.stdout = sys.stderr
os.environ["FEAST_NO_PROGRESS"] = "1"
store = FeatureStore(repo_path=REPO)
# Timestamps go to the offline files in milliseconds, UTC.
TS = pa.timestamp("ms", tz="UTC")
ARROW = {"float": pa.float64(), "int": pa.int64(), "string": pa.string(), "bool": pa.bool_()}
FEAST = {"float": Float64, "int": Int64, "string": String, "bool": Bool}
KEY = {"int": ValueType.INT64, "string": ValueType.STRING}
SPEC_TAG = "galley.spec"


@contextmanager
def registry_lock():
    os.makedirs(os.path.join(REPO, "data"), exist_ok=True)
    with open(os.path.join(REPO, "data", ".galley.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            store.refresh_registry()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def data_dir(spec):
    return os.path.join(REPO, spec["source_path"])


def objects(spec):
    entity = Entity(name=spec["entity_name"], join_keys=[spec["entity"]["name"]], value_type=KEY[spec["entity"]["dtype"]])
    source = FileSource(name=spec["name"], path=spec["source_path"], timestamp_field=spec["event_time"])
    view = FeatureView(
        name=spec["name"],
        entities=[entity],
        ttl=timedelta(0),
        schema=[Field(name=f["name"], dtype=FEAST[f["dtype"]]) for f in spec["features"]],
        source=source,
        online=spec["online"],
        tags={SPEC_TAG: spec["tag"]},
    )
    return entity, source, view


def find_view(name):
    try:
        return store.get_feature_view(name, allow_registry_cache=False)
    except Exception as e:
        if type(e).__name__ == "FeatureViewNotFoundException":
            return None
        raise


def describe(req):
    view = find_view(req["name"])
    if view is None:
        return None
    schema = {f.name: str(f.dtype) for f in view.features}
    return {"tag": view.tags.get(SPEC_TAG), "schema": schema, "entities": list(view.entities)}


def apply(req):
    spec = req["spec"]
    with registry_lock():
        store.apply(list(objects(spec)), skip_feature_view_validation=True)
    os.makedirs(data_dir(spec), exist_ok=True)
    return True


def delete(req):
    spec = req["spec"]
    with registry_lock():
        if find_view(spec["name"]) is not None:
            store.apply([], objects_to_delete=list(objects(spec)), partial=False)
    return True


def ingest(req):
    spec = req["spec"]
    fields = [pa.field(spec["entity"]["name"], ARROW[spec["entity"]["dtype"]]), pa.field(spec["event_time"], TS)]
    fields += [pa.field(f["name"], ARROW[f["dtype"]]) for f in spec["features"]]
    columns = req["columns"]
    arrays = []
    for field in fields:
        values = columns.get(field.name, [None] * req["rows"])
        arrays.append(pa.array(values, type=pa.int64()).cast(TS) if field.type == TS else pa.array(values, type=field.type))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    os.makedirs(data_dir(spec), exist_ok=True)
    # A new file per ingest, written aside and renamed into place, so a reader never sees half a file.
    name = f"part-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = os.path.join(data_dir(spec), "." + name)
    pq.write_table(table, tmp)
    os.replace(tmp, os.path.join(data_dir(spec), name))
    return table.num_rows


def offline(spec):
    path = data_dir(spec)
    files = [os.path.join(path, f) for f in os.listdir(path) if f.endswith(".parquet")] if os.path.isdir(path) else []
    return pa.concat_tables([pq.read_table(f) for f in sorted(files)]) if files else None


def materialize(req):
    spec = req["spec"]
    table = offline(spec)
    if table is None:
        return 0
    up_to = datetime.fromtimestamp(req["up_to_ms"] / 1000, tz=timezone.utc)
    store.materialize(start_date=datetime.fromtimestamp(0, tz=timezone.utc), end_date=up_to, feature_views=[spec["name"]])
    frame = table.select([spec["entity"]["name"], spec["event_time"]]).to_pandas()
    return int(frame[frame[spec["event_time"]] <= pd.Timestamp(up_to)][spec["entity"]["name"]].nunique())


def historical(req):
    spec = req["spec"]
    key, ts = spec["entity"]["name"], spec["event_time"]
    rows = req["entities"]
    order = "__galley_row"
    entity_df = pd.DataFrame({
        key: pd.Series(rows[key], dtype="Int64" if spec["entity"]["dtype"] == "int" else "object"),
        "event_timestamp": pd.to_datetime(pd.Series(rows[ts], dtype="int64"), unit="ms", utc=True),
        order: range(len(rows[key])),
    })
    if offline(spec) is None:
        return {f: [None] * len(entity_df) for f in req["features"]}
    refs = [f"{spec['name']}:{f}" for f in req["features"]]
    frame = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
    # Feast's file store drops a lookup whose every feature row is in its future; such a row
    # is as unknown as an entity never seen, so it comes back with nulls, in the order asked.
    frame = frame.set_index(order).reindex(range(len(entity_df)))
    out = {}
    for f in req["features"]:
        out[f] = [None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in frame[f].tolist()]
    return out


OPS = {"describe": describe, "apply": apply, "delete": delete, "ingest": ingest, "materialize": materialize, "historical": historical}

def answer(value):
    ANSWERS.write(json.dumps(value, default=str) + "\n")
    ANSWERS.flush()


answer({"ok": {"ready": True}})
for line in sys.stdin:
    try:
        req = json.loads(line)
        answer({"ok": OPS[req["op"]](req)})
    except Exception as e:  # every failure is an answer; the bridge lives on
        answer({"error": f"{type(e).__name__}: {e}"})

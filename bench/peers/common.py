"""Helpers shared by the peer workloads; stdlib only (bench/run --smoke uses them without the venv)."""
import csv
import json
import math
import sys

# The quickstart blueprint's features (blueprints/quickstart.yaml, stages.features).
FEATURES = [
    "fixed_acidity",
    "volatile_acidity",
    "citric_acid",
    "residual_sugar",
    "chlorides",
    "sulphates",
    "alcohol",
]


def quantile(sorted_samples, q):
    """Nearest rank, as galley-bench's stats::quantile."""
    if not sorted_samples:
        return 0.0
    rank = math.ceil(q * len(sorted_samples))
    return sorted_samples[min(max(rank, 1), len(sorted_samples)) - 1]


def entity(i, rows):
    """The entity looked up i-th; the same stride as galley-bench's features::entity."""
    return (i * 7919) % rows


def read_wine(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def emit(obj):
    """The one JSON line bench/run reads from stdout."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

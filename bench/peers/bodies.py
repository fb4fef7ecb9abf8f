"""Writes the scoring request bodies: the first N wine rows in MLflow's dataframe_split format,
which both servers accept.   usage: bodies.py WINE.csv OUT_DIR N [N...]"""
import json
import os
import sys

from common import FEATURES, read_wine


def main():
    wine, out_dir, sizes = sys.argv[1], sys.argv[2], [int(n) for n in sys.argv[3:]]
    rows = read_wine(wine)
    for n in sizes:
        body = {"dataframe_split": {"columns": FEATURES, "data": [[float(r[f]) for f in FEATURES] for r in rows[:n]]}}
        with open(os.path.join(out_dir, f"body_{n}.json"), "w") as f:
            json.dump(body, f, separators=(",", ":"))


if __name__ == "__main__":
    main()

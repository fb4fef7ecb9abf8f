"""What the library itself answers for the held-out rows: the fitted estimator the training
script saved with joblib, scored on the rows Galley's `evaluate` scored.

usage: python library_predictions.py MODEL.joblib PREPARED.json  →  {"labels": [...], "proba": [...]}
"""

import json
import sys

import joblib
import pandas as pd

model = joblib.load(sys.argv[1])
doc = json.load(open(sys.argv[2]))
x = pd.DataFrame(doc["test_x"], columns=doc["features"])
print(json.dumps({
    "labels": [float(v) for v in model.predict(x)],
    "proba": [float(p) for p in model.predict_proba(x)[:, 1]],
}))

#!/usr/bin/env python3
"""One reference measurement per process (clean peak-RSS accounting), for run.sh:

  python3 ref.py xgb|lgb <train.csv> <test.csv> <rounds> <threads>
  python3 ref.py xgb-eval <train.csv> <valid.csv> <rounds> <threads> <metrics>

Loads the label-first CSVs with pandas (float32; not timed), then times dataset construction
(xgboost QuantileDMatrix max_bin=256 / LightGBM Dataset max_bin=255) and training with
depth 6, eta 0.1 (LightGBM: num_leaves=63, max_depth=6), and scores test AUC.
`xgb-eval` trains as the SageMaker container runs xgboost: `eval_metric=<metrics>`
(comma-separated), `evals=[(dtrain, 'train'), (dvalid, 'validation')]`, the per-round lines
printed (`verbose_eval=True`); `train_s` is `xgb.train` alone: the validation QuantileDMatrix
(with the training one's cuts) is built before it and timed as `valid_build_s`.
Prints `RESULT {json}`: process_peak_rss_mib is the whole process's peak (CSV load included);
train_peak_delta_mib is the peak during dataset build + training above the RSS after loading.
"""
import json
import resource
import sys
import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def vm(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0


def cpu_s():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


tool, train_csv, test_csv = sys.argv[1], sys.argv[2], sys.argv[3]
rounds, threads = int(sys.argv[4]), int(sys.argv[5])
metrics = sys.argv[6] if tool == "xgb-eval" else None
if tool.startswith("xgb"):
    import xgboost as xgb
else:
    import lightgbm as lgb

tr = pd.read_csv(train_csv, header=None, dtype=np.float32).values
Xtr, ytr = np.ascontiguousarray(tr[:, 1:]), tr[:, 0].copy()
del tr
te = pd.read_csv(test_csv, header=None, dtype=np.float32).values
Xte, yte = np.ascontiguousarray(te[:, 1:]), te[:, 0].copy()
del te
rss0 = vm("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM so the training-phase peak is measured on its own

r = {"tool": tool, "rows": len(ytr), "threads": threads, "rounds": rounds}
if tool == "xgb-eval":
    r["version"] = xgb.__version__
    r["metrics"] = metrics
    r["valid_rows"] = len(yte)
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 6, "eta": 0.1,
              "nthread": threads, "max_bin": 256, "eval_metric": metrics.split(",")}
    t = time.perf_counter()
    d = xgb.QuantileDMatrix(Xtr, label=ytr, nthread=threads, max_bin=256)
    r["dataset_build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    dv = xgb.QuantileDMatrix(Xte, label=yte, nthread=threads, ref=d)
    r["valid_build_s"] = time.perf_counter() - t
    t, c = time.perf_counter(), cpu_s()
    b = xgb.train(params, d, num_boost_round=rounds, evals=[(d, "train"), (dv, "validation")],
                  verbose_eval=True)
    r["train_s"] = time.perf_counter() - t
    r["train_cpu_s"] = cpu_s() - c
    p = b.inplace_predict(Xte)
elif tool == "xgb":
    r["version"] = xgb.__version__
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 6, "eta": 0.1,
              "nthread": threads, "max_bin": 256}
    t = time.perf_counter()
    d = xgb.QuantileDMatrix(Xtr, label=ytr, nthread=threads, max_bin=256)
    r["dataset_build_s"] = time.perf_counter() - t
    t, c = time.perf_counter(), cpu_s()
    b = xgb.train(params, d, num_boost_round=rounds)
    r["train_s"] = time.perf_counter() - t
    r["train_cpu_s"] = cpu_s() - c
    p = b.inplace_predict(Xte)
else:
    r["version"] = lgb.__version__
    params = {"objective": "binary", "learning_rate": 0.1, "num_leaves": 63, "max_depth": 6,
              "num_threads": threads, "max_bin": 255, "verbose": -1}
    t = time.perf_counter()
    d = lgb.Dataset(Xtr, label=ytr, params=params, free_raw_data=True).construct()
    r["dataset_build_s"] = time.perf_counter() - t
    t, c = time.perf_counter(), cpu_s()
    b = lgb.train(params, d, num_boost_round=rounds)
    r["train_s"] = time.perf_counter() - t
    r["train_cpu_s"] = cpu_s() - c
    p = b.predict(Xte, num_threads=threads)
r["test_auc"] = float(roc_auc_score(yte, p))
r["train_peak_delta_mib"] = vm("VmHWM") - rss0
r["process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
r["loadavg"] = open("/proc/loadavg").read().split()[0]
print("RESULT " + json.dumps(r), flush=True)

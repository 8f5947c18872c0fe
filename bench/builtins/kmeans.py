"""kiln's built-in K-Means against scikit-learn's KMeans on the same data and threads.

    cargo build --release -p kiln-algos --example algo     # `kiln algo` alone, in release mode
    python3 bench/builtins/kmeans.py [--rows 1000000] [--dim 20] [--k 10] [--threads 2] [--kiln PATH]

Makes blobs (sklearn.datasets.make_blobs, shuffled), writes them as label-less CSV, runs
`kiln algo kmeans train` on a job directory (as the agent runs it) and sklearn's KMeans
(k-means++, n_init=1, Lloyd, threadpoolctl-limited to --threads) on the same rows, and prints
inertia (the sum of squared distances of every row to its closest center, computed the same way
for both models) and wall times: kiln's fit (its log's figures) and the whole command (with
reading the CSV), against sklearn's fit and pandas' read_csv + fit."""
import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import pairwise_distances_argmin_min
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[2]


def inertia(X, centers):
    _, d = pairwise_distances_argmin_min(X, centers)
    return float((d.astype(np.float64) ** 2).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--std", type=float, default=2.0, help="the blobs' standard deviation (larger: more overlap)")
    ap.add_argument("--kiln", default=str(REPO / "target" / "release" / "examples" / "algo"),
                    help="the kiln binary, or the release `algo` example (both take `algo kmeans train`)")
    ap.add_argument("--hp", default="", help="extra kiln hyperparameters, k=v,k=v")
    a = ap.parse_args()

    X, _ = make_blobs(n_samples=a.rows, n_features=a.dim, centers=a.k, cluster_std=a.std, random_state=0)
    X = X.astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "input/config").mkdir(parents=True)
        (root / "input/data/train").mkdir(parents=True)
        csv = root / "input/data/train/data.csv"
        pd.DataFrame(X).to_csv(csv, header=False, index=False, float_format="%.6g")
        hp = {"k": str(a.k), "feature_dim": str(a.dim)}
        for kv in filter(None, a.hp.split(",")):
            k, v = kv.split("=", 1)
            hp[k] = v
        (root / "input/config/hyperparameters.json").write_text(json.dumps(hp))
        (root / "input/config/inputdataconfig.json").write_text(
            json.dumps({"train": {"ContentType": "text/csv", "TrainingInputMode": "File"}}))
        t0 = time.perf_counter()
        p = subprocess.run([a.kiln, "algo", "kmeans", "train", "--ml-root", str(root)], capture_output=True,
                           text=True, env={**os.environ, "SM_NUM_CPUS": str(a.threads)})
        kiln_total = time.perf_counter() - t0
        assert p.returncode == 0, p.stderr
        m = re.search(r"read in ([0-9.]+)s", p.stderr)
        read_s = float(m.group(1))
        fit_s = float(re.search(r"fit in ([0-9.]+)s", p.stderr).group(1))
        centers = np.array(json.loads((root / "model/kmeans-model.json").read_text())["centers"], dtype=np.float32)

        t0 = time.perf_counter()
        Xr = pd.read_csv(csv, header=None, dtype=np.float32).values
        sk_read = time.perf_counter() - t0
    with threadpool_limits(a.threads):
        t0 = time.perf_counter()
        km = KMeans(n_clusters=a.k, n_init=1, random_state=0).fit(Xr)
        sk_fit = time.perf_counter() - t0
    ki, si = inertia(X, centers), inertia(X, km.cluster_centers_.astype(np.float32))
    print(f"data: {a.rows} x {a.dim} blobs (sd {a.std}), k={a.k}, {a.threads} threads; kiln hyperparameters {hp}")
    print(f"{'':24}{'kiln':>12}{'sklearn':>12}{'ratio':>8}")
    print(f"{'inertia':24}{ki:12.6g}{si:12.6g}{ki / si:8.4f}")
    print(f"{'fit (s)':24}{fit_s:12.3f}{sk_fit:12.3f}{fit_s / sk_fit:8.3f}")
    print(f"{'read CSV + fit (s)':24}{read_s + fit_s:12.3f}{sk_read + sk_fit:12.3f}{(read_s + fit_s) / (sk_read + sk_fit):8.3f}")
    print(f"{'whole command (s)':24}{kiln_total:12.3f}")
    print(f"sklearn iterations: {km.n_iter_}")


if __name__ == "__main__":
    main()

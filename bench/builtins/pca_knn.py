"""kiln's built-in PCA and k-NN against scikit-learn's PCA and KNeighborsClassifier on the same
data and threads.

    cargo build --release -p kiln-algos --example algo     # `kiln algo` alone, in release mode
    python3 bench/builtins/pca_knn.py [--pca-rows 300000] [--pca-dim 100] [--components 10]
        [--knn-rows 100000] [--knn-test 10000] [--knn-dim 32] [--k 10] [--threads 2] [--kiln PATH]

PCA: rows of a Gaussian with a decaying spectrum, written as label-less CSV; `kiln algo pca train`
(regular and randomized modes) on a job directory, as the agent runs it, against sklearn's PCA
(its default solver, and svd_solver='randomized'), threadpoolctl-limited to --threads. Prints the
explained variance ratio of the kept components (computed by each library; kiln's also checked
against the data) and the fit times, the fastest of --repeat on each side (kiln's log figure;
sklearn's fit, CSV read excluded on both sides).

k-NN: overlapping blobs (sklearn.datasets.make_blobs), label first in CSV; a kiln job with a
`test` channel builds the index and predicts every test row (the log's build and prediction
figures); sklearn's KNeighborsClassifier (n_jobs=--threads) fits and predicts the same rows.
Prints test accuracy and time for kiln's exact (faiss.Flat) and IVF (faiss.IVFFlat) indexes.

Random Cut Forest (`--only rcf`): a correlated Gaussian bulk with 1% planted outliers; kiln's
anomaly scores (`kiln algo randomcutforest predict` on the trained model) against sklearn's
IsolationForest (same number of trees and samples per tree): AUC of the scores against the
planted labels, and train + score time."""
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
import sklearn
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[2]


def job(root, hp, channels):
    (root / "input/config").mkdir(parents=True, exist_ok=True)
    (root / "input/config/hyperparameters.json").write_text(json.dumps(hp))
    (root / "input/config/inputdataconfig.json").write_text(json.dumps(
        {c: {"ContentType": "text/csv", "TrainingInputMode": "File"} for c in channels}))


def run(a, algo, root):
    t0 = time.perf_counter()
    p = subprocess.run([a.kiln, "algo", algo, "train", "--ml-root", str(root)], capture_output=True, text=True,
                       env={**os.environ, "SM_NUM_CPUS": str(a.threads)})
    total = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr
    return p, total


def write_csv(path, M):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(M).to_csv(path, header=False, index=False, float_format="%.7g")


def bench_pca(a, tmp):
    rng = np.random.default_rng(0)
    d = a.pca_dim
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    scales = 10.0 * 0.8 ** np.arange(d) + 0.05
    X = (rng.normal(size=(a.pca_rows, d)) * scales @ basis.T + 3.0).astype(np.float32)
    root = tmp / "pca"
    write_csv(root / "input/data/train/data.csv", X)
    Xr = pd.read_csv(root / "input/data/train/data.csv", header=None, dtype=np.float32).values
    print(f"PCA: {a.pca_rows} x {d} rows, {a.components} components, {a.threads} threads "
          f"(sklearn {sklearn.__version__})")
    print(f"{'':34}{'kiln':>10}{'sklearn':>10}{'ratio':>8}")
    total_var = Xr.astype(np.float64).var(axis=0, ddof=1).sum()
    for mode, solver in (("regular", "auto"), ("randomized", "randomized")):
        job(root, {"feature_dim": str(d), "num_components": str(a.components), "mini_batch_size": "500",
                   "algorithm_mode": mode}, ["train"])
        fit_s = float("inf")
        for _ in range(a.repeat):
            p, _ = run(a, "pca", root)
            fit_s = min(fit_s, float(re.search(r"fit in ([0-9.]+)s", p.stderr).group(1)))
        model = json.loads((root / "model/pca-model.json").read_text())
        kiln_ratio = sum(model["explained_variance_ratio"])
        # Checked on the data: the variance of the projections over the total variance.
        comps = np.array(model["components"])
        proj = (Xr - np.array(model["mean"], dtype=np.float32)) @ comps.T.astype(np.float32)
        data_ratio = proj.astype(np.float64).var(axis=0, ddof=1).sum() / total_var
        sk_fit = float("inf")
        with threadpool_limits(a.threads):
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                sk = PCA(n_components=a.components, svd_solver=solver, random_state=0).fit(Xr)
                sk_fit = min(sk_fit, time.perf_counter() - t0)
        sk_ratio = float(sk.explained_variance_ratio_.sum())
        name = f"{mode} vs {getattr(sk, '_fit_svd_solver', solver)}"
        print(f"{name + ': explained var. ratio':34}{kiln_ratio:10.6f}{sk_ratio:10.6f}{kiln_ratio / sk_ratio:8.4f}"
              f"   (kiln's on the data: {data_ratio:.6f})")
        print(f"{name + ': fit (s)':34}{fit_s:10.3f}{sk_fit:10.3f}{fit_s / sk_fit:8.3f}")


def bench_knn(a, tmp):
    n, q = a.knn_rows, a.knn_test
    X, y = make_blobs(n_samples=n + q, n_features=a.knn_dim, centers=10, cluster_std=a.knn_std, random_state=1)
    X = X.astype(np.float32)
    Xtr, ytr, Xte, yte = X[:n], y[:n], X[n:], y[n:]
    root = tmp / "knn"
    write_csv(root / "input/data/train/data.csv", np.column_stack([ytr, Xtr]))
    write_csv(root / "input/data/test/data.csv", np.column_stack([yte, Xte]))
    with threadpool_limits(a.threads):
        t0 = time.perf_counter()
        clf = KNeighborsClassifier(n_neighbors=a.k, n_jobs=a.threads).fit(Xtr, ytr)
        sk_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        sk_pred = clf.predict(Xte)
        sk_pred_s = time.perf_counter() - t0
    sk_acc = float((sk_pred == yte).mean())
    sk_s = sk_fit + sk_pred_s
    print(f"k-NN: {n} train x {a.knn_dim}, {q} test rows, 10 classes (sd {a.knn_std}), k={a.k}, {a.threads} threads; "
          f"sklearn algorithm '{clf._fit_method}'")
    print(f"{'':34}{'kiln':>10}{'sklearn':>10}{'ratio':>8}")
    for index in ("faiss.Flat", "faiss.IVFFlat"):
        job(root, {"feature_dim": str(a.knn_dim), "k": str(a.k), "predictor_type": "classifier",
                   "sample_size": str(n), "index_type": index}, ["train", "test"])
        p, _ = run(a, "knn", root)
        build = float(re.search(r"built in ([0-9.]+)s", p.stderr).group(1))
        pred_s = float(re.search(r"predicted in ([0-9.]+)s", p.stderr).group(1))
        acc = float(re.search(r"test accuracy <score>=(\S+)", p.stdout).group(1))
        print(f"{index + ': test accuracy':34}{acc:10.4f}{sk_acc:10.4f}{acc / sk_acc:8.4f}")
        print(f"{index + ': build + predict (s)':34}{build + pred_s:10.3f}{sk_s:10.3f}{(build + pred_s) / sk_s:8.3f}"
              f"   (kiln build {build:.3f}s, predict {pred_s:.3f}s; sklearn fit {sk_fit:.3f}s, predict {sk_pred_s:.3f}s)")


def bench_rcf(a, tmp):
    rng = np.random.default_rng(2)
    d, n, n_out = 8, a.rcf_rows, a.rcf_rows // 100
    mix = rng.normal(size=(d, d))
    out = rng.normal(size=(n_out, d))
    out = out / np.linalg.norm(out, axis=1, keepdims=True) * rng.uniform(6, 10, size=(n_out, 1))
    X = np.vstack([rng.normal(size=(n, d)), out]) @ mix
    y = np.r_[np.zeros(n), np.ones(n_out)]
    X = X.astype(np.float32)
    root = tmp / "rcf"
    write_csv(root / "input/data/train/data.csv", X)
    job(root, {"feature_dim": str(d), "num_trees": "100", "num_samples_per_tree": "256"}, ["train"])
    t0 = time.perf_counter()
    run(a, "randomcutforest", root)
    p = subprocess.run([a.kiln, "algo", "randomcutforest", "predict", "--model", str(root / "model"), "--data",
                        str(root / "input/data/train/data.csv"), "--nthread", str(a.threads)],
                       capture_output=True, text=True)
    kiln_s = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr
    scores = np.array([float(v) for v in p.stdout.split()])
    t0 = time.perf_counter()
    iso = IsolationForest(n_estimators=100, max_samples=256, n_jobs=a.threads, random_state=0).fit(X)
    sk_scores = -iso.score_samples(X)
    sk_s = time.perf_counter() - t0
    ka, sa = roc_auc_score(y, scores), roc_auc_score(y, sk_scores)
    print(f"Random Cut Forest: {n + n_out} x {d} rows, {n_out} planted outliers, 100 trees x 256 samples, "
          f"{a.threads} threads; vs sklearn IsolationForest")
    print(f"{'':34}{'kiln':>10}{'sklearn':>10}{'ratio':>8}")
    print(f"{'AUC (planted outliers)':34}{ka:10.4f}{sa:10.4f}{ka / sa:8.4f}")
    print(f"{'train + score all rows (s)':34}{kiln_s:10.3f}{sk_s:10.3f}{kiln_s / sk_s:8.3f}   (kiln: two commands, "
          f"each reading the CSV)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pca-rows", type=int, default=300_000)
    ap.add_argument("--pca-dim", type=int, default=100)
    ap.add_argument("--components", type=int, default=10)
    ap.add_argument("--knn-rows", type=int, default=100_000)
    ap.add_argument("--knn-test", type=int, default=10_000)
    ap.add_argument("--knn-dim", type=int, default=32)
    ap.add_argument("--knn-std", type=float, default=8.0, help="blob spread (larger: more overlap, lower accuracy)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="PCA fits per side; the fastest counts (a shared machine)")
    ap.add_argument("--kiln", default=str(REPO / "target" / "release" / "examples" / "algo"),
                    help="the kiln binary, or the release `algo` example (both take `algo NAME train`)")
    ap.add_argument("--rcf-rows", type=int, default=100_000)
    ap.add_argument("--only", choices=["pca", "knn", "rcf"], help="run one of the three")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if a.only in (None, "pca"):
            bench_pca(a, Path(tmp))
        if a.only in (None, "knn"):
            bench_knn(a, Path(tmp))
        if a.only in (None, "rcf"):
            bench_rcf(a, Path(tmp))


if __name__ == "__main__":
    main()

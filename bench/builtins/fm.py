"""kiln's built-in Factorization Machines against scikit-learn on one-hot flights data.

    cargo build --release -p kiln-algos --example algo     # `kiln algo` alone, in release mode
    python3 bench/builtins/fm.py [--threads 2] [--kiln PATH] [--hp k=v,k=v]

Data: ../shared/data/flights (262k train rows, 65k test rows, label first: delayed or not). Its
nine discrete columns (month, day of month, weekday, departure hour and the columns of 16, 3,
104, 3,749 and 4,010 distinct codes) are one-hot encoded on the train rows' codes (test codes
not seen in training get no column): about 8,000 sparse columns, nine non-zeros a row, the shape
of data Factorization Machines is for. kiln reads it as the SDK writes it
(`write_spmatrix_to_sparse_tensor`), from a job directory, as the agent runs it.

Baselines on the same columns, threadpoolctl-limited to --threads:
- LogisticRegression (lbfgs, C=1) on the one-hot columns: the linear model FM extends;
- the same on the one-hot columns plus the one-hot crosses of every pair of the seven
  small-cardinality columns (month, day, weekday, hour, and the 16-, 3- and 104-code columns):
  pairwise interactions spelled out by hand, which FM learns from factors instead.

Printed: test AUC and accuracy (threshold 0.5) and fit time side by side, with the ratio
kiln / sklearn. kiln's fit time is its log's figure (after reading the data)."""
import argparse
import io
import json
import os
import re
import subprocess
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "flights"
DISCRETE = [1, 2, 3, 6, 8, 11, 12, 9, 10]
SMALL = [1, 2, 3, 6, 8, 11, 12]


def one_hot(train, test, columns):
    """CSR one-hot of `columns` (lists of codes per row), the vocabulary from `train`."""
    blocks, width = [], 0
    for col_train, col_test in columns:
        codes = {c: i for i, c in enumerate(np.unique(col_train))}
        blocks.append((codes, width))
        width += len(codes)

    def encode(cols):
        n = len(cols[0])
        rows, idx = [], []
        for (codes, base), c in zip(blocks, cols):
            j = np.array([codes.get(v, -1) for v in c])
            keep = j >= 0
            rows.append(np.arange(n)[keep])
            idx.append(base + j[keep])
        r, j = np.concatenate(rows), np.concatenate(idx)
        return sparse.csr_matrix((np.ones(len(r), dtype=np.float32), (r, j)), shape=(n, width))

    return encode([c for c, _ in columns]), encode([c for _, c in columns]), width


def run_kiln(a, X, y, Xt, yt, hp):
    from sagemaker.serializer_utils import write_spmatrix_to_sparse_tensor
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "input/config").mkdir(parents=True)
        for ch, (A, b) in (("train", (X, y)), ("test", (Xt, yt))):
            (root / f"input/data/{ch}").mkdir(parents=True)
            buf = io.BytesIO()
            write_spmatrix_to_sparse_tensor(buf, A, b)
            (root / f"input/data/{ch}/data.rec").write_bytes(buf.getvalue())
        (root / "input/config/hyperparameters.json").write_text(json.dumps(hp))
        (root / "input/config/inputdataconfig.json").write_text(json.dumps(
            {ch: {"TrainingInputMode": "File"} for ch in ("train", "test")}))
        t0 = time.perf_counter()
        p = subprocess.run([a.kiln, "algo", "factorization-machines", "train", "--ml-root", str(root)],
                           capture_output=True, text=True, env={**os.environ, "SM_NUM_CPUS": str(a.threads)})
        total = time.perf_counter() - t0
        assert p.returncode == 0, p.stderr
        fit_s = float(re.search(r"fit in ([0-9.]+)s", p.stderr).group(1))
        model = json.loads((root / "model/factorization-machines-model.json").read_text())
        metrics = dict(re.findall(r"#quality_metric: host=\S+, test (\S+) <\w+>=(\S+)", p.stdout))
    return model, fit_s, total, metrics


def fm_scores(model, X):
    w, V = np.array(model["w"]), np.array(model["V"])
    XV = X @ V
    pair = 0.5 * ((XV ** 2).sum(axis=1) - (X.multiply(X) @ (V ** 2)).sum(axis=1))
    z = model["w0"] + X @ w + np.asarray(pair).ravel()
    return 1 / (1 + np.exp(-z))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kiln", default=str(REPO / "target" / "release" / "examples" / "algo"),
                    help="the kiln binary, or the release `algo` example (both take `algo factorization-machines train`)")
    # Tried on this data: without factors_wd more epochs overfit the 3,749- and 4,010-code columns
    # (AUC 0.70 at 10 epochs); factors_wd 0.0003-0.001 gives 0.754-0.757 from 10 epochs on.
    ap.add_argument("--hp", default="num_factors=16,epochs=10,mini_batch_size=500,linear_lr=0.01,factors_lr=0.01,"
                                    "factors_init_sigma=0.05,factors_wd=0.001",
                    help="kiln hyperparameters besides feature_dim and predictor_type, k=v,k=v")
    a = ap.parse_args()
    train = pd.read_csv(DATA / "train.csv", header=None).to_numpy()
    test = pd.read_csv(DATA / "test.csv", header=None).to_numpy()
    y, yt = train[:, 0].astype(np.float32), test[:, 0].astype(np.float32)
    X, Xt, dim = one_hot(train, test, [(train[:, c], test[:, c]) for c in DISCRETE])
    crosses = [(train[:, i] * 10_000 + train[:, j], test[:, i] * 10_000 + test[:, j]) for i, j in combinations(SMALL, 2)]
    Xc, Xct, cdim = one_hot(train, test, crosses)
    Xx, Xxt = sparse.hstack([X, Xc]).tocsr(), sparse.hstack([Xt, Xct]).tocsr()
    hp = {"feature_dim": str(dim), "predictor_type": "binary_classifier",
          **dict(kv.split("=", 1) for kv in filter(None, a.hp.split(",")))}
    print(f"data: flights, {X.shape[0]} train x {dim} one-hot columns ({X.nnz / X.shape[0]:.0f} non-zeros a row), "
          f"{Xt.shape[0]} test rows; crosses add {cdim} columns; {a.threads} threads; kiln {hp}")

    model, fit_s, total, metrics = run_kiln(a, X, y, Xt, yt, hp)
    p = fm_scores(model, Xt)
    kiln_auc, kiln_acc = roc_auc_score(yt, p), ((p >= 0.5) == yt).mean()
    assert abs(kiln_acc - float(metrics["binary_classification_accuracy"])) < 1e-6, metrics
    print(f"{'':44}{'kiln FM':>10}{'sklearn':>10}{'ratio':>8}")
    for name, (A, At) in (("LogisticRegression, one-hot", (X, Xt)),
                          ("LogisticRegression, one-hot + crosses", (Xx, Xxt))):
        with threadpool_limits(a.threads):
            t0 = time.perf_counter()
            lr = LogisticRegression(C=1.0, max_iter=1000).fit(A, y)
            sk_fit = time.perf_counter() - t0
        q = lr.predict_proba(At)[:, 1]
        sk_auc, sk_acc = roc_auc_score(yt, q), ((q >= 0.5) == yt).mean()
        print(f"vs {name}")
        print(f"{'  test AUC':44}{kiln_auc:10.4f}{sk_auc:10.4f}{kiln_auc / sk_auc:8.4f}")
        print(f"{'  test accuracy':44}{kiln_acc:10.4f}{sk_acc:10.4f}{kiln_acc / sk_acc:8.4f}")
        print(f"{'  fit (s)':44}{fit_s:10.3f}{sk_fit:10.3f}{fit_s / sk_fit:8.3f}")
    print(f"  kiln: test cross-entropy {float(metrics['binary_classification_cross_entropy']):.4f}; "
          f"whole command (reading the RecordIO included) {total:.2f}s")


if __name__ == "__main__":
    main()

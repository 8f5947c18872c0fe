"""kiln's built-in Linear Learner against scikit-learn on the same data and threads.

    cargo build --release -p kiln-algos --example algo     # `kiln algo` alone, in release mode
    python3 bench/builtins/linear_learner.py [--rows 200000] [--dim 50] [--threads 2] [--kiln PATH]

Makes a synthetic problem (Gaussian features of different scales and offsets, a random weight
vector; binary labels from the sign of w.x plus logistic noise, regression targets w.x plus
Gaussian noise), writes it as CSV with the label first, runs `kiln algo linear-learner train` on
a job directory (as the agent runs it) and scikit-learn on the same rows (threadpoolctl-limited to
--threads):

- binary_classifier vs LogisticRegression (lbfgs, C=1, on StandardScaler'd data, as a user
  would) and SGDClassifier (log_loss, on the same scaled data): test accuracy;
- regressor vs Ridge (alpha=1): test mse.

Quality is computed the same way for every model from its weights (kiln's model file holds them
in the original feature space). Times: kiln's fit (its log's figure, after reading the CSV)
against sklearn's scaler + fit."""
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
from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[2]


def make(rows, dim, seed):
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.1, 10, size=dim)
    offset = rng.uniform(-5, 5, size=dim)
    w = rng.normal(size=dim) / scale
    def draw(n):
        X = (rng.normal(size=(n, dim)) * scale + offset).astype(np.float32)
        z = (X - offset) @ w
        return X, z
    return draw


def run_kiln(a, kind, X, y, Xt, yt, hp):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "input/config").mkdir(parents=True)
        for ch, (A, b) in (("train", (X, y)), ("test", (Xt, yt))):
            (root / f"input/data/{ch}").mkdir(parents=True)
            pd.DataFrame(np.column_stack([b, A])).to_csv(root / f"input/data/{ch}/data.csv", header=False,
                                                         index=False, float_format="%.7g")
        (root / "input/config/hyperparameters.json").write_text(json.dumps(hp))
        (root / "input/config/inputdataconfig.json").write_text(json.dumps(
            {ch: {"ContentType": "text/csv", "TrainingInputMode": "File"} for ch in ("train", "test")}))
        t0 = time.perf_counter()
        p = subprocess.run([a.kiln, "algo", "linear-learner", "train", "--ml-root", str(root)], capture_output=True,
                           text=True, env={**os.environ, "SM_NUM_CPUS": str(a.threads)})
        total = time.perf_counter() - t0
        assert p.returncode == 0, p.stderr
        fit_s = float(re.search(r"fit in ([0-9.]+)s", p.stderr).group(1))
        epochs = re.search(r"fit in [0-9.]+s; (.*)", p.stderr).group(1)
        model = json.loads((root / "model/linear-learner-model.json").read_text())
    return model, fit_s, total, epochs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kiln", default=str(REPO / "target" / "release" / "examples" / "algo"),
                    help="the kiln binary, or the release `algo` example (both take `algo linear-learner train`)")
    ap.add_argument("--hp", default="", help="extra kiln hyperparameters, k=v,k=v")
    a = ap.parse_args()
    extra = dict(kv.split("=", 1) for kv in filter(None, a.hp.split(",")))
    draw = make(a.rows, a.dim, 0)
    rng = np.random.default_rng(1)
    print(f"data: {a.rows} x {a.dim} train rows, {a.rows // 4} test rows; {a.threads} threads; kiln extra {extra}")
    print(f"{'':34}{'kiln':>10}{'sklearn':>10}{'ratio':>8}")

    # Binary: logistic noise makes the Bayes accuracy about 90%.
    X, z = draw(a.rows)
    Xt, zt = draw(a.rows // 4)
    y = (z + rng.logistic(scale=0.5, size=len(z)) > 0).astype(np.float32)
    yt = (zt + rng.logistic(scale=0.5, size=len(zt)) > 0).astype(np.float32)
    hp = {"predictor_type": "binary_classifier", "feature_dim": str(a.dim), **extra}
    model, fit_s, total, epochs = run_kiln(a, "binary", X, y, Xt, yt, hp)
    w, b, t = np.array(model["weights"][0]), model["bias"][0], model["threshold"]
    kiln_acc = ((1 / (1 + np.exp(-(Xt @ w + b))) >= t) == yt).mean()
    for name, est in (("LogisticRegression", LogisticRegression(C=1.0, max_iter=1000)),
                      ("SGDClassifier(log_loss)", SGDClassifier(loss="log_loss", random_state=0))):
        with threadpool_limits(a.threads):
            t0 = time.perf_counter()
            pipe = make_pipeline(StandardScaler(), est).fit(X, y)
            sk_fit = time.perf_counter() - t0
        sk_acc = (pipe.predict(Xt) == yt).mean()
        print(f"{'binary vs ' + name:34}")
        print(f"{'  test accuracy':34}{kiln_acc:10.4f}{sk_acc:10.4f}{kiln_acc / sk_acc:8.4f}")
        print(f"{'  fit (s)':34}{fit_s:10.3f}{sk_fit:10.3f}{fit_s / sk_fit:8.3f}")
    print(f"  kiln: {epochs}; whole command {total:.2f}s")

    # Regressor.
    X, z = draw(a.rows)
    Xt, zt = draw(a.rows // 4)
    y = (z + rng.normal(scale=1.0, size=len(z))).astype(np.float32)
    yt = (zt + rng.normal(scale=1.0, size=len(zt))).astype(np.float32)
    hp = {"predictor_type": "regressor", "feature_dim": str(a.dim), **extra}
    model, fit_s, total, epochs = run_kiln(a, "regressor", X, y, Xt, yt, hp)
    w, b = np.array(model["weights"][0]), model["bias"][0]
    kiln_mse = np.mean((Xt @ w + b - yt) ** 2)
    with threadpool_limits(a.threads):
        t0 = time.perf_counter()
        ridge = Ridge(alpha=1.0).fit(X, y)
        sk_fit = time.perf_counter() - t0
    sk_mse = np.mean((ridge.predict(Xt) - yt) ** 2)
    print(f"{'regressor vs Ridge':34}")
    print(f"{'  test mse':34}{kiln_mse:10.4f}{sk_mse:10.4f}{kiln_mse / sk_mse:8.4f}")
    print(f"{'  fit (s)':34}{fit_s:10.3f}{sk_fit:10.3f}{fit_s / sk_fit:8.3f}")
    print(f"  kiln: {epochs}; whole command {total:.2f}s")


if __name__ == "__main__":
    main()

"""The built-in XGBoost (`kiln algo xgboost`) against the real xgboost package: model files load in
xgboost and predict what kiln predicts, accuracy matches xgboost's, and the SageMaker container
contract (log lines, failure file, exit codes, channels, early stopping) holds."""
import re
import subprocess

import numpy as np
import pytest
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from conftest import SHARED, kiln_bin, kiln_predict, load_csv, make_job, run_train, write_csv, xgb_load

TITANIC = SHARED / "data" / "titanic"
FLIGHTS = SHARED / "data" / "flights"
LINE = re.compile(r"^\[\d+\](\t(train|validation)-[a-z0-9@.\-]+:-?(\d+\.\d{5}|nan|inf))+$")


def xgb_train(X, y, params, rounds, w=None):
    p = {"tree_method": "hist", "nthread": 2, **params}
    return xgb.train(p, xgb.DMatrix(X, label=y, weight=w), rounds)


def test_titanic_binary_predictions_and_auc_match_xgboost(tmp_path):
    hp = {"num_round": 100, "objective": "binary:logistic", "eta": 0.1, "max_depth": 6}
    job = run_train(make_job(tmp_path, hp, {"train": TITANIC / "train.csv"}))
    assert job.proc.returncode == 0, job.proc.stderr
    Xte, yte = load_csv(TITANIC / "test.csv")
    ours = kiln_predict(job.model, TITANIC / "test.csv", "--has-label")[:, 0]
    theirs = xgb_load(job.model).predict(xgb.DMatrix(Xte))
    assert np.abs(ours - theirs).max() < 1e-5
    Xtr, ytr = load_csv(TITANIC / "train.csv")
    ref = xgb_train(Xtr, ytr, {"objective": "binary:logistic", "eta": 0.1, "max_depth": 6}, 100)
    auc_kiln = roc_auc_score(yte, ours)
    auc_xgb = roc_auc_score(yte, ref.predict(xgb.DMatrix(Xte)))
    assert auc_kiln >= auc_xgb - 0.005, (auc_kiln, auc_xgb)


def test_flights_auc_matches_xgboost_and_logs_each_round(tmp_path):
    hp = {"num_round": 100, "objective": "binary:logistic", "eta": 0.1, "max_depth": 6,
          "eval_metric": "auc", "tree_method": "hist"}
    job = run_train(make_job(tmp_path, hp, {"train": FLIGHTS / "train.csv", "validation": FLIGHTS / "test.csv"}))
    assert job.proc.returncode == 0, job.proc.stderr
    lines = job.lines()
    assert len(lines) == 100
    for i, l in enumerate(lines):
        assert l.startswith(f"[{i}]\ttrain-auc:") and "\tvalidation-auc:" in l, l
        assert LINE.match(l), l
    Xte, yte = load_csv(FLIGHTS / "test.csv")
    booster = xgb_load(job.model)
    theirs = booster.predict(xgb.DMatrix(Xte))
    ours = kiln_predict(job.model, FLIGHTS / "test.csv", "--has-label")[:, 0]
    assert np.abs(ours - theirs).max() < 1e-5
    auc_kiln = roc_auc_score(yte, theirs)
    # The last logged validation AUC is the model's test AUC.
    assert abs(float(lines[-1].split("validation-auc:")[1]) - auc_kiln) < 1e-5
    Xtr, ytr = load_csv(FLIGHTS / "train.csv")
    ref = xgb_train(Xtr, ytr, {"objective": "binary:logistic", "eta": 0.1, "max_depth": 6}, 100)
    auc_xgb = roc_auc_score(yte, ref.predict(xgb.DMatrix(Xte)))
    assert auc_kiln >= auc_xgb - 0.005, (auc_kiln, auc_xgb)
    # Feature importance works because gain/cover are real values.
    gain = booster.get_score(importance_type="gain")
    assert len(gain) > 5 and all(v > 0 for v in gain.values())


def test_regression_predictions_match_xgboost(tmp_path):
    X, y = load_csv(FLIGHTS / "train_regression.csv")
    X, y = X[:30000], y[:30000]
    write_csv(tmp_path / "reg.csv", X, y)
    hp = {"num_round": 30, "objective": "reg:squarederror", "eta": 0.3, "max_depth": 5}
    job = run_train(make_job(tmp_path / "job", hp, {"train": tmp_path / "reg.csv"}))
    assert job.proc.returncode == 0, job.proc.stderr
    Xte, yte = load_csv(FLIGHTS / "test_regression.csv")
    write_csv(tmp_path / "te.csv", Xte[:5000])
    ours = kiln_predict(job.model, tmp_path / "te.csv")[:, 0]
    theirs = xgb_load(job.model).predict(xgb.DMatrix(Xte[:5000]))
    assert np.abs(ours - theirs).max() < 1e-3 * max(1.0, np.abs(theirs).max()) * 1e-2
    ref = xgb_train(X, y, {"objective": "reg:squarederror", "eta": 0.3, "max_depth": 5}, 30)
    rmse = lambda p: float(np.sqrt(np.mean((p - yte[:5000]) ** 2)))
    assert rmse(ours) <= rmse(ref.predict(xgb.DMatrix(Xte[:5000]))) * 1.02


def multiclass_data(n=3000):
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n, n_features=8, n_informative=5, n_classes=3, random_state=1)
    X = X.astype(np.float32)
    X[::17, 2] = np.nan
    return X, y


@pytest.mark.parametrize("objective", ["multi:softprob", "multi:softmax"])
def test_multiclass_predictions_match_xgboost(tmp_path, objective):
    X, y = multiclass_data()
    write_csv(tmp_path / "tr.csv", X[:2500], y[:2500])
    write_csv(tmp_path / "te.csv", X[2500:])
    hp = {"num_round": 20, "objective": objective, "num_class": 3, "max_depth": 4}
    job = run_train(make_job(tmp_path / "job", hp, {"train": tmp_path / "tr.csv"}))
    assert job.proc.returncode == 0, job.proc.stderr
    ours = kiln_predict(job.model, tmp_path / "te.csv")
    theirs = xgb_load(job.model).predict(xgb.DMatrix(X[2500:]))
    if objective == "multi:softprob":
        assert ours.shape == (500, 3)
        assert np.abs(ours - theirs).max() < 1e-5
    else:
        assert np.array_equal(ours[:, 0], theirs)
    assert (job.lines()[0].split("\t")[1]).startswith("train-mlogloss:" if objective == "multi:softprob" else "train-merror:")


OBJECTIVES = [
    ("binary:logistic", "bin", {}),
    ("binary:logitraw", "bin", {}),
    ("binary:hinge", "bin", {}),
    ("reg:logistic", "bin", {}),
    ("reg:squarederror", "reg", {}),
    ("reg:linear", "reg", {}),
    ("reg:absoluteerror", "reg", {}),
    ("reg:pseudohubererror", "reg", {}),
    ("reg:gamma", "pos", {}),
    ("reg:tweedie", "pos", {"tweedie_variance_power": 1.3}),
    ("count:poisson", "count", {}),
]


@pytest.mark.parametrize("objective,kind,extra", OBJECTIVES)
def test_every_objective_loads_in_xgboost_with_identical_predictions(tmp_path, objective, kind, extra):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 5)).astype(np.float32)
    X[rng.random(2000) < 0.1, 1] = np.nan
    z = X[:, 0] + 0.5 * np.nan_to_num(X[:, 1]) + 0.3 * rng.normal(size=2000)
    y = {"bin": (z > 0).astype(float), "reg": 3 * z + 1, "pos": np.exp(z / 2),
         "count": rng.poisson(np.exp(z / 2))}[kind]
    write_csv(tmp_path / "tr.csv", X, y)
    write_csv(tmp_path / "te.csv", X[:500])
    hp = {"num_round": 15, "objective": objective, "max_depth": 4, **extra}
    job = run_train(make_job(tmp_path / "job", hp, {"train": tmp_path / "tr.csv"}))
    assert job.proc.returncode == 0, job.proc.stderr
    ours = kiln_predict(job.model, tmp_path / "te.csv")[:, 0]
    theirs = xgb_load(job.model).predict(xgb.DMatrix(X[:500]))
    assert np.abs(ours - theirs).max() <= 1e-5 * max(1.0, float(np.abs(theirs).max())), objective
    assert len(job.lines()) == 15


def test_log_lines_match_sagemaker_metric_regexes(tmp_path):
    hp = {"num_round": 5, "objective": "binary:logistic", "eval_metric": "logloss,auc,error@0.6"}
    job = run_train(make_job(tmp_path, hp, {"train": TITANIC / "train.csv", "validation": TITANIC / "test.csv"}))
    assert job.proc.returncode == 0, job.proc.stderr
    lines = job.lines()
    assert len(lines) == 5
    names = [f.split(":")[0] for f in lines[0].split("\t")[1:]]
    assert names == ["train-logloss", "train-auc", "train-error@0.6",
                     "validation-logloss", "validation-auc", "validation-error@0.6"]
    for l in lines:
        assert LINE.match(l), l
        escaped = l.replace("\t", "#011")  # what CloudWatch shows
        for data in ("train", "validation"):
            for m in ("logloss", "auc"):
                rx = (r".*\[[0-9]+\].*#011" + data + "-" + m +
                      r":([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*")
                got = re.search(rx, escaped)
                assert got, (rx, escaped)
                assert float(got.group(1)) == float(l.split(f"{data}-{m}:")[1].split("\t")[0])


def test_early_stopping_keeps_best_iteration(tmp_path):
    hp = {"num_round": 500, "objective": "binary:logistic", "eta": 0.5, "max_depth": 6,
          "early_stopping_rounds": 5, "eval_metric": "logloss", "_tuning_objective_metric": "validation:auc"}
    job = run_train(make_job(tmp_path, hp, {"train": TITANIC / "train.csv", "validation": TITANIC / "test.csv"}))
    assert job.proc.returncode == 0, job.proc.stderr
    lines = job.lines()
    assert len(lines) < 500
    # The tuning metric is printed (after eval_metric) and is the early-stopping metric.
    assert "\tvalidation-auc:" in lines[0] and lines[0].index("validation-logloss") < lines[0].index("validation-auc")
    aucs = [float(l.split("validation-auc:")[1].split("\t")[0]) for l in lines]
    best = int(np.argmax(aucs))
    assert len(lines) == best + 1 + 5
    b = xgb_load(job.model)
    assert b.num_boosted_rounds() == best + 1
    Xte, yte = load_csv(TITANIC / "test.csv")
    assert abs(roc_auc_score(yte, b.predict(xgb.DMatrix(Xte))) - aucs[best]) < 1e-5


@pytest.mark.parametrize("hp,needle", [
    ({"num_round": 10, "eta": 1.5}, "Hyperparameter 'eta': value '1.5' is out of range [0, 1]"),
    ({"num_round": 10, "subsample": 0}, "Hyperparameter 'subsample': value '0' is out of range (0, 1]"),
    ({"num_round": 10, "max_depht": 3}, "Hyperparameter 'max_depht' is not recognized"),
    ({"eta": 0.1}, "Hyperparameter 'num_round' is required"),
    ({"num_round": "ten"}, "Hyperparameter 'num_round': value 'ten' is not an integer"),
    ({"num_round": 10, "objective": "multi:softprob"}, "num_class"),
    ({"num_round": 10, "objective": "binary:logistic", "eval_metric": "ndcg"}, "'ndcg'"),
])
def test_bad_hyperparameters_fail_with_clear_message(tmp_path, hp, needle):
    job = run_train(make_job(tmp_path, hp, {"train": TITANIC / "train.csv"}))
    assert job.proc.returncode == 1
    assert job.failure is not None and needle in job.failure, job.failure
    assert not job.model.exists()


def test_malformed_data_names_line_and_field(tmp_path):
    text = "1,2.0,3\n0,,4\n1,abc,5\n"
    job = run_train(make_job(tmp_path, {"num_round": 3}, {"train": text}))
    assert job.proc.returncode == 1
    assert "channel 'train'" in job.failure and "line 3: could not parse field 2 ('abc') as a number" in job.failure


def test_ragged_rows_and_header_are_reported(tmp_path):
    job = run_train(make_job(tmp_path / "a", {"num_round": 3}, {"train": "1,2,3\n0,1\n"}))
    assert job.proc.returncode == 1 and "line 2" in job.failure
    job = run_train(make_job(tmp_path / "b", {"num_round": 3}, {"train": "label,x\n1,2\n"}))
    assert job.proc.returncode == 1 and "header" in job.failure


def test_extraneous_channel_and_missing_train(tmp_path):
    job = run_train(make_job(tmp_path / "a", {"num_round": 3}, {"train": "1,2\n0,3\n", "test": "1,2\n"}))
    assert job.proc.returncode == 1 and "Extraneous channel found: test" in job.failure
    job = run_train(make_job(tmp_path / "b", {"num_round": 3}, {"validation": "1,2\n0,3\n"}))
    assert job.proc.returncode == 1 and "channel 'train' is required" in job.failure


def test_missing_content_type_means_libsvm(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(800, 4)).astype(np.float32)
    y = (X[:, 0] - X[:, 2] > 0).astype(int)
    lines = []
    for xi, yi in zip(X, y):
        # sparse rows: feature 3 absent in some rows (missing, as in xgboost)
        toks = [f"{j}:{float(v)!r}" for j, v in enumerate(xi) if not (j == 3 and v > 0.5)]
        lines.append(f"{yi} " + " ".join(toks))
    text = "\n".join(lines) + "\n"
    job = run_train(make_job(tmp_path, {"num_round": 10, "objective": "binary:logistic"},
                             {"train": text}, content_type=None))
    assert job.proc.returncode == 0, job.failure
    (tmp_path / "te.libsvm").write_text(text)
    ours = kiln_predict(job.model, tmp_path / "te.libsvm")[:, 0]
    Xm = X.copy()
    Xm[(Xm[:, 3] > 0.5), 3] = np.nan
    theirs = xgb_load(job.model).predict(xgb.DMatrix(Xm))
    assert np.abs(ours - theirs).max() < 1e-5
    # CSV sent without a ContentType is rejected with a hint.
    job = run_train(make_job(tmp_path / "csv", {"num_round": 3}, {"train": "1,2,3\n0,4,5\n"}, content_type=None))
    assert job.proc.returncode == 1 and "text/csv" in job.failure


def test_csv_weights_and_env_overrides(tmp_path):
    X, y = load_csv(TITANIC / "train.csv")
    w = np.where(y == 1, 3.0, 1.0)
    write_csv(tmp_path / "w.csv", X, y, w)
    data = tmp_path / "elsewhere"
    data.mkdir()
    (data / "part-0.csv").write_bytes((tmp_path / "w.csv").read_bytes())
    hp = {"num_round": 20, "objective": "binary:logistic", "csv_weights": 1}
    job = make_job(tmp_path / "job", hp, {"train": "unused-placeholder\n"})
    model_dir = tmp_path / "models"
    job = run_train(job, env={"SM_CHANNEL_TRAIN": str(data), "SM_MODEL_DIR": str(model_dir)})
    assert job.proc.returncode == 0, job.proc.stderr
    b = xgb_load(model_dir / "xgboost-model")
    p = b.predict(xgb.DMatrix(X))
    ref = xgb_train(X, y, {"objective": "binary:logistic"}, 20, w=w)
    # Up-weighting survivors moves predictions up as it does in xgboost.
    assert abs(p.mean() - ref.predict(xgb.DMatrix(X)).mean()) < 0.03


def test_help_and_unknown_command():
    p = subprocess.run([str(kiln_bin()), "algo", "xgboost", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "train" in p.stdout
    p = subprocess.run([str(kiln_bin()), "algo", "nope", "train"], capture_output=True, text=True)
    assert p.returncode != 0 and "unknown algorithm 'nope'" in p.stderr


def test_lossguide_matches_xgboost_predictions_and_limits_leaves(tmp_path):
    hp = {"num_round": 30, "objective": "binary:logistic", "eta": 0.1, "grow_policy": "lossguide",
          "max_leaves": 15, "max_depth": 0, "eval_metric": "auc"}
    job = run_train(make_job(tmp_path, hp, {"train": FLIGHTS / "test.csv"}))
    assert job.proc.returncode == 0, job.proc.stderr
    b = xgb_load(job.model)
    leaves = b.trees_to_dataframe().groupby("Tree")["Feature"].apply(lambda f: (f == "Leaf").sum())
    assert leaves.max() == 15
    Xte, _ = load_csv(FLIGHTS / "test.csv")
    ours = kiln_predict(job.model, FLIGHTS / "test.csv", "--has-label")[:, 0]
    assert np.abs(ours - b.predict(xgb.DMatrix(Xte))).max() < 1e-5


def test_gzip_channel_files(tmp_path):
    import gzip

    d = tmp_path / "gz"
    d.mkdir()
    with gzip.open(d / "train.csv.gz", "wb") as f:
        f.write((TITANIC / "train.csv").read_bytes())
    hp = {"num_round": 5, "objective": "binary:logistic"}
    job = run_train(make_job(tmp_path / "job", hp, {"train": d / "train.csv.gz"}))
    assert job.proc.returncode == 0, job.proc.stderr
    n = sum(1 for l in (TITANIC / "train.csv").read_text().splitlines() if l.strip())
    assert f"train {n} rows" in job.proc.stderr, job.proc.stderr


CROSS_CHECK = r'''
import sys, warnings, numpy as np, xgboost as xgb
warnings.simplefilter("ignore")
X = np.load(sys.argv[1])
for model, preds in zip(sys.argv[2::2], sys.argv[3::2]):
    p = xgb.Booster(model_file=model).predict(xgb.DMatrix(X))
    k = np.load(preds)
    k = k[:, 0] if p.ndim == 1 else k
    d = float(np.abs(p - k).max()) / max(1.0, float(np.abs(p).max()))
    assert d < 1e-5, (xgb.__version__, model, d)
print("ok", xgb.__version__)
'''


@pytest.mark.skipif(not __import__("os").environ.get("KILN_XGB_PYTHONS"),
                    reason="set KILN_XGB_PYTHONS to python executables with other xgboost versions "
                           "(scripts/test.sh uses the venvs scripts/install-deps.sh makes)")
def test_models_load_in_other_xgboost_versions(tmp_path):
    """kiln's model files give kiln's predictions in xgboost 1.7 and 2.x too (every objective)."""
    import os

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 5)).astype(np.float32)
    X[rng.random(1500) < 0.1, 1] = np.nan
    z = X[:, 0] + 0.5 * np.nan_to_num(X[:, 1]) + 0.3 * rng.normal(size=1500)
    ys = {"bin": (z > 0).astype(float), "reg": 3 * z + 1, "pos": np.exp(z / 2),
          "count": rng.poisson(np.exp(z / 2)), "multi": np.digitize(z, [-0.5, 0.5])}
    cases = [(o, k, e) for o, k, e in OBJECTIVES] + [("multi:softprob", "multi", {"num_class": 3}),
                                                      ("multi:softmax", "multi", {"num_class": 3})]
    write_csv(tmp_path / "te.csv", X[:300])
    np.save(tmp_path / "X.npy", X[:300])
    args = []
    for i, (obj, kind, extra) in enumerate(cases):
        write_csv(tmp_path / f"tr{i}.csv", X, ys[kind])
        job = run_train(make_job(tmp_path / f"job{i}", {"num_round": 8, "objective": obj, "max_depth": 4, **extra},
                                 {"train": tmp_path / f"tr{i}.csv"}))
        assert job.proc.returncode == 0, job.proc.stderr
        np.save(tmp_path / f"k{i}.npy", kiln_predict(job.model, tmp_path / "te.csv"))
        args += [str(job.model), str(tmp_path / f"k{i}.npy")]
    for py in os.environ["KILN_XGB_PYTHONS"].split(":"):
        p = subprocess.run([py, "-c", CROSS_CHECK, str(tmp_path / "X.npy"), *args], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]


def test_one_hot_libsvm_splits_present_from_missing_as_xgboost(tmp_path):
    """Sparse one-hot data (libsvm lists only the 1s; the rest is missing): a column's only split is
    present vs missing. kiln finds it, as xgboost does, and xgboost loads the model (the threshold of
    such a split is f32::MAX) with the same predictions."""
    rng = np.random.default_rng(11)
    n, k = 3000, 12
    cat = rng.integers(0, k, size=(n, 3))
    logit = np.array([1.5, -1.0, 0.5, -2.0, 0, 0, 1.0, 0, -0.5, 0, 2.0, -1.5])
    y = (rng.random(n) < 1 / (1 + np.exp(-(logit[cat[:, 0]] + 0.5 * logit[cat[:, 1]])))).astype(int)
    lines = [f"{yi} " + " ".join(f"{j * k + c}:1" for j, c in enumerate(row)) for row, yi in zip(cat, y)]
    text = "\n".join(lines) + "\n"
    job = run_train(make_job(tmp_path, {"num_round": 30, "objective": "binary:logistic", "max_depth": 4},
                             {"train": text}, content_type="text/libsvm"))
    assert job.proc.returncode == 0, job.failure
    (tmp_path / "all.libsvm").write_text(text)
    ours = kiln_predict(job.model, tmp_path / "all.libsvm")[:, 0]
    X = np.full((n, 3 * k), np.nan, dtype=np.float32)
    for i, row in enumerate(cat):
        X[i, [j * k + c for j, c in enumerate(row)]] = 1.0
    theirs = xgb_load(job.model).predict(xgb.DMatrix(X))
    assert np.abs(ours - theirs).max() < 1e-5
    ref = xgb_train(X, y, {"objective": "binary:logistic", "max_depth": 4}, 30)
    auc_kiln, auc_xgb = roc_auc_score(y, ours), roc_auc_score(y, ref.predict(xgb.DMatrix(X)))
    assert auc_kiln >= auc_xgb - 0.005 and auc_kiln > 0.7, (auc_kiln, auc_xgb)

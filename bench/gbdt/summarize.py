#!/usr/bin/env python3
"""Summarize bench/out/gbdt/results.jsonl (written by run.sh): min over repetitions per
(data set, tool), then the ratios kiln/xgboost and kiln/LightGBM. Given
bench/out/gbdt/eval_results.jsonl (run_eval.sh), the same per (data set, eval_metric): training
with per-round evaluation, kiln (and kiln-eval-base, if measured) against xgboost."""
import json
import sys
from collections import defaultdict

path = sys.argv[1] if len(sys.argv) > 1 else "bench/out/gbdt/results.jsonl"
runs = defaultdict(list)
for line in open(path):
    r = json.loads(line)
    runs[(r["data"], r["tool"])].append(r)

def best(data, tool, key):
    vals = [r[key] for r in runs.get((data, tool), []) if key in r]
    return min(vals) if vals else float("nan")

def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def summarize_eval(path):
    """Training with evaluation every round (run_eval.sh): kiln-eval (and kiln-eval-base) vs xgb-eval.
    Within a repetition the tools run back to back, so each repetition's own ratio is reported too."""
    by = defaultdict(list)
    for line in open(path):
        r = json.loads(line)
        by[(r["data"], r["metrics"], r["tool"])].append(r)
    for data, metrics in sorted({(d, m) for d, m, _ in by}):
        ref = by.get((data, metrics, "xgb-eval"), [])
        print(f"\n== {data}, eval_metric={metrics}, train + validation every round "
              f"({len(ref)} reps; min over reps) ==")
        print(f"{'tool':15} {'train s':>8} {'train CPU s':>12} {'ratio to xgboost':>17} {'per-rep median (range)':>24} {'CPU-s ratio':>12}")
        for tool in ("kiln-eval", "kiln-eval-base", "xgb-eval"):
            rs = by.get((data, metrics, tool))
            if not rs:
                continue
            t = min(r["train_s"] for r in rs)
            c = min(r["train_cpu_s"] for r in rs)
            line = f"{tool:15} {t:8.2f} {c:12.2f}"
            if ref and tool != "xgb-eval":
                per = [k["train_s"] / x["train_s"] for k, x in zip(rs, ref)]
                line += (f" {t / min(r['train_s'] for r in ref):17.2f} "
                         f"{median(per):9.2f} ({min(per):.2f}-{max(per):.2f})"
                         f" {c / min(r['train_cpu_s'] for r in ref):12.2f}")
            print(line)


if "eval_results" in path:
    summarize_eval(path)
    sys.exit(0)

for data in sorted({d for d, _ in runs}):
    print(f"\n== {data} ({len(runs.get((data, 'kiln'), []))} reps; min over reps) ==")
    print(f"{'tool':6} {'build s':>8} {'train s':>8} {'build+train':>11} {'test AUC':>9} {'peak RSS MiB':>13} {'train-phase MiB':>16}")
    for tool in ("kiln", "xgb", "lgb"):
        if (data, tool) not in runs:
            continue
        rs = runs[(data, tool)]
        tot = min(r["dataset_build_s"] + r["train_s"] for r in rs)
        auc = rs[-1]["test_auc"]
        delta = best(data, tool, "train_peak_delta_mib")
        print(f"{tool:6} {best(data, tool, 'dataset_build_s'):8.2f} {best(data, tool, 'train_s'):8.2f} {tot:11.2f} "
              f"{auc:9.5f} {best(data, tool, 'process_peak_rss_mib'):13.0f} {delta:16.0f}")
    k = best(data, "kiln", "train_s")
    for ref, name in (("xgb", "xgboost"), ("lgb", "LightGBM")):
        if (data, ref) in runs:
            kt = min(r["dataset_build_s"] + r["train_s"] for r in runs[(data, "kiln")])
            rt = min(r["dataset_build_s"] + r["train_s"] for r in runs[(data, ref)])
            print(f"train-time ratio kiln/{name}: {k / best(data, ref, 'train_s'):.2f}   "
                  f"(build+train: {kt / rt:.2f})")
    # The three tools run back to back within a repetition, so a repetition's own ratio compares
    # them under the same host conditions; on a host whose speed drifts, its median is steadier
    # than the ratio of minima (which may come from different moments).
    for ref, name in (("xgb", "xgboost"), ("lgb", "LightGBM")):
        pairs = list(zip(runs.get((data, "kiln"), []), runs.get((data, ref), [])))
        if pairs:
            per = sorted(k["train_s"] / r["train_s"] for k, r in pairs)
            mid = per[len(per) // 2] if len(per) % 2 else (per[len(per) // 2 - 1] + per[len(per) // 2]) / 2
            print(f"per-repetition kiln/{name}: median {mid:.2f}, range {per[0]:.2f}-{per[-1]:.2f}")
    kc = best(data, "kiln", "train_cpu_s")
    for ref, name in (("xgb", "xgboost"), ("lgb", "LightGBM")):
        rc = best(data, ref, "train_cpu_s")
        if rc == rc and kc == kc:
            print(f"train CPU-seconds kiln {kc:.2f} / {name} {rc:.2f} = {kc / rc:.2f} (less sensitive to a busy machine)")
    aucs = {t: runs[(data, t)][-1]["test_auc"] for t in ("kiln", "xgb", "lgb") if (data, t) in runs}
    better = max(v for t, v in aucs.items() if t != "kiln")
    print(f"AUC kiln - best reference: {aucs['kiln'] - better:+.5f}")
    mbs = [r["parse_mb_per_s"] for r in runs.get((data, "kiln-parse"), [])]
    if mbs:
        pr = runs[(data, "kiln-parse")]
        firsts = [r["first_parse_mb_per_s"] for r in pr if "first_parse_mb_per_s" in r]
        first = f", first parse in a fresh process {max(firsts):.0f} MB/s" if firsts else ""
        print(f"kiln CSV parse to floats: {max(mbs):.0f} MB/s (median of {pr[0].get('parse_reps', 1)} parses{first}; "
              f"{pr[0]['csv_mb']:.0f} MB, peak RSS "
              f"{min(r['process_peak_rss_mib'] for r in pr):.0f} MiB); CSV straight to bins: "
              f"{max(r['dataset_build_mb_per_s'] for r in runs[(data, 'kiln')]):.0f} MB/s")

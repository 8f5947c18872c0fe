//! One benchmark measurement in a fresh process (clean peak-RSS accounting), used by
//! `bench/gbdt/run.sh`:
//!
//!   gbdt_bench <train.csv> <test.csv> <rounds> <threads> [max_depth] [max_leaves]
//!   gbdt_bench parse <file.csv> <threads>
//!   gbdt_bench eval <metrics> <train.csv> <valid.csv> <rounds> <threads>
//!
//! The first form reads the training CSV straight into bins (`dataset_build_s`), trains and
//! scores test AUC; the second times parsing the CSV into floats (`parse_mb_per_s`: the median
//! of five parses in the process; `first_parse_mb_per_s`: the first). The third trains as the
//! SageMaker container does: `eval_metric=<metrics>` (comma-separated), train and validation
//! evaluated every round and the `[i]\ttrain-m:v\tvalidation-m:v` lines printed to stdout;
//! `train_s` includes that evaluation and printing (tool `kiln-eval`). Each prints
//! `RESULT {json}` with peak RSS. `max_leaves > 0` switches to lossguide growth (max_depth 0 =
//! unlimited).

use std::time::Instant;

use kiln_algos::booster::{TrainOptions, train_binned};
use kiln_algos::reader::{ContentType, ReadOptions, read_file};
use kiln_algos::stream::read_csv_binned;
use kiln_algos::{GrowPolicy, Metric, Objective, XgbConfig};

fn vm_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat (100 Hz ticks).
fn cpu_s() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

/// Parses timed by `gbdt_bench parse`.
const PARSE_REPS: usize = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.get(1).map(String::as_str) == Some("parse") && a.len() == 4 {
        let threads: usize = a[3].parse()?;
        rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
        // One parse of a small file takes tens of milliseconds, within the noise of a shared
        // machine: parse it PARSE_REPS times (mapping and matrix fresh each time) and report the
        // median, with the first (a cold process) beside it.
        let mut secs = Vec::new();
        let mut rows = 0;
        for _ in 0..PARSE_REPS {
            let t = Instant::now();
            let d = read_file(a[2].as_ref(), ContentType::Csv, &ReadOptions::default())?;
            secs.push(t.elapsed().as_secs_f64());
            rows = d.n_rows();
        }
        let first = secs[0];
        secs.sort_by(f64::total_cmp);
        let median = secs[secs.len() / 2];
        let mb = std::fs::metadata(&a[2])?.len() as f64 / 1e6;
        println!(
            "RESULT {{\"tool\": \"kiln-parse\", \"rows\": {rows}, \"threads\": {threads}, \"csv_mb\": {mb:.1}, \
             \"parse_reps\": {PARSE_REPS}, \"parse_s\": {median:.3}, \"parse_mb_per_s\": {:.0}, \
             \"first_parse_mb_per_s\": {:.0}, \"process_peak_rss_mib\": {:.0}}}",
            mb / median,
            mb / first,
            vm_kib("VmHWM:") as f64 / 1024.0
        );
        return Ok(());
    }
    if a.get(1).map(String::as_str) == Some("eval") && a.len() == 7 {
        return train_with_eval(&a[2], &a[3], &a[4], a[5].parse()?, a[6].parse()?);
    }
    if a.len() < 5 {
        return Err("usage: gbdt_bench <train.csv> <test.csv> <rounds> <threads> [max_depth] [max_leaves] | gbdt_bench parse <file.csv> <threads> | gbdt_bench eval <metrics> <train.csv> <valid.csv> <rounds> <threads>".into());
    }
    let rounds: usize = a[3].parse()?;
    let threads: usize = a[4].parse()?;
    let max_depth: usize = a.get(5).map_or(Ok(6), |s| s.parse())?;
    let max_leaves: usize = a.get(6).map_or(Ok(0), |s| s.parse())?;
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
    let rss0 = vm_kib("VmRSS:");
    let size_mb = std::fs::metadata(&a[1])?.len() as f64 / 1e6;

    let params = XgbConfig {
        num_round: rounds,
        objective: Objective::BinaryLogistic,
        eta: 0.1,
        max_depth,
        max_leaves,
        grow_policy: if max_leaves > 0 {
            GrowPolicy::Lossguide
        } else {
            GrowPolicy::Depthwise
        },
        nthread: Some(threads),
        ..XgbConfig::default()
    }
    .check()?;
    // Reading is CSV straight to bins, so it is timed (and its memory counted) with the build.
    let t = Instant::now();
    let data = read_csv_binned(&[a[1].clone().into()], &ReadOptions::default(), params.max_bin)?;
    let bin_s = t.elapsed().as_secs_f64();
    let (binned, labels) = (data.matrix, data.labels);
    let n_rows = binned.n_rows();

    let (t, c) = (Instant::now(), cpu_s());
    let model = train_binned(
        &params,
        &binned,
        &labels,
        None,
        None,
        TrainOptions {
            eval_train: false,
            log: None,
            comm: None,
            resume: None,
            round_offset: 0,
            checkpoints: None,
            valid_whole: false,
        },
    )?;
    let train_s = t.elapsed().as_secs_f64();
    let train_cpu_s = cpu_s() - c;
    drop(binned);

    let train_peak = vm_kib("VmHWM:").saturating_sub(rss0);
    let test = read_file(a[2].as_ref(), ContentType::Csv, &ReadOptions::default())?;
    let t = Instant::now();
    let pred = model.predict(&test.features);
    let predict_s = t.elapsed().as_secs_f64();
    let auc = Metric::Auc.eval(&pred, 1, &test.labels, None);
    let hwm = vm_kib("VmHWM:");
    println!(
        "RESULT {{\"tool\": \"kiln\", \"rows\": {n_rows}, \"threads\": {threads}, \"rounds\": {rounds}, \
         \"max_depth\": {max_depth}, \"max_leaves\": {max_leaves}, \"csv_mb\": {size_mb:.1}, \
         \"dataset_build_s\": {bin_s:.3}, \"dataset_build_mb_per_s\": {:.0}, \
         \"train_s\": {train_s:.3}, \"train_cpu_s\": {train_cpu_s:.2}, \"predict_s\": {predict_s:.3}, \"test_auc\": {auc:.5}, \
         \"process_peak_rss_mib\": {:.0}, \"train_peak_delta_mib\": {:.0}, \"rss_at_start_mib\": {:.0}}}",
        size_mb / bin_s,
        hwm as f64 / 1024.0,
        train_peak as f64 / 1024.0,
        rss0 as f64 / 1024.0
    );
    Ok(())
}

/// `gbdt_bench eval`: training with per-round evaluation of train and validation, as the
/// container runs it (validation read into floats, as the container reads it; not timed).
fn train_with_eval(
    metrics: &str,
    train_csv: &str,
    valid_csv: &str,
    rounds: usize,
    threads: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
    let eval_metric = metrics
        .split(',')
        .map(|m| Metric::parse(m, 1.5))
        .collect::<Result<Vec<_>, _>>()?;
    let params = XgbConfig {
        num_round: rounds,
        objective: Objective::BinaryLogistic,
        eta: 0.1,
        max_depth: 6,
        nthread: Some(threads),
        eval_metric,
        ..XgbConfig::default()
    }
    .check()?;
    let data = read_csv_binned(&[train_csv.into()], &ReadOptions::default(), params.max_bin)?;
    let valid = read_file(valid_csv.as_ref(), ContentType::Csv, &ReadOptions::default())?;
    let mut out = std::io::stdout();
    let (t, c) = (Instant::now(), cpu_s());
    let model = train_binned(
        &params,
        &data.matrix,
        &data.labels,
        None,
        Some(&valid),
        TrainOptions {
            eval_train: true,
            log: Some(&mut out),
            comm: None,
            resume: None,
            round_offset: 0,
            checkpoints: None,
            valid_whole: false,
        },
    )?;
    let train_s = t.elapsed().as_secs_f64();
    let train_cpu_s = cpu_s() - c;
    let auc = Metric::Auc.eval(&model.predict(&valid.features), 1, &valid.labels, None);
    println!(
        "RESULT {{\"tool\": \"kiln-eval\", \"metrics\": \"{metrics}\", \"rows\": {}, \"valid_rows\": {}, \
         \"threads\": {threads}, \"rounds\": {rounds}, \"train_s\": {train_s:.3}, \"train_cpu_s\": {train_cpu_s:.2}, \
         \"test_auc\": {auc:.5}, \"process_peak_rss_mib\": {:.0}}}",
        data.labels.len(),
        valid.n_rows(),
        vm_kib("VmHWM:") as f64 / 1024.0
    );
    Ok(())
}

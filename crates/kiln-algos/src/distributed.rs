//! The data side of distributed training: which rows each host trains on, the cut points all
//! hosts bin with, and the final check that every host holds the same model. (The trees are
//! grown together in [`crate::grow`], the rounds run in [`crate::booster`], and the hosts talk
//! through [`crate::collective`].)
//!
//! - Rows: with `ShardedByS3Key` each host has its own files and trains on all their rows; with
//!   `FullyReplicated` every host sees the same files and takes the rows `i` with
//!   `i % hosts == rank` ([`share`]).
//! - Cuts ([`agree_cuts`]): the sketch sample is chosen by a hash of each row's content
//!   ([`crate::binning::in_sketch`]), not by its position, so it is the same rows however the
//!   rows are split among files and hosts. Sharded, each host thins its sketch sample to the rows
//!   keyed in at the sketch step of all hosts' rows together (about 256k rows in all, as alone);
//!   replicated, each host's own sample is that of the whole data. Either way the hosts' samples
//!   together are exactly the rows one host would sample from all the files, so they choose the
//!   cuts, hence the model, one host would. Each host chooses the cuts of its share of the
//!   features (every N-th; from every host's sampled values of them, sent to it in one
//!   all-to-all, when sharded) and the hosts then exchange them, so every host bins
//!   identically and the work is shared. (xgboost merges mergeable weighted quantile summaries instead; a gathered sample is
//!   simpler, and exactly the single-host sample.)

use crate::binning::{BinCuts, BinnedMatrix, in_sketch, sketch_step};
use crate::collective::{Collective, CommError, decode, encode};
use crate::container::JobError;
use crate::data::{Dataset, DenseMatrix};
use crate::stream::Sketch;

impl From<CommError> for JobError {
    fn from(e: CommError) -> Self {
        JobError::Internal(e.to_string())
    }
}

/// Host `rank`'s share of `n_rows` rows every host has: rows `i` with `i % size == rank`.
pub fn share(n_rows: usize, rank: usize, size: usize) -> Vec<u32> {
    (rank..n_rows).step_by(size.max(1)).map(|i| i as u32).collect()
}

/// The rows `keep` of `ds`.
pub fn select_dataset(ds: &Dataset, keep: &[u32]) -> Dataset {
    let nf = ds.features.n_cols();
    let mut values = Vec::with_capacity(keep.len() * nf);
    for &r in keep {
        values.extend_from_slice(ds.features.row(r as usize));
    }
    Dataset {
        features: DenseMatrix::new(keep.len(), nf, values).expect("rows of the same width"),
        labels: keep.iter().map(|&r| ds.labels[r as usize]).collect(),
        weights: ds
            .weights
            .as_ref()
            .map(|w| keep.iter().map(|&r| w[r as usize]).collect()),
    }
}

/// The features whose cuts host `rank` of `size` computes: every `size`-th from `rank`
/// (features of one kind, costlier or cheaper to sort, often sit next to each other).
fn features_of(nf: usize, rank: usize, size: usize) -> Vec<usize> {
    (rank..nf).step_by(size).collect()
}

/// The columns `cols` of `m`, as a matrix of their own.
fn columns(m: &DenseMatrix, cols: &[usize]) -> DenseMatrix {
    let values = (0..m.n_rows())
        .flat_map(|r| cols.iter().map(move |&c| m.row(r)[c]))
        .collect();
    DenseMatrix::new(m.n_rows(), cols.len(), values).expect("rows of the same width")
}

/// Cut lists on the wire: their number, then each one's length and values.
fn encode_cuts(cuts: &[Vec<f32>]) -> Vec<u8> {
    let mut out = encode(&[cuts.len() as u64]);
    for c in cuts {
        out.extend(encode(&[c.len() as u64]));
        out.extend(encode(c));
    }
    out
}

fn decode_cuts(b: &[u8]) -> Option<Vec<Vec<f32>>> {
    let word = |at: usize| b.get(at..at + 8).map(|x| decode::<u64>(x)[0] as usize);
    let nf = word(0)?;
    let mut at = 8;
    let mut cuts = Vec::with_capacity(nf.min(b.len()));
    for _ in 0..nf {
        let len = word(at)?;
        at += 8;
        cuts.push(decode::<f32>(b.get(at..at.checked_add(len.checked_mul(4)?)?)?));
        at += 4 * len;
    }
    Some(cuts)
}

/// The cut points every host bins its training rows with (see the module documentation).
/// `sketch` is this host's; `replicated` whether every host read the same rows.
///
/// The work is shared: host r chooses the cuts of its share of features ([`features_of`]),
/// and the hosts then exchange them. Sharded, each host first sends every other one
/// its sampled rows' values of that host's features (an all-to-all), so each share is chosen
/// from the sample of all the hosts' rows; replicated, each host's own sample is the whole
/// data's. Either way every host ends with the same cuts, the ones a single host would choose
/// from that sample (each feature's cuts depend on its column alone).
pub fn agree_cuts(
    comm: &Collective,
    sketch: &Sketch<'_>,
    max_bin: usize,
    replicated: bool,
) -> Result<BinCuts, JobError> {
    let (n, me) = (comm.size(), comm.rank());
    let nf = sketch.rows.n_cols();
    let mine = features_of(nf, me, n);
    let my_cuts: Vec<Vec<f32>> = if replicated {
        let c = BinCuts::compute_keyed(
            &columns(sketch.rows, &mine),
            sketch.weights,
            sketch.keys,
            sketch_step(sketch.n_rows),
            max_bin,
        );
        (0..mine.len()).map(|f| c.cuts(f).to_vec()).collect()
    } else {
        let mut total = [sketch.n_rows as i64];
        comm.sum_i64(&mut total)?;
        let step = sketch_step(total[0] as usize);
        if sketch.step > step {
            return Err(JobError::Internal(format!(
                "{}'s sketch sample is thinner (one row in {}) than all hosts' rows need (one in {step})",
                comm.host(me),
                sketch.step
            )));
        }
        let keep: Vec<usize> = (0..sketch.rows.n_rows())
            .filter(|&i| in_sketch(sketch.keys[i], step))
            .collect();
        // To each host: this host's width and kept rows, their values of its features, and
        // their weights.
        let parts = (0..n)
            .map(|r| {
                let cols = features_of(nf, r, n);
                let mut part = encode(&[nf as u64, keep.len() as u64]);
                part.reserve(4 * keep.len() * cols.len());
                for &i in &keep {
                    let row = sketch.rows.row(i);
                    for &c in &cols {
                        part.extend_from_slice(&row[c].to_le_bytes());
                    }
                }
                if let Some(w) = sketch.weights {
                    part.extend(encode(&keep.iter().map(|&i| w[i]).collect::<Vec<f32>>()));
                }
                part
            })
            .collect();
        let got = comm.all_to_all(parts)?;
        let (mut values, mut weights, mut rows) = (Vec::new(), Vec::new(), 0);
        let width = |b: &[u8]| b.get(..16).map(decode::<u64>).map(|h| (h[0] as usize, h[1] as usize));
        for (r, b) in got.iter().enumerate() {
            let bad = || JobError::Internal(format!("{} sent an unreadable sketch sample", comm.host(r)));
            let (their_nf, their_rows) = width(b).ok_or_else(bad)?;
            if their_nf != nf {
                return Err(columns_differ(comm, r, their_nf, nf));
            }
            let len = 4 * their_rows * mine.len();
            let v = b.get(16..16 + len).ok_or_else(bad)?;
            values.extend(decode::<f32>(v));
            if sketch.weights.is_some() {
                weights.extend(decode::<f32>(
                    b.get(16 + len..16 + len + 4 * their_rows).ok_or_else(bad)?,
                ));
            }
            rows += their_rows;
        }
        if rows == 0 {
            return Err(JobError::User(
                "the hosts' training data has no rows to choose cut points from".into(),
            ));
        }
        let m = DenseMatrix::new(rows, mine.len(), values)
            .ok_or_else(|| JobError::Internal("the sketch samples do not add up".into()))?;
        let w = sketch.weights.is_some().then_some(&weights[..]);
        let c = BinCuts::compute_all(&m, w, max_bin);
        (0..mine.len()).map(|f| c.cuts(f).to_vec()).collect()
    };
    // Every host's width and block, to every host.
    let mut block = encode(&[nf as u64]);
    block.extend(encode_cuts(&my_cuts));
    let blocks = comm.all_to_all(vec![block; n])?;
    let mut cuts = vec![Vec::new(); nf];
    for (r, b) in blocks.iter().enumerate() {
        let unreadable = || JobError::Internal(format!("{} sent unreadable cuts", comm.host(r)));
        let their_nf = b
            .get(..8)
            .map(|h| decode::<u64>(h)[0] as usize)
            .ok_or_else(unreadable)?;
        if their_nf != nf {
            return Err(columns_differ(comm, r, their_nf, nf));
        }
        let theirs = decode_cuts(&b[8..]).ok_or_else(unreadable)?;
        let features = features_of(nf, r, n);
        if theirs.len() != features.len() {
            return Err(unreadable());
        }
        for (f, c) in features.into_iter().zip(theirs) {
            cuts[f] = c;
        }
    }
    Ok(BinCuts::from_cuts(cuts))
}

/// Host `r`'s training data has `theirs` feature columns where this host's has `mine`.
fn columns_differ(comm: &Collective, r: usize, theirs: usize, mine: usize) -> JobError {
    JobError::User(format!(
        "{}'s training data has {theirs} feature columns but {}'s has {mine}; every host's files \
         need the same columns",
        comm.host(r),
        comm.host(comm.rank())
    ))
}

/// algo-1's verdict, broadcast: the payload, or a failure every host reports.
fn broadcast_verdict(comm: &Collective, verdict: Option<Result<Vec<u8>, String>>) -> Result<Vec<u8>, JobError> {
    let bytes = match verdict {
        Some(Ok(b)) => [vec![0u8], b].concat(),
        Some(Err(msg)) => [vec![1u8], msg.into_bytes()].concat(),
        None => Vec::new(),
    };
    let got = comm.broadcast(bytes)?;
    match got.split_first() {
        Some((0, rest)) => Ok(rest.to_vec()),
        Some((_, msg)) => Err(JobError::User(String::from_utf8_lossy(msg).into_owned())),
        None => Err(JobError::Internal(format!("{} sent an empty verdict", comm.host(0)))),
    }
}

/// Marks features as having missing values where any host's rows have some.
pub fn agree_missing(comm: &Collective, m: &mut BinnedMatrix) -> Result<(), CommError> {
    let mut flags: Vec<bool> = (0..m.n_features()).map(|f| m.has_missing(f)).collect();
    comm.any(&mut flags)?;
    m.mark_missing(&flags);
    Ok(())
}

/// FNV-1a, 64 bits: a digest that is the same on every host and every build.
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Fails on every host unless every host's model file (`json`) is the same.
pub fn check_same_model(comm: &Collective, json: &str) -> Result<(), JobError> {
    let verdict = comm.gather(encode(&[digest(json.as_bytes())]))?.map(|all| {
        let ds: Vec<u64> = all.iter().map(|b| decode::<u64>(b)[0]).collect();
        if ds.iter().all(|&d| d == ds[0]) {
            return Ok(Vec::new());
        }
        let list: Vec<String> = ds
            .iter()
            .enumerate()
            .map(|(r, d)| format!("{} {d:016x}", comm.host(r)))
            .collect();
        Err(format!(
            "internal error: the hosts ended training with different models (digests: {}); please \
             report it with the job's hyperparameters",
            list.join(", ")
        ))
    });
    broadcast_verdict(comm, verdict)
        .map(|_| ())
        .map_err(|e| JobError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::tests::free_port;
    use crate::container::{JobPaths, run_train};
    use std::path::{Path, PathBuf};

    /// CSV rows `from..to` of a synthetic binary problem (label first; some values missing).
    fn csv(from: u64, to: u64) -> String {
        let mut out = String::new();
        for i in from..to {
            let x: Vec<f64> = (0..4)
                .map(|j| ((i * 7919 + j * 104_729) % 1000) as f64 / 250.0 - 2.0)
                .collect();
            let y = u8::from(x[0] * 1.5 - x[1] + 0.5 * x[2] * x[3] + ((i % 7) as f64 - 3.0) / 6.0 > 0.0);
            let x1 = if i % 9 == 0 { String::new() } else { format!("{}", x[1]) };
            out.push_str(&format!("{y},{},{x1},{},{}\n", x[0], x[2], x[3]));
        }
        out
    }

    /// A host's `/opt/ml` tree: train files, a validation file, the configuration.
    fn tree(dir: &Path, host: Option<&str>, train: &[(&str, String)], dist: &str) -> PathBuf {
        let root = dir.join(host.unwrap_or("alone"));
        let cfg = root.join("input/config");
        std::fs::create_dir_all(&cfg).unwrap();
        for (name, text) in train {
            std::fs::create_dir_all(root.join("input/data/train")).unwrap();
            std::fs::write(root.join("input/data/train").join(name), text).unwrap();
        }
        std::fs::create_dir_all(root.join("input/data/validation")).unwrap();
        std::fs::write(root.join("input/data/validation/v.csv"), csv(5000, 6000)).unwrap();
        std::fs::write(
            cfg.join("hyperparameters.json"),
            r#"{"num_round": "15", "objective": "binary:logistic", "eval_metric": "auc", "max_depth": "4"}"#,
        )
        .unwrap();
        let channel = |d: &str| format!(r#"{{"ContentType": "text/csv", "S3DistributionType": "{d}"}}"#);
        std::fs::write(
            cfg.join("inputdataconfig.json"),
            format!(
                r#"{{"train": {}, "validation": {}}}"#,
                channel(dist),
                channel("FullyReplicated")
            ),
        )
        .unwrap();
        if let Some(h) = host {
            std::fs::write(
                cfg.join("resourceconfig.json"),
                format!(r#"{{"current_host": "{h}", "hosts": ["algo-1", "algo-2"]}}"#),
            )
            .unwrap();
        }
        root
    }

    /// Runs the container's `train` in `root`; (result, stdout).
    fn train_in(root: &Path, port: u16) -> (Result<(), JobError>, String) {
        let port = port.to_string();
        let env = |k: &str| match k {
            "KILN_XGB_PORT" => Some(port.clone()),
            "KILN_XGB_TIMEOUT" => Some("20".to_string()),
            // No /etc/hosts naming algo-1 here.
            "KILN_XGB_MASTER_ADDR" => Some("127.0.0.1".to_string()),
            "TRAINING_JOB_NAME" => Some("t".to_string()),
            "SM_NUM_CPUS" => Some("1".to_string()),
            _ => None,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let r = run_train(&JobPaths::new(root, &env), &env, &mut out, &mut err);
        (r, String::from_utf8(out).unwrap())
    }

    /// Both hosts' (result, stdout), run as threads.
    fn two_hosts(roots: [PathBuf; 2]) -> Vec<(Result<(), JobError>, String)> {
        let port = free_port();
        std::thread::scope(|s| {
            let hs: Vec<_> = roots.iter().map(|r| s.spawn(move || train_in(r, port))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    fn last_auc(log: &str) -> f64 {
        let last = log.lines().last().unwrap();
        last.rsplit(':').next().unwrap().parse().unwrap()
    }

    #[test]
    fn two_hosts_train_one_model_from_shards_or_shares() {
        let dir = std::env::temp_dir().join(format!("kiln-dist-{}", std::process::id()));
        let (a, b) = (csv(0, 2000), csv(2000, 5000));
        let alone = tree(
            &dir,
            None,
            &[("a.csv", a.clone()), ("b.csv", b.clone())],
            "FullyReplicated",
        );
        let (r, log) = train_in(&alone, 1);
        r.unwrap();
        assert_eq!(log.lines().count(), 15);
        for dist in ["ShardedByS3Key", "FullyReplicated"] {
            let d = dir.join(dist);
            let both = vec![("a.csv", a.clone()), ("b.csv", b.clone())];
            let (f1, f2) = if dist == "ShardedByS3Key" {
                (vec![both[0].clone()], vec![both[1].clone()])
            } else {
                (both.clone(), both.clone())
            };
            let roots = [tree(&d, Some("algo-1"), &f1, dist), tree(&d, Some("algo-2"), &f2, dist)];
            let out = two_hosts(roots.clone());
            out[0].0.as_ref().unwrap();
            out[1].0.as_ref().unwrap();
            // algo-1 prints and writes the model; algo-2 does neither.
            assert!(roots[0].join("model/xgboost-model").is_file());
            assert!(!roots[1].join("model").exists());
            assert!(out[1].1.is_empty());
            assert_eq!(out[0].1.lines().count(), 15, "{}", out[0].1);
            // The metrics of all rows: as one host training on both files.
            let (x, y) = (last_auc(&out[0].1), last_auc(&log));
            assert!((x - y).abs() < 2e-4, "{dist}: {x} vs {y}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_host_that_fails_is_named_by_the_others() {
        let dir = std::env::temp_dir().join(format!("kiln-dist-fail-{}", std::process::id()));
        let bad = format!("{}1,2,oops,3,4\n", csv(2000, 2100));
        let roots = [
            tree(&dir, Some("algo-1"), &[("a.csv", csv(0, 2000))], "ShardedByS3Key"),
            tree(&dir, Some("algo-2"), &[("b.csv", bad)], "ShardedByS3Key"),
        ];
        let out = two_hosts(roots);
        let e2 = out[1].0.as_ref().unwrap_err().to_string();
        assert!(e2.starts_with("channel 'train': file 'b.csv': line 101"), "{e2}");
        let e1 = out[0].0.as_ref().unwrap_err().to_string();
        assert_eq!(e1, format!("algo-2 failed: {e2}"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hosts_whose_files_have_other_columns_fail_saying_so() {
        let dir = std::env::temp_dir().join(format!("kiln-dist-width-{}", std::process::id()));
        let wide: String = csv(2000, 3000).lines().map(|l| format!("{l},1\n")).collect();
        let roots = [
            tree(&dir, Some("algo-1"), &[("a.csv", csv(0, 2000))], "ShardedByS3Key"),
            tree(&dir, Some("algo-2"), &[("b.csv", wide)], "ShardedByS3Key"),
        ];
        for (r, _) in two_hosts(roots) {
            let e = r.unwrap_err().to_string();
            assert!(
                e.contains("training data has 5 feature columns but")
                    || e.contains("training data has 4 feature columns but"),
                "{e}"
            );
            assert!(e.contains("every host's files need the same columns"), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hosts_choose_the_cuts_one_host_chooses_however_the_rows_are_split() {
        use crate::binning::sketch_step;
        use crate::collective::tests::run_hosts;
        use crate::reader::ReadOptions;
        use crate::stream::tests::{many_values, tmp};
        use crate::stream::{input_bytes, scan_csv_with};
        // More rows than the sketch sample (a step of 2), cut at row counts that are not
        // multiples of it.
        let n = 300_000;
        let whole = [tmp("split-all.csv", &many_values(0, n))];
        let alone = scan_csv_with(&whole, &ReadOptions::default(), 0, None).unwrap();
        let reference = alone.sketch().cuts(64);
        let splits: [&[(u64, u64)]; 3] = [
            &[(0, 123_457), (123_457, n)],
            // The later rows on the first host.
            &[(123_457, n), (0, 123_457)],
            &[(0, 77_777), (200_001, n), (77_777, 200_001)],
        ];
        for (k, split) in splits.iter().enumerate() {
            let files: Vec<PathBuf> = split
                .iter()
                .map(|&(from, to)| tmp(&format!("split-{k}-{from}.csv"), &many_values(from, to)))
                .collect();
            // As the job does: each host samples at the step the bytes of all hosts' files
            // promise, then makes sure it is not larger than that of all the rows. With
            // split 1 the promise is eight times too large: the streaming host passes over its
            // file again.
            let all_bytes = input_bytes(&files) * if k == 1 { 8 } else { 1 };
            let got = run_hosts(split.len(), |c| {
                // The first host parses its file at once, the others stream theirs: both
                // sample by the rows' keys.
                let small_below = if c.rank() == 0 { u64::MAX } else { 0 };
                let files = std::slice::from_ref(&files[c.rank()]);
                let scan = scan_csv_with(files, &ReadOptions::default(), small_below, Some(all_bytes)).unwrap();
                let mut rows = [scan.n_rows() as i64];
                c.sum_i64(&mut rows).unwrap();
                let step = sketch_step(rows[0] as usize);
                assert_eq!(scan.sketch().step > step, k == 1 && c.rank() > 0);
                let scan = scan.sample_at_most(step).unwrap();
                assert!(scan.sketch().step <= step);
                agree_cuts(c, &scan.sketch(), 64, false).unwrap()
            });
            for cuts in got {
                assert_eq!(cuts, reference, "split {k}");
            }
        }
        // Replicated: every host reads every row and chooses as one host does.
        let got = run_hosts(2, |c| agree_cuts(c, &alone.sketch(), 64, true).unwrap());
        assert!(got.iter().all(|cuts| *cuts == reference));
    }

    #[test]
    fn hosts_reading_floats_choose_the_cuts_one_host_chooses() {
        use crate::binning::{SKETCH_ROWS, values_keys};
        use crate::collective::tests::run_hosts;
        // Rows as gzip, libsvm or Parquet give them: sampled by a hash of their values.
        let n = SKETCH_ROWS + 54_321;
        let values: Vec<f32> = (0..n as u64)
            .map(crate::stream::tests::noise)
            .flat_map(|r| [(r >> 40) as f32 / 1000.0, (r & 0xFFFF) as f32])
            .collect();
        let labels: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
        let all = DenseMatrix::new(n, 2, values.clone()).unwrap();
        let keys = values_keys(&all, &labels);
        let one = Sketch {
            step: 1,
            rows: &all,
            keys: &keys,
            weights: None,
            n_rows: n,
        };
        let reference = one.cuts(32);
        // The values are such that a sample by row index would differ (here: one by key at
        // another step).
        assert_ne!(BinCuts::compute_keyed(&all, None, &keys, 4, 32), reference);
        let bounds = [0, 99_999, 200_003, n];
        let got = run_hosts(3, |c| {
            let (from, to) = (bounds[c.rank()], bounds[c.rank() + 1]);
            let rows = DenseMatrix::new(to - from, 2, values[2 * from..2 * to].to_vec()).unwrap();
            let keys = values_keys(&rows, &labels[from..to]);
            let sketch = Sketch {
                step: 1,
                rows: &rows,
                keys: &keys,
                weights: None,
                n_rows: to - from,
            };
            agree_cuts(c, &sketch, 32, false).unwrap()
        });
        assert!(got.iter().all(|cuts| *cuts == reference));
    }

    #[test]
    fn shares_cover_every_row_once() {
        let parts: Vec<Vec<u32>> = (0..3).map(|r| share(10, r, 3)).collect();
        assert_eq!(parts[0], vec![0, 3, 6, 9]);
        assert_eq!(parts[2], vec![2, 5, 8]);
        let mut all: Vec<u32> = parts.concat();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<u32>>());
    }

    #[test]
    fn cuts_round_trip() {
        let cuts = vec![vec![0.5, 1.0, 7.25], vec![], vec![-3.0]];
        assert_eq!(decode_cuts(&encode_cuts(&cuts)), Some(cuts));
        assert_eq!(decode_cuts(&[1, 2, 3]), None);
        assert_eq!(decode_cuts(&encode(&[1u64, u64::MAX])), None);
    }
}

//! Dense input for the built-ins that read rows of `feature_dim` numbers (K-Means, Linear
//! Learner, PCA, k-NN, Random Cut Forest; Factorization Machines for its sources): a
//! channel's RecordIO-protobuf (the default) or CSV, from files or a Pipe FIFO, and the data
//! given to `kiln algo NAME predict`. Labels come from a record's `label["values"][0]` or the
//! first CSV column when the algorithm wants them.

use std::path::Path;

use crate::container::{ChannelConfig, JobError, JobPaths};
use crate::protobuf::{DenseRows, read_dense};
use crate::reader::{ContentType, ReadOptions, list_files, read_dir, read_file};

/// RecordIO-protobuf, the default content type of SageMaker's built-ins other than XGBoost.
pub const RECORDIO: &str = "application/x-recordio-protobuf";

/// Content types these built-ins accept (SageMaker's spellings); the first is the default.
pub const CONTENT_TYPES: &[&str] = &[RECORDIO, "recordio-protobuf", "text/csv", "csv"];

pub(crate) fn is_recordio(content_type: &str) -> bool {
    let base = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(base.as_str(), "application/x-recordio-protobuf" | "recordio-protobuf")
}

/// What the rows are for: the algorithm's name for messages and whether a label is read.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    /// `PCA`, `k-NN`: named in errors.
    pub algorithm: &'static str,
    /// RecordIO records must carry `label`, CSV rows start with it.
    pub label: bool,
}

/// Reads channel `name` of a job: every row `feature_dim` wide (`None`: as wide as the first
/// row), every feature present, and a label per row when `want.label`.
pub fn read_channel(
    paths: &JobPaths,
    name: &str,
    cfg: &ChannelConfig,
    feature_dim: Option<usize>,
    want: Want,
) -> Result<DenseRows, JobError> {
    let ct = cfg.content_type.as_deref().unwrap_or(RECORDIO);
    let pipe = cfg.training_input_mode.as_deref() == Some("Pipe");
    let user = |m: String| JobError::User(format!("channel '{name}': {m}"));
    let rows = if is_recordio(ct) {
        let mut rows = DenseRows::new(feature_dim.unwrap_or(0));
        for_each_source(paths, name, cfg, |r, shown| {
            read_dense(r, shown, &mut rows).map_err(|e| e.to_string())
        })
        .map_err(user)?;
        rows
    } else {
        let csv = csv_type(ct, want).map_err(user)?;
        let opts = csv_options(want);
        let ds = if pipe {
            let fifo = paths.data_dir.join(format!("{name}_0"));
            let mut buf = Vec::new();
            std::io::Read::read_to_end(
                &mut std::fs::File::open(&fifo).map_err(|e| user(format!("could not open {}: {e}", fifo.display())))?,
                &mut buf,
            )
            .map_err(|e| user(format!("could not read {}: {e}", fifo.display())))?;
            crate::reader::parse_bytes(&buf, csv, &opts)
        } else {
            read_dir(&paths.channel_dir(name), csv, &opts)
        }
        .map_err(|e| user(e.to_string()))?;
        from_dataset(ds, want)
    };
    check_rows(&rows, feature_dim.unwrap_or(rows.n_cols), want).map_err(user)?;
    Ok(rows)
}

/// Hands `read` each source of a channel's data with the name its errors show: the channel's
/// files (sorted; `.gz` decompressed), or in Pipe mode its FIFO `<name>_0` (the objects back to
/// back, once: an algorithm that makes several passes keeps the rows).
pub(crate) fn for_each_source(
    paths: &JobPaths,
    name: &str,
    cfg: &ChannelConfig,
    mut read: impl FnMut(&mut dyn std::io::Read, &str) -> Result<(), String>,
) -> Result<(), String> {
    if cfg.training_input_mode.as_deref() == Some("Pipe") {
        let fifo = paths.data_dir.join(format!("{name}_0"));
        let f = std::fs::File::open(&fifo).map_err(|e| format!("could not open {}: {e}", fifo.display()))?;
        return read(&mut std::io::BufReader::with_capacity(1 << 20, f), &format!("{name}_0"));
    }
    let dir = paths.channel_dir(name);
    for_each_file(&dir, &list_files(&dir).map_err(|e| e.to_string())?, read)
}

/// Hands `read` each of `files` (gzip-decompressed when named `.gz`) with its name relative to
/// `dir`.
pub(crate) fn for_each_file(
    dir: &Path,
    files: &[std::path::PathBuf],
    mut read: impl FnMut(&mut dyn std::io::Read, &str) -> Result<(), String>,
) -> Result<(), String> {
    for f in files {
        let shown = f.strip_prefix(dir).unwrap_or(f).display().to_string();
        let shown = if shown.is_empty() {
            f.display().to_string()
        } else {
            shown
        };
        let file = std::fs::File::open(f).map_err(|e| format!("could not open {shown}: {e}"))?;
        let mut r = std::io::BufReader::with_capacity(1 << 20, file);
        if f.extension().is_some_and(|e| e == "gz") {
            read(&mut flate2::read::MultiGzDecoder::new(r), &shown)?;
        } else {
            read(&mut r, &shown)?;
        }
    }
    Ok(())
}

/// Reads the data of `kiln algo NAME predict`: a file or a directory of files, RecordIO-protobuf
/// when `content_type` says so (or, without one, for `.rec`/`.pbr`/`.recordio` files), else CSV
/// (its first column a label to skip when `has_label`). Every row has the model's `feature_dim`
/// features, all present.
pub fn read_predict_data(
    data: &Path,
    content_type: Option<&str>,
    feature_dim: usize,
    algorithm: &'static str,
    has_label: bool,
) -> Result<DenseRows, JobError> {
    let want = Want {
        algorithm,
        label: has_label,
    };
    let recordio = match content_type {
        Some(c) => is_recordio(c),
        None => data
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "rec" | "pbr" | "recordio")),
    };
    let shown = data.display().to_string();
    let user = |m: String| JobError::User(format!("{shown}: {m}"));
    let rows = if recordio {
        let mut rows = DenseRows::new(feature_dim);
        let files = if data.is_dir() {
            list_files(data).map_err(|e| user(e.to_string()))?
        } else {
            vec![data.to_path_buf()]
        };
        for_each_file(data, &files, |r, shown| {
            read_dense(r, shown, &mut rows).map_err(|e| e.to_string())
        })
        .map_err(user)?;
        rows
    } else {
        let csv = csv_type(content_type.unwrap_or("text/csv"), want).map_err(user)?;
        let opts = csv_options(want);
        let ds = if data.is_dir() {
            read_dir(data, csv, &opts)
        } else {
            read_file(data, csv, &opts)
        }
        .map_err(|e| user(e.to_string()))?;
        from_dataset(ds, want)
    };
    if rows.n_rows() > 0 && rows.n_cols != feature_dim {
        return Err(user(format!(
            "the data has {} feature columns but the model's feature_dim is {feature_dim}{}",
            rows.n_cols,
            if has_label || recordio {
                ""
            } else {
                " (pass --has-label if the first column is a label)"
            }
        )));
    }
    // The labels of prediction data (a CSV label column skipped with --has-label) are not used.
    check_rows(&rows, feature_dim, Want { label: false, ..want }).map_err(user)?;
    Ok(rows)
}

fn csv_type(ct: &str, want: Want) -> Result<ContentType, String> {
    ContentType::parse(Some(ct))
        .ok()
        .filter(|c| *c == ContentType::Csv)
        .ok_or_else(|| {
            format!(
                "ContentType '{ct}' is not supported by {}; use application/x-recordio-protobuf or text/csv",
                want.algorithm
            )
        })
}

fn csv_options(want: Want) -> ReadOptions {
    ReadOptions {
        has_label: want.label,
        csv_weights: false,
        min_features: 0,
    }
}

fn from_dataset(ds: crate::Dataset, want: Want) -> DenseRows {
    let n = ds.n_rows();
    DenseRows {
        n_cols: ds.features.n_cols(),
        labels: if want.label && ds.labels.len() == n {
            ds.labels
        } else {
            vec![f32::NAN; n]
        },
        values: ds.features.values().to_vec(),
    }
}

/// Rows, width, missing values and labels, checked with messages that say what to fix.
fn check_rows(rows: &DenseRows, feature_dim: usize, want: Want) -> Result<(), String> {
    if rows.n_rows() == 0 {
        return Err(
            "it has no rows; upload data written by record_set() or write_numpy_to_dense_tensor(), or CSV".into(),
        );
    }
    if rows.n_cols != feature_dim {
        return Err(format!(
            "the data has {} features per row but hyperparameter 'feature_dim' is {feature_dim}; set feature_dim \
             to the number of feature columns{}",
            rows.n_cols,
            if want.label {
                " (CSV: the columns after the label)"
            } else {
                ""
            }
        ));
    }
    if let Some(i) = rows.values.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "row {} has an empty or non-finite feature; {} needs every feature of every row",
            i / feature_dim.max(1) + 1,
            want.algorithm
        ));
    }
    if want.label
        && let Some(i) = rows.labels.iter().position(|v| !v.is_finite())
    {
        return Err(format!(
            "row {} has no label; {} needs a label per row (RecordIO: label[\"values\"]; CSV: the first column)",
            i + 1,
            want.algorithm
        ));
    }
    Ok(())
}

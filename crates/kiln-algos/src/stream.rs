//! Training CSV straight into bins, without ever holding the data as floats.
//!
//! Two sequential passes over the files, each reading blocks of a few tens of MB and parsing a
//! block in parallel: the first counts rows and keeps the sketch sample (rows `r % step == 0`,
//! halving the sample as rows arrive, which ends on exactly the sample
//! [`BinCuts::compute`] would take); the second parses every row into `u8` codes. Peak memory is
//! one block plus the codes — no float matrix, and no memory map whose pages count against the
//! process — and the cuts, hence the model, equal those of reading the floats first.

use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::binning::{BinCuts, BinnedMatrix, SKETCH_ROWS};
use crate::data::DenseMatrix;
use crate::reader::{
    ContentType, CsvLayout, DataError, ReadOptions, RowSink, chunk_bounds, count_lines, count_rows, for_each_row,
    is_blank, lines, n_chunks, parse_row, read_file,
};

/// Bytes read per block (a block always ends at a line end); small under test so that
/// block boundaries are exercised.
const BLOCK: usize = if cfg!(test) { 1 << 16 } else { 32 << 20 };

/// Inputs smaller than this are parsed into floats once and binned (tests stream everything).
const SMALL_INPUT_BELOW: u64 = if cfg!(test) { 1 } else { 64 << 20 };

/// Binned training data with its labels and weights.
#[derive(Debug)]
pub struct BinnedData {
    /// The codes and cuts.
    pub matrix: BinnedMatrix,
    /// One label per row.
    pub labels: Vec<f32>,
    /// Instance weights (`csv_weights=1`).
    pub weights: Option<Vec<f32>>,
}

/// Sampled rows of one chunk: (row indices, feature values, weights).
type SampleRows = (Vec<usize>, Vec<f32>, Vec<f32>);

/// Calls `f(block, first_line_number)` for consecutive blocks of `path` that end at line ends.
fn for_each_block(path: &Path, mut f: impl FnMut(&[u8], usize) -> Result<(), DataError>) -> Result<(), DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut buf: Vec<u8> = Vec::with_capacity(BLOCK + (1 << 20));
    let mut line_no = 1;
    let mut first = true;
    loop {
        let had = buf.len();
        let n = (&mut file).take(BLOCK as u64).read_to_end(&mut buf).map_err(io)?;
        let eof = n < BLOCK;
        if first {
            first = false;
            if buf.starts_with(b"\xEF\xBB\xBF") {
                buf.drain(..3);
            }
        }
        let end = if eof {
            buf.len()
        } else {
            match memchr::memrchr(b'\n', &buf[had..]) {
                Some(p) => had + p + 1,
                // A line longer than a block: keep reading until it ends.
                None => continue,
            }
        };
        if end > 0 {
            f(&buf[..end], line_no)?;
            line_no += count_lines(&buf[..end]);
        }
        buf.drain(..end);
        if eof {
            return Ok(());
        }
    }
}

fn in_file(files: &[PathBuf], i: usize, e: DataError) -> DataError {
    match e {
        DataError::Io { .. } => e,
        other => DataError::InFile {
            file: files[i]
                .file_name()
                .map_or_else(|| files[i].display().to_string(), |n| n.to_string_lossy().into_owned()),
            source: Box::new(other),
        },
    }
}

/// Reads headerless, label-first CSV files (in order) straight into a [`BinnedMatrix`] with at
/// most `max_bin` bins per feature. Errors name the file and line as [`crate::reader`] does.
pub fn read_csv_binned(files: &[PathBuf], opts: &ReadOptions, max_bin: usize) -> Result<BinnedData, DataError> {
    // Small inputs: floats for a moment cost little, and one parse beats two.
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    if total < SMALL_INPUT_BELOW {
        let mut all: Option<crate::data::Dataset> = None;
        for (fi, f) in files.iter().enumerate() {
            let d = match read_file(f, ContentType::Csv, opts) {
                Ok(d) => d,
                Err(DataError::Empty) => continue,
                Err(e) => return Err(in_file(files, fi, e)),
            };
            if let Some(prev) = &all
                && prev.features.n_cols() != d.features.n_cols()
            {
                return Err(in_file(
                    files,
                    fi,
                    DataError::FeatureCount {
                        expected: prev.features.n_cols(),
                        found: d.features.n_cols(),
                    },
                ));
            }
            all = Some(match all {
                None => d,
                Some(prev) => prev.append(d),
            });
        }
        let d = all.ok_or(DataError::Empty)?;
        let cuts = BinCuts::compute(&d.features, d.weights.as_deref(), max_bin);
        return Ok(BinnedData {
            matrix: BinnedMatrix::new(&d.features, cuts),
            labels: d.labels,
            weights: d.weights,
        });
    }
    // Pass 1: layout, row count, sketch sample.
    let mut lay: Option<CsvLayout> = None;
    let mut n_rows = 0usize;
    let mut step = 1usize;
    let mut sample_idx: Vec<usize> = Vec::new();
    let mut sample_vals: Vec<f32> = Vec::new();
    let mut sample_w: Vec<f32> = Vec::new();
    for (fi, path) in files.iter().enumerate() {
        for_each_block(path, |block, first_line| {
            if lay.is_none()
                && let Some(l) = lines(block).find(|l| !is_blank(l))
            {
                // Training data always has the label first.
                let opts = ReadOptions {
                    has_label: true,
                    ..*opts
                };
                lay = Some(CsvLayout::sniff(l, &opts)?);
            }
            let Some(lay) = lay else { return Ok(()) };
            let nf = lay.n_feat();
            let bounds = chunk_bounds(block, n_chunks());
            let counts: Vec<(usize, usize)> = bounds.par_iter().map(|&(s, e)| count_rows(&block[s..e])).collect();
            let (mut row0, mut line0) = (n_rows, first_line);
            let mut starts = Vec::with_capacity(bounds.len());
            for &(rows, n_lines) in &counts {
                starts.push((row0, line0));
                row0 += rows;
                line0 += n_lines;
            }
            let parts: Vec<Result<SampleRows, DataError>> = bounds
                .par_iter()
                .zip(&starts)
                .map(|(&(s, e), &(row_start, line_start))| {
                    let (mut idx, mut vals, mut ws) = (Vec::new(), Vec::new(), Vec::new());
                    let mut row = vec![f32::NAN; nf];
                    let mut r = row_start;
                    for (k, line) in lines(&block[s..e]).enumerate() {
                        if is_blank(line) {
                            continue;
                        }
                        if r.is_multiple_of(step) {
                            let (_, w) = parse_row(line, line_start + k, &lay, &mut row)?;
                            idx.push(r);
                            vals.extend_from_slice(&row);
                            ws.push(w);
                        }
                        r += 1;
                    }
                    Ok((idx, vals, ws))
                })
                .collect();
            for p in parts {
                let (idx, vals, ws) = p?;
                sample_idx.extend(idx);
                sample_vals.extend(vals);
                sample_w.extend(ws);
            }
            n_rows = row0;
            // Halve the sample until it fits; every kept row stays a multiple of the new step.
            while sample_idx.len() > SKETCH_ROWS {
                step *= 2;
                let mut keep = 0;
                for i in 0..sample_idx.len() {
                    if sample_idx[i].is_multiple_of(step) {
                        sample_idx[keep] = sample_idx[i];
                        sample_w[keep] = sample_w[i];
                        sample_vals.copy_within(i * nf..(i + 1) * nf, keep * nf);
                        keep += 1;
                    }
                }
                sample_idx.truncate(keep);
                sample_w.truncate(keep);
                sample_vals.truncate(keep * nf);
            }
            Ok(())
        })
        .map_err(|e| in_file(files, fi, e))?;
    }
    let Some(lay) = lay else {
        return Err(DataError::Empty);
    };
    if n_rows == 0 {
        return Err(DataError::Empty);
    }
    let nf = lay.n_feat();
    let sample = DenseMatrix::new(sample_idx.len(), nf, sample_vals).ok_or(DataError::Empty)?;
    let cuts = BinCuts::compute(&sample, opts.csv_weights.then_some(&sample_w[..]), max_bin);
    drop(sample);

    // Pass 2: every row into codes.
    let mut codes = vec![0u8; n_rows * nf];
    let mut labels = vec![0f32; n_rows];
    let mut weights = vec![1f32; if opts.csv_weights { n_rows } else { 0 }];
    let mut done = 0usize;
    for (fi, path) in files.iter().enumerate() {
        for_each_block(path, |block, first_line| {
            let bounds = chunk_bounds(block, n_chunks());
            let counts: Vec<(usize, usize)> = bounds.par_iter().map(|&(s, e)| count_rows(&block[s..e])).collect();
            let block_rows: usize = counts.iter().map(|c| c.0).sum();
            if done + block_rows > n_rows {
                return Err(DataError::Io {
                    path: path.clone(),
                    source: std::io::Error::other("the file changed while it was being read"),
                });
            }
            let (mut c_rest, mut l_rest, mut w_rest) = (
                &mut codes[done * nf..(done + block_rows) * nf],
                &mut labels[done..done + block_rows],
                if opts.csv_weights {
                    &mut weights[done..done + block_rows]
                } else {
                    &mut weights[0..0]
                },
            );
            let mut jobs = Vec::with_capacity(bounds.len());
            let mut line0 = first_line;
            for (&(s, e), &(rows, n_lines)) in bounds.iter().zip(&counts) {
                let (c0, c1) = c_rest.split_at_mut(rows * nf);
                let (l0, l1) = l_rest.split_at_mut(rows);
                let (w0, w1) = w_rest.split_at_mut(if opts.csv_weights { rows } else { 0 });
                jobs.push((&block[s..e], line0, c0, l0, w0));
                (c_rest, l_rest, w_rest) = (c1, l1, w1);
                line0 += n_lines;
            }
            let cuts = &cuts;
            jobs.into_par_iter()
                .map(|(text, line_start, codes, labels, weights)| {
                    struct Codes<'a> {
                        row: Vec<f32>,
                        cuts: &'a BinCuts,
                        codes: &'a mut [u8],
                        labels: &'a mut [f32],
                        weights: &'a mut [f32],
                        r: usize,
                    }
                    impl RowSink for Codes<'_> {
                        fn features(&mut self) -> &mut [f32] {
                            &mut self.row
                        }
                        fn push(&mut self, label: f32, weight: f32) {
                            let (r, nf) = (self.r, self.row.len());
                            for (f, (c, &x)) in self.codes[r * nf..(r + 1) * nf].iter_mut().zip(&self.row).enumerate() {
                                *c = self.cuts.bin(f, x);
                            }
                            self.labels[r] = label;
                            if let Some(slot) = self.weights.get_mut(r) {
                                *slot = weight;
                            }
                            self.r += 1;
                        }
                    }
                    let mut sink = Codes {
                        row: vec![f32::NAN; nf],
                        cuts,
                        codes,
                        labels,
                        weights,
                        r: 0,
                    };
                    for_each_row(text, line_start, &lay, &mut sink)
                })
                .collect::<Result<Vec<()>, DataError>>()?;
            done += block_rows;
            Ok(())
        })
        .map_err(|e| in_file(files, fi, e))?;
    }
    if done != n_rows {
        return Err(DataError::Io {
            path: files.last().cloned().unwrap_or_default(),
            source: std::io::Error::other("the file changed while it was being read"),
        });
    }
    Ok(BinnedData {
        matrix: BinnedMatrix::from_codes(n_rows, nf, codes, cuts),
        labels,
        weights: opts.csv_weights.then_some(weights),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn same_codes_and_cuts_as_reading_floats_first() {
        // More rows than the sketch sample, so the streaming sample has to halve itself.
        let mut text = String::new();
        for i in 0..300_000u64 {
            let a = (i * 7919 % 1000) as f32 / 7.0;
            let b = if i % 13 == 0 {
                String::new()
            } else {
                format!("{}", (i % 37) as f32 - 3.5)
            };
            text.push_str(&format!("{},{a},{b},{}\r\n", i % 2, (i * 31) % 500));
        }
        let p = tmp("big.csv", &text);
        let opts = ReadOptions::default();
        let streamed = read_csv_binned(std::slice::from_ref(&p), &opts, 64).unwrap();
        let floats = read_file(&p, ContentType::Csv, &opts).unwrap();
        let cuts = BinCuts::compute(&floats.features, None, 64);
        let direct = BinnedMatrix::new(&floats.features, cuts.clone());
        assert_eq!(streamed.matrix.cuts(), &cuts);
        assert_eq!(streamed.matrix.group_codes(), direct.group_codes());
        assert_eq!(streamed.matrix.groups(), direct.groups());
        assert_eq!(streamed.labels, floats.labels);
        for f in 0..3 {
            assert_eq!(streamed.matrix.column(f), direct.column(f));
            assert_eq!(streamed.matrix.has_missing(f), direct.has_missing(f));
        }
    }

    #[test]
    fn multiple_files_weights_and_errors() {
        let a = tmp("a.csv", "1,2,0.5\n0,1,1.5\n");
        let b = tmp("b.csv", "\n1,3,2\n");
        let opts = ReadOptions {
            csv_weights: true,
            ..ReadOptions::default()
        };
        let d = read_csv_binned(&[a.clone(), b.clone()], &opts, 256).unwrap();
        assert_eq!(d.labels, vec![1.0, 0.0, 1.0]);
        assert_eq!(d.weights, Some(vec![2.0, 1.0, 3.0]));
        assert_eq!(d.matrix.n_rows(), 3);
        let c = tmp("c.csv", "1,2,3\n0,x,4\n");
        let e = read_csv_binned(&[a, c], &ReadOptions::default(), 256)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "file 'c.csv': line 2: could not parse field 2 ('x') as a number");
        let empty = tmp("empty.csv", "\n\n");
        assert!(matches!(read_csv_binned(&[empty], &opts, 256), Err(DataError::Empty)));
    }
}

//! Training CSV straight into bins, without ever holding the data as floats.
//!
//! Two sequential passes over the files, each reading 16 MB blocks (the next one read while
//! this one is parsed) and parsing a block in parallel: the first counts rows, hashes each
//! row's line into its sketch key ([`crate::binning::line_key`]) and parses the sketch sample,
//! the rows keyed in at the step (from a step estimated from the input's size, halving the
//! sample as rows arrive, which ends on exactly the rows keyed in at `sketch_step(n_rows)`);
//! the second parses every row into `u8` codes. Peak memory is two blocks plus the codes — no float
//! matrix, and no memory map whose pages count against the process — and the cuts, hence the
//! model, equal those of reading the floats first and sampling them by the same keys. As the
//! keys are hashes of the rows' content, the sample does not depend on the order of the rows or
//! files, nor on how they are split among hosts ([`crate::distributed::agree_cuts`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};

use rayon::prelude::*;

use crate::binning::{BinCuts, BinnedMatrix, in_sketch, sketch_step};
use crate::data::DenseMatrix;
use crate::reader::{
    ContentType, CsvLayout, DataError, ReadOptions, RowSink, chunk_bounds, count_lines, count_rows, for_each_row,
    is_blank, lines, n_chunks, parse_row_at, read_file, row_starts,
};

/// Bytes read per block (a block always ends at a line end); small under test so that
/// block boundaries are exercised.
const BLOCK: usize = if cfg!(test) { 1 << 16 } else { 16 << 20 };

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

/// Sampled rows of one chunk: (sketch keys, feature values, weights).
type SampleRows = (Vec<u64>, Vec<f32>, Vec<f32>);

/// Calls `f(block, first_line_number)` for consecutive blocks of `path` that end at line ends;
/// `f` returns the number of lines in the block (it walks them anyway). A thread reads the
/// next block while `f` works on this one (the copy out of the page cache is otherwise time
/// the parsing threads wait through); two blocks' buffers are alive at a time.
fn for_each_block(path: &Path, mut f: impl FnMut(&[u8], usize) -> Result<usize, DataError>) -> Result<(), DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    std::thread::scope(|sc| {
        // Rendezvous: the reader hands a block over only when the last one is done with.
        let (blocks, next) = std::sync::mpsc::sync_channel(0);
        let (give_back, spare) = std::sync::mpsc::channel();
        sc.spawn(move || read_blocks(&mut file, &blocks, &spare));
        let mut line_no = 1;
        for block in next {
            let block: Vec<u8> = block.map_err(io)?;
            line_no += f(&block, line_no)?;
            // The reader may be gone (it stops after the last block).
            let _ = give_back.send(block);
        }
        Ok(())
    })
}

/// Reads `file` in blocks of about `BLOCK` bytes that end at line ends (a line longer than that
/// makes its block longer) without a leading byte-order mark, and sends them, reusing the
/// buffers that come back through `spare`. Stops at the end of the file, after a read error
/// (sent on), or when nobody receives any more.
fn read_blocks(file: &mut std::fs::File, blocks: &SyncSender<std::io::Result<Vec<u8>>>, spare: &Receiver<Vec<u8>>) {
    let mut carry: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        let mut buf = spare.try_recv().unwrap_or_default();
        buf.clear();
        // Room for the block up front: growing while reading would copy it, and hold the old
        // and the new allocation at once.
        buf.reserve(carry.len() + BLOCK + 1);
        buf.append(&mut carry);
        let (end, eof) = loop {
            let had = buf.len();
            let n = match (&mut *file).take(BLOCK as u64).read_to_end(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = blocks.send(Err(e));
                    return;
                }
            };
            if std::mem::take(&mut first) && buf.starts_with(b"\xEF\xBB\xBF") {
                buf.drain(..3);
            }
            if n < BLOCK {
                break (buf.len(), true);
            }
            // `had` is 0 when a mark was dropped: it was the first read.
            if let Some(p) = memchr::memrchr(b'\n', &buf[had..]) {
                break (had + p + 1, false);
            }
            // A line longer than a block: keep reading until it ends.
        };
        carry.extend_from_slice(&buf[end..]);
        buf.truncate(end);
        if !buf.is_empty() && blocks.send(Ok(buf)).is_err() {
            return;
        }
        if eof {
            return;
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

/// The rows of one chunk, from one walk over its lines.
struct KeyedRows {
    /// Where each row with data starts.
    starts: Vec<usize>,
    /// Each row's sketch key ([`crate::binning::line_key`]).
    keys: Vec<u64>,
    /// Lines, blank ones included.
    n_lines: usize,
}

fn keyed_rows(chunk: &[u8]) -> KeyedRows {
    let (mut starts, mut keys) = (Vec::new(), Vec::new());
    let n_lines = row_starts(chunk, &mut starts, &mut keys);
    KeyedRows { starts, keys, n_lines }
}

/// What the first pass finds.
struct Sampled {
    lay: Option<CsvLayout>,
    n_rows: usize,
    /// The sample is the rows keyed in at this step.
    step: usize,
    sample_keys: Vec<u64>,
    sample_vals: Vec<f32>,
    sample_w: Vec<f32>,
    /// (rows, lines) of each chunk of each block, in order.
    chunks: Vec<Vec<(usize, usize)>>,
}

/// The first pass: the layout, the rows, and the sketch sample, the rows keyed in at `step`
/// (doubled as rows arrive to stay `sketch_step` of the rows so far). Without a `step`, it
/// starts from one estimated from the first block's bytes per row and the `total` bytes, two
/// thirds of the rows that promises, so as to parse few rows that are later dropped.
fn sample_pass(files: &[PathBuf], opts: &ReadOptions, step: Option<usize>, total: u64) -> Result<Sampled, DataError> {
    let mut out = Sampled {
        lay: None,
        n_rows: 0,
        step: step.unwrap_or(1),
        sample_keys: Vec::new(),
        sample_vals: Vec::new(),
        sample_w: Vec::new(),
        chunks: Vec::new(),
    };
    for (fi, path) in files.iter().enumerate() {
        for_each_block(path, |block, first_line| {
            if out.lay.is_none()
                && let Some(l) = lines(block).find(|l| !is_blank(l))
            {
                // Training data always has the label first.
                let opts = ReadOptions {
                    has_label: true,
                    ..*opts
                };
                out.lay = Some(CsvLayout::sniff(l, &opts)?);
            }
            let Some(lay) = out.lay else {
                out.chunks.push(Vec::new());
                return Ok(count_lines(block));
            };
            let nf = lay.n_feat();
            // One walk over each chunk's lines finds where its rows start and hashes them; then
            // the sampled rows are parsed where they start.
            let bounds = chunk_bounds(block, n_chunks());
            let walked: Vec<KeyedRows> = bounds.par_iter().map(|&(s, e)| keyed_rows(&block[s..e])).collect();
            let block_rows: usize = walked.iter().map(|w| w.starts.len()).sum();
            if step.is_none() && out.n_rows == 0 && block_rows > 0 {
                let est = total as f64 * block_rows as f64 / block.len() as f64 * (2.0 / 3.0);
                out.step = sketch_step(est as usize);
            }
            let (mut row0, mut line0) = (out.n_rows, first_line);
            let mut first_lines = Vec::with_capacity(bounds.len());
            for w in &walked {
                first_lines.push(line0);
                row0 += w.starts.len();
                line0 += w.n_lines;
            }
            let step = out.step;
            let parts: Vec<Result<SampleRows, DataError>> = bounds
                .par_iter()
                .zip(&walked)
                .zip(&first_lines)
                .map(|((&(s, e), w), &line_start)| {
                    let text = &block[s..e];
                    let (mut keys, mut vals, mut ws) = (Vec::new(), Vec::new(), Vec::new());
                    let mut row = vec![f32::NAN; nf];
                    for (&p, &key) in w.starts.iter().zip(&w.keys) {
                        if !in_sketch(key, step) {
                            continue;
                        }
                        // The lines before a row all end in a newline.
                        let line_no = || line_start + count_lines(&text[..p]);
                        let (_, w) = parse_row_at(text, p, &lay, &mut row, line_no)?;
                        keys.push(key);
                        vals.extend_from_slice(&row);
                        ws.push(w);
                    }
                    Ok((keys, vals, ws))
                })
                .collect();
            for p in parts {
                let (keys, vals, ws) = p?;
                out.sample_keys.extend(keys);
                out.sample_vals.extend(vals);
                out.sample_w.extend(ws);
            }
            out.chunks
                .push(walked.iter().map(|w| (w.starts.len(), w.n_lines)).collect());
            out.n_rows = row0;
            // Thin the sample to the step of the rows so far (a power of two, so the rows keyed
            // in at it are among those kept so far); at the end it is `sketch_step(n_rows)`.
            let Sampled {
                step,
                sample_keys,
                sample_vals,
                sample_w,
                n_rows,
                ..
            } = &mut out;
            if *step < sketch_step(*n_rows) {
                *step = sketch_step(*n_rows);
                let mut keep = 0;
                for i in 0..sample_keys.len() {
                    if in_sketch(sample_keys[i], *step) {
                        sample_keys[keep] = sample_keys[i];
                        sample_w[keep] = sample_w[i];
                        sample_vals.copy_within(i * nf..(i + 1) * nf, keep * nf);
                        keep += 1;
                    }
                }
                sample_keys.truncate(keep);
                sample_w.truncate(keep);
                sample_vals.truncate(keep * nf);
            }
            Ok(line0 - first_line)
        })
        .map_err(|e| in_file(files, fi, e))?;
    }
    Ok(out)
}

/// Reads headerless, label-first CSV files (in order) straight into a [`BinnedMatrix`] with at
/// most `max_bin` bins per feature. Errors name the file and line as [`crate::reader`] does.
pub fn read_csv_binned(files: &[PathBuf], opts: &ReadOptions, max_bin: usize) -> Result<BinnedData, DataError> {
    let scan = scan_csv(files, opts)?;
    let cuts = scan.sketch().cuts(max_bin);
    scan.bin(cuts)
}

/// What the first pass over training CSV found: everything choosing the cuts needs. Then
/// [`CsvScan::bin`] reads every row into codes with the cuts chosen.
pub struct CsvScan<'f> {
    files: &'f [PathBuf],
    opts: ReadOptions,
    inner: Scanned,
}

enum Scanned {
    /// A small input, parsed into floats at once, and every row's sketch key.
    Small(crate::data::Dataset, Vec<u64>),
    /// A large one: the sketch sample (the rows keyed in at `step`: `sketch_step(n_rows)`, or
    /// larger for a host's part of the rows), and what pass 2 reuses.
    Streamed {
        lay: CsvLayout,
        n_rows: usize,
        step: usize,
        sample: DenseMatrix,
        sample_keys: Vec<u64>,
        sample_w: Vec<f32>,
        chunks: Vec<Vec<(usize, usize)>>,
    },
}

/// The rows the cut points are chosen from: some or all of the input's rows with their sketch
/// keys, among them at least every row keyed in at `step` ([`crate::binning::in_sketch`]).
pub struct Sketch<'a> {
    /// Every row keyed in at this step is among `rows` (1: all the rows).
    pub step: usize,
    /// The rows' features.
    pub rows: &'a DenseMatrix,
    /// Each row's sketch key ([`crate::binning::line_key`] or [`crate::binning::values_key`]).
    pub keys: &'a [u64],
    /// Their instance weights (only with `csv_weights`).
    pub weights: Option<&'a [f32]>,
    /// Rows in the input.
    pub n_rows: usize,
}

impl Sketch<'_> {
    /// The cuts reading the input alone chooses: those of the rows keyed in at
    /// `sketch_step(n_rows)`.
    pub fn cuts(&self, max_bin: usize) -> BinCuts {
        assert!(
            self.step <= sketch_step(self.n_rows),
            "a part's sample chooses no cuts alone"
        );
        BinCuts::compute_keyed(self.rows, self.weights, self.keys, sketch_step(self.n_rows), max_bin)
    }
}

impl<'f> CsvScan<'f> {
    /// Rows in the input.
    pub fn n_rows(&self) -> usize {
        match &self.inner {
            Scanned::Small(d, _) => d.n_rows(),
            Scanned::Streamed { n_rows, .. } => *n_rows,
        }
    }

    /// The rows to choose cut points from: every row of a small input, else the sketch sample
    /// (the rows keyed in at `sketch_step(n_rows)`).
    pub fn sketch(&self) -> Sketch<'_> {
        match &self.inner {
            Scanned::Small(d, keys) => Sketch {
                step: 1,
                rows: &d.features,
                keys,
                weights: d.weights.as_deref(),
                n_rows: d.n_rows(),
            },
            Scanned::Streamed {
                n_rows,
                step,
                sample,
                sample_keys,
                sample_w,
                ..
            } => Sketch {
                step: *step,
                rows: sample,
                keys: sample_keys,
                weights: self.opts.csv_weights.then_some(&sample_w[..]),
                n_rows: *n_rows,
            },
        }
    }

    /// This scan, with a sketch sample that holds every row keyed in at `step` (a power of
    /// two): the first pass again, at that step, if it sampled more sparsely
    /// ([`scan_csv_part`]).
    pub fn sample_at_most(self, step: usize) -> Result<Self, DataError> {
        match self.inner {
            Scanned::Streamed { step: had, .. } if had > step => {
                let first = sample_pass(self.files, &self.opts, Some(step), 0)?;
                streamed(self.files, &self.opts, first)
            }
            _ => Ok(self),
        }
    }

    /// Pass 2: every row into codes with `cuts`.
    pub fn bin(self, cuts: BinCuts) -> Result<BinnedData, DataError> {
        match self.inner {
            Scanned::Small(d, _) => Ok(BinnedData {
                matrix: BinnedMatrix::new(&d.features, cuts),
                labels: d.labels,
                weights: d.weights,
            }),
            Scanned::Streamed {
                lay,
                n_rows,
                chunks,
                sample,
                ..
            } => {
                drop(sample);
                bin_pass(self.files, &self.opts, lay, n_rows, &chunks, cuts)
            }
        }
    }
}

/// Pass 1 over headerless, label-first CSV files (see [`CsvScan`]).
pub fn scan_csv<'f>(files: &'f [PathBuf], opts: &ReadOptions) -> Result<CsvScan<'f>, DataError> {
    scan_csv_with(files, opts, SMALL_INPUT_BELOW, None)
}

/// [`scan_csv`] of one host's part of the rows, whose sketch sample is thinned to the step of
/// all hosts' rows ([`crate::distributed::agree_cuts`]): the first pass samples at a step
/// estimated from `all_bytes`, the size of every host's files, so as to parse no rows that will
/// be dropped. The step of all the rows is only known once the hosts have counted them: then
/// [`CsvScan::sample_at_most`] passes over the files again in the rare case that the estimate
/// was too large.
pub fn scan_csv_part<'f>(files: &'f [PathBuf], opts: &ReadOptions, all_bytes: u64) -> Result<CsvScan<'f>, DataError> {
    scan_csv_with(files, opts, SMALL_INPUT_BELOW, Some(all_bytes))
}

/// The size of `files` in bytes (those that can be read).
pub fn input_bytes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

/// [`scan_csv`] ([`scan_csv_part`] with `all_bytes`), parsing inputs of fewer than
/// `small_below` bytes into floats at once.
pub(crate) fn scan_csv_with<'f>(
    files: &'f [PathBuf],
    opts: &ReadOptions,
    small_below: u64,
    all_bytes: Option<u64>,
) -> Result<CsvScan<'f>, DataError> {
    // Small inputs: floats for a moment cost little, and one parse beats two.
    let total = input_bytes(files);
    if total < small_below {
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
        let keys = line_keys(files)?;
        if keys.len() != d.n_rows() {
            // The same rows are counted by the same rules; a file that changed is the one way.
            return Err(DataError::Io {
                path: files.last().cloned().unwrap_or_default(),
                source: std::io::Error::other(format!(
                    "the files changed while they were being read ({} rows parsed, then {} rows \
                     hashed); read them again",
                    d.n_rows(),
                    keys.len()
                )),
            });
        }
        return Ok(CsvScan {
            files,
            opts: *opts,
            inner: Scanned::Small(d, keys),
        });
    }
    // Pass 1: layout, row count, sketch sample. The sample is the rows keyed in at
    // `sketch_step(n_rows)`, but `n_rows` is only known at the end: the pass starts from a step estimated from
    // the input's size, and in the rare case that it was too large (far fewer rows than the
    // first block promised) runs again with the right one.
    let mut first = sample_pass(files, opts, None, all_bytes.unwrap_or(total))?;
    if all_bytes.is_none() && first.step > sketch_step(first.n_rows) {
        first = sample_pass(files, opts, Some(sketch_step(first.n_rows)), total)?;
    }
    streamed(files, opts, first)
}

/// The [`CsvScan`] of a first pass.
fn streamed<'f>(files: &'f [PathBuf], opts: &ReadOptions, first: Sampled) -> Result<CsvScan<'f>, DataError> {
    let Sampled {
        lay,
        n_rows,
        step,
        sample_keys,
        sample_vals,
        sample_w,
        chunks,
    } = first;
    let Some(lay) = lay else {
        return Err(DataError::Empty);
    };
    if n_rows == 0 {
        return Err(DataError::Empty);
    }
    let nf = lay.n_feat();
    let sample = DenseMatrix::new(sample_keys.len(), nf, sample_vals).ok_or(DataError::Empty)?;
    Ok(CsvScan {
        files,
        opts: *opts,
        inner: Scanned::Streamed {
            lay,
            n_rows,
            step,
            sample,
            sample_keys,
            sample_w,
            chunks,
        },
    })
}

/// The sketch key of every row of `files`, in order: the rows the streaming passes find (the
/// same blocks, without a byte-order mark, and the same rules for blank lines), so that a small
/// input parsed at once samples the rows streaming it would.
fn line_keys(files: &[PathBuf]) -> Result<Vec<u64>, DataError> {
    let mut keys = Vec::new();
    for (fi, path) in files.iter().enumerate() {
        for_each_block(path, |block, _| {
            let bounds = chunk_bounds(block, n_chunks());
            let walked: Vec<KeyedRows> = bounds.par_iter().map(|&(s, e)| keyed_rows(&block[s..e])).collect();
            let mut n_lines = 0;
            for w in walked {
                keys.extend(w.keys);
                n_lines += w.n_lines;
            }
            Ok(n_lines)
        })
        .map_err(|e| in_file(files, fi, e))?;
    }
    Ok(keys)
}

/// Pass 2: every row of `files` into codes with `cuts` (`chunks` as pass 1 counted them).
fn bin_pass(
    files: &[PathBuf],
    opts: &ReadOptions,
    lay: CsvLayout,
    n_rows: usize,
    chunks: &[Vec<(usize, usize)>],
    cuts: BinCuts,
) -> Result<BinnedData, DataError> {
    let nf = lay.n_feat();
    let mut codes = vec![0u8; n_rows * nf];
    let mut labels = vec![0f32; n_rows];
    let mut weights = vec![1f32; if opts.csv_weights { n_rows } else { 0 }];
    let mut done = 0usize;
    let mut block_no = 0;
    for (fi, path) in files.iter().enumerate() {
        let changed = || DataError::Io {
            path: path.clone(),
            source: std::io::Error::other("the file changed while it was being read"),
        };
        for_each_block(path, |block, first_line| {
            let bounds = chunk_bounds(block, n_chunks());
            // The first pass counted the rows and lines of the same chunks (the same blocks
            // cut the same way); a file that changed since is caught by the row checks below.
            let counts = match chunks.get(block_no) {
                Some(c) if c.len() == bounds.len() => c.clone(),
                _ => bounds.par_iter().map(|&(s, e)| count_rows(&block[s..e])).collect(),
            };
            block_no += 1;
            let block_rows: usize = counts.iter().map(|c| c.0).sum();
            let block_lines: usize = counts.iter().map(|c| c.1).sum();
            if done + block_rows > n_rows {
                return Err(changed());
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
                            self.r += 1;
                            // More rows than the first pass counted: the file changed (reported
                            // by the caller).
                            let Some(slot) = self.labels.get_mut(r) else { return };
                            *slot = label;
                            self.cuts.bin_row(&self.row, &mut self.codes[r * nf..(r + 1) * nf]);
                            if let Some(slot) = self.weights.get_mut(r) {
                                *slot = weight;
                            }
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
                    for_each_row(text, line_start, &lay, &mut sink)?;
                    if sink.r != sink.labels.len() {
                        return Err(changed());
                    }
                    Ok(())
                })
                .collect::<Result<Vec<()>, DataError>>()?;
            done += block_rows;
            Ok(block_lines)
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
pub(crate) mod tests {
    use super::*;
    use crate::binning::{SKETCH_ROWS, line_key};

    pub(crate) fn tmp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The sketch keys of the rows of CSV `text`, found without the readers' code: a hash of
    /// each line that is not blank.
    fn keys_of(text: &str) -> Vec<u64> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        text.split('\n')
            .filter(|l| !l.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r')))
            .map(|l| line_key(l.as_bytes()))
            .collect()
    }

    /// The cuts of CSV `text` read as floats (`floats`), sampled by the rows' keys.
    fn keyed_cuts(text: &str, floats: &crate::data::Dataset, max_bin: usize) -> BinCuts {
        let keys = keys_of(text);
        assert_eq!(keys.len(), floats.n_rows());
        BinCuts::compute_keyed(&floats.features, None, &keys, sketch_step(keys.len()), max_bin)
    }

    /// A pseudo-random number for `i` (splitmix64).
    pub(crate) fn noise(i: u64) -> u64 {
        let mut z = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// CSV rows `from..to` of three features with random, mostly distinct values (so the cuts
    /// depend on which rows are sampled), some missing.
    pub(crate) fn many_values(from: u64, to: u64) -> String {
        let mut text = String::new();
        for i in from..to {
            let r = noise(i);
            let a = (r >> 40) as f32 / 1000.0;
            let b = if i % 11 == 0 {
                String::new()
            } else {
                format!("{}", ((r >> 8) & 0xFFFF) as f32 / 16.0 - 3.5)
            };
            text.push_str(&format!("{},{a},{b},{}\n", i % 2, (r & 0xFF) * (r >> 60)));
        }
        text
    }

    #[test]
    fn the_sample_does_not_depend_on_file_order_splits_or_the_path() {
        // More rows than `SKETCH_ROWS` (a step of 2), cut at row counts that are not multiples
        // of it.
        let n = 300_000;
        assert!(sketch_step(n as usize) > 1);
        let whole = vec![tmp("order-all.csv", &many_values(0, n))];
        let (a, b, c) = (
            tmp("order-a.csv", &many_values(0, 100_001)),
            tmp("order-b.csv", &many_values(100_001, 222_222)),
            tmp("order-c.csv", &many_values(222_222, n)),
        );
        let cuts = |files: &[PathBuf], small_below: u64| {
            let scan = scan_csv_with(files, &ReadOptions::default(), small_below, None).unwrap();
            assert_eq!(scan.n_rows(), n as usize);
            scan.sketch().cuts(64)
        };
        // Streamed, one file.
        let reference = cuts(&whole, 0);
        // The data is such that a sample by row index would differ with the files' order.
        let by_index = |files: &[&PathBuf]| {
            let parts = files
                .iter()
                .map(|f| read_file(f, ContentType::Csv, &ReadOptions::default()).unwrap());
            let all = parts.reduce(|a, b| a.append(b)).unwrap();
            BinCuts::compute(&all.features, None, 64)
        };
        assert_ne!(by_index(&[&a, &b, &c]), by_index(&[&b, &c, &a]));
        // Parsed at once (the small-input path), one file.
        assert_eq!(cuts(&whole, u64::MAX), reference);
        for files in [
            vec![a.clone(), b.clone(), c.clone()],
            vec![c.clone(), a.clone(), b.clone()],
            vec![b, c, a],
        ] {
            assert_eq!(cuts(&files, 0), reference);
            assert_eq!(cuts(&files, u64::MAX), reference);
        }
        // The rows' order within a file does not matter either.
        let reversed: String = many_values(0, n).lines().rev().map(|l| format!("{l}\r\n")).collect();
        assert_eq!(cuts(&[tmp("order-rev.csv", &reversed)], 0), reference);
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
        let cuts = keyed_cuts(&text, &floats, 64);
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

    /// Cuts and codes of `p` streamed equal those of reading the floats first (and sampling
    /// them by the same keys).
    fn assert_streams_like_floats(p: &Path, max_bin: usize) {
        let opts = ReadOptions::default();
        let streamed = read_csv_binned(&[p.to_path_buf()], &opts, max_bin).unwrap();
        let floats = read_file(p, ContentType::Csv, &opts).unwrap();
        let text = std::fs::read_to_string(p).unwrap();
        let cuts = keyed_cuts(&text, &floats, max_bin);
        assert_eq!(streamed.matrix.cuts(), &cuts);
        let direct = BinnedMatrix::new(&floats.features, cuts);
        assert_eq!(streamed.matrix.group_codes(), direct.group_codes());
        assert_eq!(streamed.labels, floats.labels);
    }

    #[test]
    fn a_step_estimated_too_large_is_corrected() {
        // The first block's short rows promise about 400k rows (a sketch step of 2), but long
        // rows follow and there are fewer than `SKETCH_ROWS`: every row must be sampled.
        let mut text = String::new();
        let mut i = 0u64;
        while text.len() < 2 * BLOCK {
            text.push_str(&format!("{},{}\n", i % 2, i * 7919 % 1000));
            i += 1;
        }
        let pad = " ".repeat(1000);
        while text.len() < 3_000_000 {
            text.push_str(&format!("{},{pad}{}\n", i % 2, (i * 104_729 % 100_000) as f32 / 7.0));
            i += 1;
        }
        assert!((i as usize) < SKETCH_ROWS);
        assert_streams_like_floats(&tmp("estimate.csv", &text), 16);
    }

    #[test]
    fn blocks_end_at_line_ends_even_after_a_long_line() {
        // A byte-order mark, a line longer than a block, blank lines, CRLF.
        let mut text = String::from("\u{feff}");
        for i in 0..20_000u64 {
            if i == 5_000 {
                text.push_str(&format!("1,{}3.25\r\n", " ".repeat(3 * BLOCK)));
            }
            if i % 997 == 0 {
                text.push_str("\n \r\n");
            }
            text.push_str(&format!("{},{}\r\n", i % 2, (i * 31 % 977) as f32 / 3.0));
        }
        assert_streams_like_floats(&tmp("long.csv", &text), 32);
        let d = read_csv_binned(&[tmp("long2.csv", &text)], &ReadOptions::default(), 32).unwrap();
        assert_eq!(d.matrix.n_rows(), 20_001);
        // An error after the long line names its line.
        let at = text.rfind("1,2.").unwrap();
        let bad = format!("{}1,x.{}", &text[..at], &text[at + 4..]);
        let line = text[..at].matches('\n').count() + 1;
        let e = read_csv_binned(&[tmp("bad.csv", &bad)], &ReadOptions::default(), 32)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("file 'bad.csv': line {line}: could not parse field 2 ('x.")),
            "{e}"
        );
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

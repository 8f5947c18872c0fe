//! Readers for the text formats SageMaker's built-in XGBoost accepts: headerless CSV with the label
//! first, and libsvm (`label[:weight] index:value ...`).
//!
//! The CSV reader is built for throughput: the input is one byte slice (usually a memory map), rows
//! are counted in a first parallel pass so that the second parallel pass can parse every chunk
//! straight into its slice of the final matrix, with no per-field allocation and no copy. A row
//! of plain numbers is read field after field straight off the bytes, eight at a time, without
//! first finding the line's end (`for_each_row`); any other row goes through the general path,
//! which also words the errors.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::data::{Dataset, DenseMatrix};

/// Data format of a channel, from its `ContentType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// `text/csv`: label first, no header.
    Csv,
    /// `text/libsvm`: `label[:weight] index:value ...`.
    Libsvm,
    /// `application/x-recordio-protobuf`: the SDK's `record_set()` / `write_numpy_to_dense_tensor`
    /// records, the label in `label["values"]`; keys a sparse record leaves out are missing.
    RecordIo,
    /// `application/x-parquet`: numeric columns, the label first; nulls are missing values.
    Parquet,
}

impl ContentType {
    /// Parses a SageMaker `ContentType`; a missing one means libsvm, as in the XGBoost container.
    pub fn parse(content_type: Option<&str>) -> Result<Self, DataError> {
        let Some(raw) = content_type else {
            return Ok(ContentType::Libsvm);
        };
        let lower = raw.trim().to_ascii_lowercase();
        let mut parts = lower.split(';').map(str::trim);
        let base = parts.next().unwrap_or("");
        let params: Vec<&str> = parts.filter(|p| !p.is_empty()).collect();
        match base {
            "text/csv" | "csv" => {
                for p in params {
                    let compact: String = p.chars().filter(|c| !c.is_whitespace()).collect();
                    if compact != "label_size=1" {
                        return Err(DataError::ContentType {
                            value: raw.to_string(),
                            why: format!("parameter '{p}' is not supported; only 'label_size=1' is allowed"),
                        });
                    }
                }
                Ok(ContentType::Csv)
            }
            "text/libsvm" | "libsvm" | "text/x-libsvm" if params.is_empty() => Ok(ContentType::Libsvm),
            "application/x-recordio-protobuf" | "recordio-protobuf" if params.is_empty() => Ok(ContentType::RecordIo),
            "application/x-parquet" | "parquet" if params.is_empty() => Ok(ContentType::Parquet),
            _ => Err(DataError::ContentType {
                value: raw.to_string(),
                why: "use text/csv, text/csv;label_size=1, csv, text/libsvm, text/x-libsvm, libsvm, \
                      application/x-recordio-protobuf or application/x-parquet"
                    .to_string(),
            }),
        }
    }
}

/// What went wrong while reading data. Line and field numbers are 1-based.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A field that is neither empty nor a number.
    #[error("line {line}: could not parse field {field} ('{text}') as a number{hint}")]
    BadNumber {
        /// 1-based line number.
        line: usize,
        /// 1-based field number (field 1 is the label).
        field: usize,
        /// The offending text (truncated).
        text: String,
        /// Extra advice (e.g. about header rows), may be empty.
        hint: String,
    },
    /// A row whose field count differs from the first row's.
    #[error(
        "line {line}: found {found} fields but the first row has {expected}; every row needs the \
         same number of comma-separated fields (use an empty field for a missing value)"
    )]
    FieldCount {
        /// 1-based line number.
        line: usize,
        /// Fields in the first row.
        expected: usize,
        /// Fields in this row.
        found: usize,
    },
    /// Label (or weight) empty or not finite.
    #[error("line {line}: the {what} is missing or not finite; every row needs a {what}")]
    MissingValue {
        /// 1-based line number.
        line: usize,
        /// "label" or "weight".
        what: &'static str,
    },
    /// A negative instance weight.
    #[error("line {line}: instance weight {value} is negative; weights must be >= 0")]
    NegativeWeight {
        /// 1-based line number.
        line: usize,
        /// The weight.
        value: f32,
    },
    /// A malformed libsvm token.
    #[error("line {line}: could not parse '{token}' as libsvm 'index:value'{hint}")]
    BadLibsvm {
        /// 1-based line number.
        line: usize,
        /// The offending token (truncated).
        token: String,
        /// Extra advice, may be empty.
        hint: String,
    },
    /// Rows have a different number of features than expected (e.g. than the model).
    #[error("expected {expected} feature columns but the data has {found}")]
    FeatureCount {
        /// Expected feature count.
        expected: usize,
        /// Found feature count.
        found: usize,
    },
    /// A `ContentType` kiln does not read.
    #[error("content type '{value}' is not supported: {why}")]
    ContentType {
        /// The content type given.
        value: String,
        /// Why / what to use instead.
        why: String,
    },
    /// No data rows at all.
    #[error("no data rows found")]
    Empty,
    /// Malformed binary data (RecordIO-protobuf): what is wrong, and where.
    #[error("{0}")]
    Malformed(String),
    /// Sparse data whose dense form would not fit in memory.
    #[error(
        "{rows} rows x {features} features is too large to hold densely (kiln stores features \
         densely); use fewer or renumbered feature indices"
    )]
    TooWide {
        /// Rows.
        rows: usize,
        /// Features (largest index + 1).
        features: usize,
    },
    /// File system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An error inside one file of a channel.
    #[error("file '{file}': {source}")]
    InFile {
        /// File name relative to the channel directory.
        file: String,
        /// The error.
        source: Box<DataError>,
    },
}

/// Options for parsing text data.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// The first column (CSV) or first token (libsvm) is the label.
    pub has_label: bool,
    /// CSV only: the second column is an instance weight (`csv_weights=1`).
    pub csv_weights: bool,
    /// Minimum number of feature columns (pads with missing values); used to align validation
    /// or prediction data with the training data.
    pub min_features: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            has_label: true,
            csv_weights: false,
            min_features: 0,
        }
    }
}

/// Parses data in the given format from memory.
pub fn parse_bytes(bytes: &[u8], content_type: ContentType, opts: &ReadOptions) -> Result<Dataset, DataError> {
    match content_type {
        ContentType::Csv => parse_csv(bytes, opts),
        ContentType::Libsvm => parse_libsvm(bytes, opts),
        ContentType::RecordIo => parse_recordio(bytes, opts),
        ContentType::Parquet => crate::parquet_reader::parse_parquet(bytes, opts),
    }
}

/// RecordIO-protobuf records as a data set: every record's features (a sparse record's absent
/// keys missing, as XGBoost reads a CSR matrix) and, when `opts.has_label`, its label.
fn parse_recordio(bytes: &[u8], opts: &ReadOptions) -> Result<Dataset, DataError> {
    let mut rows = crate::protobuf::DenseRows::new(0);
    crate::protobuf::read_dense_with(bytes, "RecordIO-protobuf", &mut rows, f32::NAN)
        .map_err(|e| DataError::Malformed(e.to_string()))?;
    let n = rows.n_rows();
    if n == 0 {
        return Err(DataError::Empty);
    }
    let labels = if opts.has_label {
        if let Some(i) = rows.labels.iter().position(|l| l.is_nan()) {
            return Err(DataError::Malformed(format!(
                "record {} has no label[\"values\"] tensor; training data needs one per record",
                i + 1
            )));
        }
        std::mem::take(&mut rows.labels)
    } else {
        Vec::new()
    };
    let features = crate::data::DenseMatrix::new(n, rows.n_cols, rows.values)
        .ok_or(DataError::Empty)?
        .with_min_cols(opts.min_features);
    Ok(Dataset {
        features,
        labels,
        weights: None,
    })
}

/// Reads one file (memory-mapped; `.gz` files are decompressed into memory first).
pub fn read_file(path: &Path, content_type: ContentType, opts: &ReadOptions) -> Result<Dataset, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.extension().is_some_and(|e| e == "gz") {
        let file = std::fs::File::open(path).map_err(io)?;
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(file), &mut buf).map_err(io)?;
        return parse_bytes(&buf, content_type, opts);
    }
    let map = map_file(path).map_err(io)?;
    parse_bytes(map.as_bytes(), content_type, opts)
}

/// Reads every data file under `dir` (recursively, sorted by path, skipping names that start with
/// `.` or `_`, as the XGBoost container does) and appends them.
pub fn read_dir(dir: &Path, content_type: ContentType, opts: &ReadOptions) -> Result<Dataset, DataError> {
    let files = list_files(dir)?;
    let mut out: Option<Dataset> = None;
    for f in &files {
        let ds = read_file(f, content_type, opts).map_err(|e| match e {
            DataError::Io { .. } => e,
            other => DataError::InFile {
                file: f.strip_prefix(dir).unwrap_or(f).to_string_lossy().into_owned(),
                source: Box::new(other),
            },
        });
        let ds = match ds {
            Ok(ds) => ds,
            // An empty file among others is harmless; only an empty channel is an error.
            Err(DataError::InFile { source, .. }) if matches!(*source, DataError::Empty) => {
                continue;
            }
            Err(e) => return Err(e),
        };
        out = Some(match out {
            None => ds,
            Some(prev) => {
                let fixed_width = matches!(content_type, ContentType::Csv | ContentType::Parquet);
                if fixed_width && prev.features.n_cols() != ds.features.n_cols() {
                    return Err(DataError::InFile {
                        file: f.to_string_lossy().into_owned(),
                        source: Box::new(DataError::FeatureCount {
                            expected: prev.features.n_cols(),
                            found: ds.features.n_cols(),
                        }),
                    });
                }
                prev.append(ds)
            }
        });
    }
    out.ok_or(DataError::Empty)
}

/// Lists data files under `dir` recursively, sorted, skipping hidden (`.`) and `_` names.
pub fn list_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
        let rd = std::fs::read_dir(dir).map_err(|source| DataError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut entries: Vec<PathBuf> = Vec::new();
        for e in rd {
            let e = e.map_err(|source| DataError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            entries.push(e.path());
        }
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    Ok(out)
}

/// A read-only view of a whole file: a memory map, or a buffer for empty/special files.
pub struct FileBytes {
    inner: FileBytesInner,
}

enum FileBytesInner {
    Map(memmap2::Mmap),
    Buf(Vec<u8>),
}

impl FileBytes {
    /// The file's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.inner {
            FileBytesInner::Map(m) => m,
            FileBytesInner::Buf(b) => b,
        }
    }
}

/// Maps a file read-only.
pub fn map_file(path: &Path) -> std::io::Result<FileBytes> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() == 0 {
        // Mapping zero bytes fails on Linux, and pipes/devices cannot be mapped.
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut buf)?;
        return Ok(FileBytes {
            inner: FileBytesInner::Buf(buf),
        });
    }
    // SAFETY: `Mmap::map` is unsafe because another process could truncate or modify the file
    // while it is mapped, which Rust's aliasing rules cannot see. Channel files are inputs staged
    // for this job and nothing writes them while the algorithm runs (the SageMaker contract gives
    // the algorithm a read-only view of its channels); the mapping is read-only (`PROT_READ`), and
    // it lives only while `FileBytes` is borrowed for parsing. `tests::mmap_matches_read` checks
    // that the mapped bytes equal `std::fs::read`.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(FileBytes {
        inner: FileBytesInner::Map(map),
    })
}

// ------------------------------------------------------------------------------------------------
// Number parsing

const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// Parses a decimal number as `f64`, correctly rounded. Short decimals (at most 19 significant
/// digits, exponent within ±22) take Clinger's exact fast path: the mantissa fits in an `f64`
/// exactly and so does the power of ten, so one IEEE multiply or divide gives the correctly rounded
/// result. Everything else (long mantissas, `inf`, `nan`, ...) falls back to `str::parse`.
/// Rounding to `f32` afterwards matches how pandas and numpy read CSV into `float32`.
#[inline]
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    let n = s.len();
    if n == 0 {
        return None;
    }
    let mut i = 0;
    let neg = match s[0] {
        b'-' => {
            i = 1;
            true
        }
        b'+' => {
            i = 1;
            false
        }
        _ => false,
    };
    let mut mant: u64 = 0;
    let mut digits = 0u32;
    let mut exp: i32 = 0;
    let mut any = false;
    while i < n && s[i].is_ascii_digit() {
        any = true;
        if mant == 0 && s[i] == b'0' {
            i += 1;
            continue;
        }
        if digits >= 19 {
            return parse_slow(s);
        }
        mant = mant * 10 + u64::from(s[i] - b'0');
        digits += 1;
        i += 1;
    }
    if i < n && s[i] == b'.' {
        i += 1;
        while i < n && s[i].is_ascii_digit() {
            any = true;
            if mant == 0 && s[i] == b'0' {
                exp -= 1;
                i += 1;
                continue;
            }
            if digits >= 19 {
                return parse_slow(s);
            }
            mant = mant * 10 + u64::from(s[i] - b'0');
            digits += 1;
            exp -= 1;
            i += 1;
        }
    }
    if !any {
        return parse_slow(s);
    }
    if i < n && (s[i] == b'e' || s[i] == b'E') {
        i += 1;
        let mut eneg = false;
        if i < n && (s[i] == b'-' || s[i] == b'+') {
            eneg = s[i] == b'-';
            i += 1;
        }
        let start = i;
        let mut e: i32 = 0;
        while i < n && s[i].is_ascii_digit() {
            if e < 100_000 {
                e = e * 10 + i32::from(s[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        exp += if eneg { -e } else { e };
    }
    if i != n {
        return parse_slow(s);
    }
    if mant == 0 {
        return Some(if neg { -0.0 } else { 0.0 });
    }
    if mant <= (1u64 << 53) && (-22..=22).contains(&exp) {
        let m = mant as f64;
        let v = if exp >= 0 {
            m * POW10[exp as usize]
        } else {
            m / POW10[(-exp) as usize]
        };
        return Some(if neg { -v } else { v });
    }
    parse_slow(s)
}

/// The common field, parsed where it lies in `line`: `[-+]digits[.digits]` (1 to 19 digits, no
/// exponent, a value the fast path of [`parse_f64`] computes exactly) ending at `delim` or at
/// the end of the line. Returns the value (the one [`parse_f64`] gives) and the field's end;
/// `None` for anything else, which the general path (delimiter search, trim, [`parse_f64`])
/// then reads. One pass over the bytes, without the search and the call per field.
///
/// Eight bytes at a time: the digits of the integer part and of the fraction are each found
/// and converted with a few word operations ([`digit_run`], [`digits_value`]), without a
/// branch per byte, whose exit mispredicts on fields of varying length. A part of eight or
/// more digits takes the byte-by-byte loop ([`plain_number_bytes`]).
#[inline(always)]
fn plain_number(line: &[u8], start: usize, delim: u8) -> Option<(f64, usize)> {
    let c0 = line.get(start).copied().unwrap_or(0);
    let neg = c0 == b'-';
    let mut i = start + usize::from(neg | (c0 == b'+'));
    let w = load8(line, i);
    let n_int = digit_run(w);
    if n_int == 8 {
        return plain_number_bytes(line, start, delim);
    }
    let mut mant = digits_value(w, n_int);
    i += n_int;
    let mut frac = 0;
    if line.get(i) == Some(&b'.') {
        i += 1;
        let w = load8(line, i);
        frac = digit_run(w);
        if frac == 8 && line.get(i + 8).is_some_and(u8::is_ascii_digit) {
            return plain_number_bytes(line, start, delim);
        }
        mant = mant * POW10_U64[frac] + digits_value(w, frac);
        i += frac;
    }
    let ends = match line.get(i) {
        None => true,
        Some(&c) => c == delim,
    };
    // At most 7 + 8 digits: the 19-digit limit of the byte loop always holds.
    if !ends || n_int + frac == 0 || mant > 1 << 53 {
        return None;
    }
    let m = mant as f64;
    let v = if frac == 0 { m } else { m / POW10[frac] };
    Some((if neg { -v } else { v }, i))
}

/// Powers of ten up to 10^8, as integers.
const POW10_U64: [u64; 9] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];

/// The eight bytes of `line` from `i` as a little-endian word (first byte lowest); bytes past
/// the line's end read as zero (not a digit).
#[inline(always)]
fn load8(line: &[u8], i: usize) -> u64 {
    let n = line.len();
    if let Some(b) = line.get(i..i + 8) {
        return u64::from_le_bytes(b.try_into().expect("eight bytes"));
    }
    if i >= n {
        return 0;
    }
    if n >= 8 {
        // The line's last eight bytes, shifted so byte `i` comes lowest; zeros come in on top.
        let last = u64::from_le_bytes(line[n - 8..].try_into().expect("eight bytes"));
        return last >> (8 * (i + 8 - n));
    }
    let mut b = [0u8; 8];
    b[..n - i].copy_from_slice(&line[i..]);
    u64::from_le_bytes(b)
}

/// How many of the bytes of `w` (from the lowest) are ASCII digits before the first that is
/// not: 0 to 8.
#[inline(always)]
fn digit_run(w: u64) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // A byte below '0' borrows (high bit set), one above '9' carries into its high bit when
    // 0x46 is added. Borrows and carries only spill into higher bytes, past the first
    // non-digit, so the lowest flagged byte is exact.
    let flagged = (w.wrapping_sub(0x30 * ONES) | w.wrapping_add(0x46 * ONES)) & (0x80 * ONES);
    (flagged.trailing_zeros() / 8) as usize
}

/// The value of the first `n` (0 to 8) bytes of `w`, ASCII digits, most significant first.
#[inline(always)]
fn digits_value(w: u64, n: usize) -> u64 {
    if n == 0 {
        return 0;
    }
    const ONES: u64 = 0x0101_0101_0101_0101;
    // Digit values, the `n` digits moved to the top bytes (zeros before them are leading
    // zeros), then pairs, quads and the eight combined.
    let v = w.wrapping_sub(0x30 * ONES) << (8 * (8 - n));
    let v = (v.wrapping_mul(10) + (v >> 8)) & 0x00FF_00FF_00FF_00FF;
    let v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_FFFF_0000_FFFF;
    (v.wrapping_mul(10_000) + (v >> 32)) & 0xFFFF_FFFF
}

/// [`plain_number`] one byte at a time, for parts of eight digits or more.
#[cold]
fn plain_number_bytes(line: &[u8], start: usize, delim: u8) -> Option<(f64, usize)> {
    let mut i = start;
    let neg = match line.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut mant: u64 = 0;
    // Digits from `i` on, into `mant` (wrapping: more than 19 digits are refused below).
    let mut digits = |i: &mut usize| {
        let from = *i;
        while let Some(d) = line.get(*i).map(|c| c.wrapping_sub(b'0')).filter(|&d| d <= 9) {
            mant = mant.wrapping_mul(10).wrapping_add(u64::from(d));
            *i += 1;
        }
        *i - from
    };
    let int_digits = digits(&mut i);
    let mut frac = 0;
    if line.get(i) == Some(&b'.') {
        i += 1;
        frac = digits(&mut i);
    }
    let ends = match line.get(i) {
        None => true,
        Some(&c) => c == delim,
    };
    if !ends || !(1..=19).contains(&(int_digits + frac)) || frac > 22 || mant > 1 << 53 {
        return None;
    }
    let m = mant as f64;
    let v = if frac == 0 { m } else { m / POW10[frac] };
    Some((if neg { -v } else { v }, i))
}

#[cold]
fn parse_slow(s: &[u8]) -> Option<f64> {
    std::str::from_utf8(s).ok()?.parse::<f64>().ok()
}

#[inline]
fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if *first == b' ' || *first == b'\t' || *first == b'"' {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if *last == b' ' || *last == b'\t' || *last == b'\r' || *last == b'"' {
            s = rest;
        } else {
            break;
        }
    }
    s
}

pub(crate) fn excerpt(s: &[u8]) -> String {
    let t = String::from_utf8_lossy(s);
    if t.chars().count() > 40 {
        format!("{}...", t.chars().take(40).collect::<String>())
    } else {
        t.into_owned()
    }
}

// ------------------------------------------------------------------------------------------------
// Chunking

/// Splits `bytes` into about `n` pieces that end just after a newline (or at the end).
pub(crate) fn chunk_bounds(bytes: &[u8], n: usize) -> Vec<(usize, usize)> {
    let len = bytes.len();
    let target = (len / n.max(1)).max(1 << 16);
    let mut out = Vec::new();
    let mut start = 0;
    while start < len {
        let mut end = (start + target).min(len);
        if end < len {
            end = match memchr::memchr(b'\n', &bytes[end..]) {
                Some(p) => end + p + 1,
                None => len,
            };
        }
        out.push((start, end));
        start = end;
    }
    out
}

pub(crate) fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

/// Iterates the lines of a chunk (without the `\n`).
pub(crate) fn lines(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = chunk;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match memchr::memchr(b'\n', rest) {
            Some(p) => {
                let line = &rest[..p];
                rest = &rest[p + 1..];
                Some(line)
            }
            None => {
                let line = rest;
                rest = &[];
                Some(line)
            }
        }
    })
}

/// (rows with data, lines) in a chunk.
pub(crate) fn count_rows(chunk: &[u8]) -> (usize, usize) {
    let mut rows = 0;
    let mut n_lines = 0;
    for line in lines(chunk) {
        n_lines += 1;
        if !is_blank(line) {
            rows += 1;
        }
    }
    (rows, n_lines)
}

/// The offsets in `chunk` where its rows with data start (pushed to `starts`) and each row's
/// sketch key ([`crate::binning::line_key`], pushed to `keys`), in one walk over its lines (a
/// line is hashed while it is in cache from finding its end); returns the number of lines.
pub(crate) fn row_starts(chunk: &[u8], starts: &mut Vec<usize>, keys: &mut Vec<u64>) -> usize {
    let mut n_lines = 0;
    let mut p = 0;
    while p < chunk.len() {
        let end = memchr::memchr(b'\n', &chunk[p..]).map_or(chunk.len(), |e| p + e);
        let line = &chunk[p..end];
        if !is_blank(line) {
            starts.push(p);
            keys.push(crate::binning::line_key(line));
        }
        n_lines += 1;
        p = end + 1;
    }
    n_lines
}

/// Lines in a chunk: its newlines, and a last line without one.
pub(crate) fn count_lines(chunk: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', chunk).count() + usize::from(chunk.last().is_some_and(|&b| b != b'\n'))
}

pub(crate) fn n_chunks() -> usize {
    rayon::current_num_threads() * 8
}

// ------------------------------------------------------------------------------------------------
// CSV

pub(crate) fn sniff_delimiter(first_line: &[u8]) -> u8 {
    let count = |d: u8| memchr::memchr_iter(d, first_line).count();
    [b',', b'\t', b';', b'|']
        .into_iter()
        .map(|d| (count(d), d))
        .filter(|(c, _)| *c > 0)
        .max_by_key(|(c, d)| (*c, *d == b','))
        .map_or(b',', |(_, d)| d)
}

/// The shape of CSV data, read off its first data line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CsvLayout {
    /// The field delimiter.
    pub(crate) delim: u8,
    /// Fields per line.
    pub(crate) n_fields: usize,
    /// The first field is the label.
    pub(crate) has_label: bool,
    /// The second field is an instance weight.
    pub(crate) has_weight: bool,
}

impl CsvLayout {
    /// The layout of data whose first data line is `first_line`.
    pub(crate) fn sniff(first_line: &[u8], opts: &ReadOptions) -> Result<Self, DataError> {
        let delim = sniff_delimiter(first_line);
        let lay = Self {
            delim,
            n_fields: memchr::memchr_iter(delim, first_line).count() + 1,
            has_label: opts.has_label,
            has_weight: opts.has_label && opts.csv_weights,
        };
        if lay.n_fields < lay.lead() {
            return Err(DataError::FieldCount {
                line: 1,
                expected: lay.lead(),
                found: lay.n_fields,
            });
        }
        Ok(lay)
    }

    /// Fields before the features (label, weight).
    pub(crate) fn lead(&self) -> usize {
        usize::from(self.has_label) + usize::from(self.has_weight)
    }

    /// Feature fields per line.
    pub(crate) fn n_feat(&self) -> usize {
        self.n_fields - self.lead()
    }
}

/// Where [`for_each_row`] puts rows.
pub(crate) trait RowSink {
    /// The slice (`n_feat` values) the next row's features are written to.
    fn features(&mut self) -> &mut [f32];
    /// The row whose features were just written is complete: here are its label (NaN without
    /// a label column) and weight (1 without a weight column).
    fn push(&mut self, label: f32, weight: f32);
}

/// Parses the data rows of `text` (whole lines; the first is line `first_line`) into `sink`.
/// Blank lines are skipped.
///
/// Most rows take [`fast_row`], which reads the fields straight off the bytes without first
/// finding the line's end; a row it does not take (exponents, quotes, spaces, long numbers,
/// a wrong field count, a missing label ...) is parsed by [`parse_row`], which also produces
/// the errors.
pub(crate) fn for_each_row(
    text: &[u8],
    first_line: usize,
    lay: &CsvLayout,
    sink: &mut impl RowSink,
) -> Result<(), DataError> {
    let mut p = 0;
    let mut line_no = first_line;
    let mut lead = [f32::NAN, 1.0];
    while p < text.len() {
        let row = sink.features();
        match fast_row_checked(text, p, lay, &mut lead, row) {
            Some(next) => {
                sink.push(lead[0], lead[1]);
                p = next;
            }
            None => {
                let end = memchr::memchr(b'\n', &text[p..]).map_or(text.len(), |e| p + e);
                let line = &text[p..end];
                if !is_blank(line) {
                    let (label, weight) = parse_row(line, line_no, lay, row)?;
                    sink.push(label, weight);
                }
                p = end + 1;
            }
        }
        line_no += 1;
    }
    Ok(())
}

/// The row with data that starts at `text[p]` (whole lines follow it), parsed as
/// [`for_each_row`] parses it into `row`: (label, weight). `line_no` gives its line number,
/// needed only for an error.
pub(crate) fn parse_row_at(
    text: &[u8],
    p: usize,
    lay: &CsvLayout,
    row: &mut [f32],
    line_no: impl FnOnce() -> usize,
) -> Result<(f32, f32), DataError> {
    let mut lead = [f32::NAN, 1.0];
    if fast_row_checked(text, p, lay, &mut lead, row).is_some() {
        return Ok((lead[0], lead[1]));
    }
    let end = memchr::memchr(b'\n', &text[p..]).map_or(text.len(), |e| p + e);
    parse_row(&text[p..end], line_no(), lay, row)
}

/// [`fast_row`], declining a negative weight too (an error the general path words).
#[inline(always)]
fn fast_row_checked(text: &[u8], p: usize, lay: &CsvLayout, lead: &mut [f32; 2], row: &mut [f32]) -> Option<usize> {
    fast_row(text, p, lay, lead, row).filter(|_| !lay.has_weight || lead[1] >= 0.0)
}

/// One row read without finding its end first: every field is a plain number [`fast_field`]
/// reads (or an empty feature), separated by `lay.delim` and ending in `\n` or `\r\n`. The
/// label and weight go to `lead`, the features to `row`. Returns where the next line starts, or
/// `None` when the row is anything else, or ends too near the end of `text`.
#[inline(always)]
fn fast_row(text: &[u8], p: usize, lay: &CsvLayout, lead: &mut [f32; 2], row: &mut [f32]) -> Option<usize> {
    let mut q = p;
    for slot in &mut lead[..lay.lead()] {
        let (v, end, term) = fast_field(text, q)?;
        // A missing label or weight is an error the general path words.
        if v.is_nan() || term != lay.delim {
            return None;
        }
        *slot = v;
        q = end + 1;
    }
    let (last, feats) = row.split_last_mut()?;
    for slot in feats {
        let (v, end, term) = fast_field(text, q)?;
        if term != lay.delim {
            return None;
        }
        *slot = v;
        q = end + 1;
    }
    let (v, end, term) = fast_field(text, q)?;
    *last = v;
    // Without a label, a line of one missing feature could be a blank line.
    if !lay.has_label && row[0].is_nan() {
        return None;
    }
    match term {
        b'\n' => Some(end + 1),
        b'\r' if text.get(end + 1) == Some(&b'\n') => Some(end + 2),
        _ => None,
    }
}

/// The field at `text[p]` read as `[-]digits[.digits]` (1 to 7 digits before the point, 1 to
/// 15 after it, a value [`parse_f64`] computes exactly) or as empty (NaN): its value, the index
/// of the byte after it, and that byte. The field is one of those only when that byte is a
/// delimiter or the line's end, which the caller checks (after eight digits it is a digit).
/// Eight bytes at a time ([`digit_run`], [`digits_value`]); `None` for anything else, or with
/// fewer than eight bytes left to read.
#[inline(always)]
fn fast_field(text: &[u8], p: usize) -> Option<(f32, usize, u8)> {
    let w = word_at(text, p)?;
    let n = digit_run(w);
    if n > 0 {
        return unsigned_field(text, p, w, n);
    }
    match w as u8 {
        b'-' => {
            let w = word_at(text, p + 1)?;
            let n = digit_run(w);
            let (v, end, term) = unsigned_field(text, p + 1, w, n).filter(|_| n > 0)?;
            Some((-v, end, term))
        }
        // Empty, if a delimiter or the line's end is what follows.
        next => Some((f32::NAN, p, next)),
    }
}

/// [`fast_field`] after the sign: `w` holds the bytes from `at`, the first `n` (at least one)
/// of them digits.
#[inline(always)]
fn unsigned_field(text: &[u8], at: usize, w: u64, n: usize) -> Option<(f32, usize, u8)> {
    // The byte after the digits; the first digit again after eight.
    let next = (w >> (8 * (n & 7))) as u8;
    let q = at + n;
    let int = digits_value(w, n);
    if next != b'.' {
        // At most eight digits: rounded once, as through the exact f64 (and a signed
        // conversion is one instruction).
        return Some((int as i64 as f32, q, next));
    }
    // The fraction: up to eight digits, then up to eight more.
    let w = word_at(text, q + 1)?;
    let mut f = digit_run(w);
    let mut mant = int * POW10_U64[f] + digits_value(w, f);
    let mut end = q + 1 + f;
    let mut term = (w >> (8 * (f & 7))) as u8;
    if f == 8 {
        let w = word_at(text, end)?;
        let more = digit_run(w);
        mant = mant.checked_mul(POW10_U64[more])?.checked_add(digits_value(w, more))?;
        f += more;
        end += more;
        term = (w >> (8 * (more & 7))) as u8;
    }
    if f == 0 || mant > 1 << 53 {
        return None;
    }
    Some(((mant as i64 as f64 / POW10[f]) as f32, end, term))
}

/// The eight bytes of `text` from `i` as a little-endian word, if there are eight.
#[inline(always)]
fn word_at(text: &[u8], i: usize) -> Option<u64> {
    text.get(i..)?.first_chunk::<8>().map(|b| u64::from_le_bytes(*b))
}

/// Parses one line that is not blank the general way (see [`parse_csv_row`]) into `row`, and
/// checks it: the field count, a label present, a weight present and not negative. Returns
/// (label, weight).
pub(crate) fn parse_row(
    line: &[u8],
    line_no: usize,
    lay: &CsvLayout,
    row: &mut [f32],
) -> Result<(f32, f32), DataError> {
    let (found, label, weight) = parse_csv_row(line, lay.delim, lay.lead(), row, |field, text| DataError::BadNumber {
        line: line_no,
        field,
        text: excerpt(text),
        hint: if line_no == 1 {
            " (the data must have no header row)".to_string()
        } else {
            String::new()
        },
    })?;
    if found != lay.n_fields {
        return Err(DataError::FieldCount {
            line: line_no,
            expected: lay.n_fields,
            found,
        });
    }
    if lay.has_label && !label.is_finite() {
        return Err(DataError::MissingValue {
            line: line_no,
            what: "label",
        });
    }
    if lay.has_weight {
        check_weight(weight, line_no)?;
    }
    Ok((label, weight))
}

/// An instance weight must be present and not negative.
fn check_weight(weight: f32, line_no: usize) -> Result<f32, DataError> {
    if !weight.is_finite() {
        return Err(DataError::MissingValue {
            line: line_no,
            what: "weight",
        });
    }
    if weight < 0.0 {
        return Err(DataError::NegativeWeight {
            line: line_no,
            value: weight,
        });
    }
    Ok(weight)
}

fn parse_csv(bytes: &[u8], opts: &ReadOptions) -> Result<Dataset, DataError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let Some(first) = lines(bytes).find(|l| !is_blank(l)) else {
        return Err(DataError::Empty);
    };
    let lay = CsvLayout::sniff(first, opts)?;
    let n_feat = lay.n_feat();
    let width = n_feat.max(opts.min_features);

    // Room for a row per line: exactly the rows unless there are blank lines, which are
    // squeezed out at the end.
    let bounds = chunk_bounds(bytes, n_chunks());
    let n_lines: Vec<usize> = bounds.par_iter().map(|&(s, e)| count_lines(&bytes[s..e])).collect();
    let room: usize = n_lines.iter().sum();

    // Zeroed memory comes from the OS untouched (no serial pass over it here): every row's
    // features and padding columns are written below.
    let mut values = vec![0f32; room * width];
    let mut labels = vec![0f32; if opts.has_label { room } else { 0 }];
    let mut weights = vec![1f32; if opts.csv_weights { room } else { 0 }];

    // Hand each chunk its own disjoint output slices.
    struct Job<'a> {
        text: &'a [u8],
        first_line: usize,
        values: &'a mut [f32],
        labels: &'a mut [f32],
        weights: &'a mut [f32],
    }
    let mut jobs = Vec::with_capacity(bounds.len());
    {
        let (mut v, mut l, mut w) = (&mut values[..], &mut labels[..], &mut weights[..]);
        let mut line_no = 1;
        for (&(s, e), &rows) in bounds.iter().zip(&n_lines) {
            let (v0, v1) = v.split_at_mut(rows * width);
            let (l0, l1) = l.split_at_mut(if opts.has_label { rows } else { 0 });
            let (w0, w1) = w.split_at_mut(if opts.csv_weights { rows } else { 0 });
            jobs.push(Job {
                text: &bytes[s..e],
                first_line: line_no,
                values: v0,
                labels: l0,
                weights: w0,
            });
            (v, l, w) = (v1, l1, w1);
            line_no += rows;
        }
    }
    let results: Vec<Result<usize, DataError>> = jobs
        .into_par_iter()
        .map(|job| {
            struct Rows<'a> {
                job: Job<'a>,
                width: usize,
                n_feat: usize,
                r: usize,
                spare: Vec<f32>,
            }
            impl RowSink for Rows<'_> {
                fn features(&mut self) -> &mut [f32] {
                    // There is room for a row per line, so the scratch row is only a guard.
                    let at = self.r * self.width;
                    match self.job.values.get_mut(at..at + self.n_feat) {
                        Some(row) => row,
                        None => &mut self.spare,
                    }
                }
                fn push(&mut self, label: f32, weight: f32) {
                    let r = self.r;
                    if self.width > self.n_feat {
                        self.job.values[r * self.width + self.n_feat..(r + 1) * self.width].fill(f32::NAN);
                    }
                    if let Some(slot) = self.job.labels.get_mut(r) {
                        *slot = label;
                    }
                    if let Some(slot) = self.job.weights.get_mut(r) {
                        *slot = weight;
                    }
                    self.r += 1;
                }
            }
            let (text, first_line) = (job.text, job.first_line);
            let mut rows = Rows {
                job,
                width,
                n_feat,
                r: 0,
                spare: vec![0.0; n_feat],
            };
            for_each_row(text, first_line, &lay, &mut rows).map(|()| rows.r)
        })
        .collect();
    let rows = results.into_iter().collect::<Result<Vec<usize>, DataError>>()?;
    let n_rows: usize = rows.iter().sum();
    if n_rows < room {
        // Blank lines: move each chunk's rows down to follow the previous chunk's.
        let (mut from, mut to) = (0, 0);
        for (&r, &room) in rows.iter().zip(&n_lines) {
            values.copy_within(from * width..(from + r) * width, to * width);
            if opts.has_label {
                labels.copy_within(from..from + r, to);
            }
            if opts.csv_weights {
                weights.copy_within(from..from + r, to);
            }
            (from, to) = (from + room, to + r);
        }
        values.truncate(n_rows * width);
        labels.truncate(if opts.has_label { n_rows } else { 0 });
        weights.truncate(if opts.csv_weights { n_rows } else { 0 });
    }
    let features = DenseMatrix::new(n_rows, width, values).ok_or(DataError::Empty)?;
    Ok(Dataset {
        features,
        labels,
        weights: opts.csv_weights.then_some(weights),
    })
}

/// Parses one CSV row into `out` (features only); returns (fields found, label, weight).
/// Stops writing features once `out` is full but keeps counting fields.
#[inline]
pub(crate) fn parse_csv_row(
    line: &[u8],
    delim: u8,
    lead: usize,
    out: &mut [f32],
    bad: impl Fn(usize, &[u8]) -> DataError,
) -> Result<(usize, f32, f32), DataError> {
    let mut field = 0;
    let mut label = f32::NAN;
    let mut weight = 1.0;
    let mut start = 0;
    let n = line.len();
    loop {
        let (v, end) = if let Some((x, end)) = plain_number(line, start, delim) {
            (x as f32, end)
        } else {
            let end = memchr::memchr(delim, &line[start..]).map_or(n, |p| start + p);
            let text = trim(&line[start..end]);
            if text.is_empty() {
                (f32::NAN, end)
            } else {
                match parse_f64(text) {
                    Some(x) => (x as f32, end),
                    None => return Err(bad(field + 1, text)),
                }
            }
        };
        if field < lead {
            if field == 0 {
                label = v;
            } else {
                weight = v;
            }
        } else if let Some(slot) = out.get_mut(field - lead) {
            *slot = v;
        }
        field += 1;
        if end == n {
            break;
        }
        start = end + 1;
    }
    Ok((field, label, weight))
}

// ------------------------------------------------------------------------------------------------
// libsvm

/// Largest dense matrix a libsvm file may expand to (16 GiB of `f32`).
const MAX_DENSE_CELLS: usize = 1 << 32;

struct SparseChunk {
    labels: Vec<f32>,
    weights: Vec<f32>,
    any_weight: bool,
    indptr: Vec<usize>,
    entries: Vec<(u32, f32)>,
    max_index: Option<u32>,
}

fn parse_libsvm(bytes: &[u8], opts: &ReadOptions) -> Result<Dataset, DataError> {
    let bounds = chunk_bounds(bytes, n_chunks());
    let counts: Vec<usize> = bounds.par_iter().map(|&(s, e)| count_lines(&bytes[s..e])).collect();
    let mut starts = Vec::with_capacity(counts.len());
    let mut acc = 1;
    for c in &counts {
        starts.push(acc);
        acc += c;
    }
    let chunks: Vec<Result<SparseChunk, DataError>> = bounds
        .par_iter()
        .zip(starts)
        .map(|(&(s, e), first_line)| parse_libsvm_chunk(&bytes[s..e], first_line, opts))
        .collect();
    let mut parsed = Vec::with_capacity(chunks.len());
    for c in chunks {
        parsed.push(c?);
    }
    let n_rows: usize = parsed.iter().map(|c| c.indptr.len() - 1).sum();
    if n_rows == 0 {
        return Err(DataError::Empty);
    }
    let max_index = parsed.iter().filter_map(|c| c.max_index).max();
    let width = max_index.map_or(0, |m| m as usize + 1).max(opts.min_features);
    let any_weight = parsed.iter().any(|c| c.any_weight);
    if n_rows.saturating_mul(width) > MAX_DENSE_CELLS {
        return Err(DataError::TooWide {
            rows: n_rows,
            features: width,
        });
    }
    let mut values = vec![f32::NAN; n_rows * width];
    let mut labels = Vec::with_capacity(if opts.has_label { n_rows } else { 0 });
    let mut weights = Vec::with_capacity(if any_weight { n_rows } else { 0 });
    let mut row = 0;
    for c in parsed {
        labels.extend_from_slice(&c.labels);
        if any_weight {
            weights.extend_from_slice(&c.weights);
        }
        for r in 0..c.indptr.len() - 1 {
            let out = &mut values[row * width..(row + 1) * width];
            for &(i, v) in &c.entries[c.indptr[r]..c.indptr[r + 1]] {
                out[i as usize] = v;
            }
            row += 1;
        }
    }
    let features = DenseMatrix::new(n_rows, width, values).ok_or(DataError::Empty)?;
    Ok(Dataset {
        features,
        labels,
        weights: any_weight.then_some(weights),
    })
}

fn parse_libsvm_chunk(text: &[u8], first_line: usize, opts: &ReadOptions) -> Result<SparseChunk, DataError> {
    let mut c = SparseChunk {
        labels: Vec::new(),
        weights: Vec::new(),
        any_weight: false,
        indptr: vec![0],
        entries: Vec::new(),
        max_index: None,
    };
    let hint_for = |tok: &[u8]| {
        if tok.contains(&b',') {
            " (this looks like CSV: set the channel's ContentType to text/csv; a missing \
             ContentType means libsvm)"
                .to_string()
        } else {
            String::new()
        }
    };
    for (k, line) in lines(text).enumerate() {
        let line_no = first_line + k;
        let line = match memchr::memchr(b'#', line) {
            Some(p) => &line[..p],
            None => line,
        };
        if is_blank(line) {
            continue;
        }
        let mut toks = line
            .split(|b| matches!(b, b' ' | b'\t' | b'\r'))
            .filter(|t| !t.is_empty());
        if opts.has_label {
            let Some(tok) = toks.next() else { continue };
            let (lab, w) = match memchr::memchr(b':', tok) {
                Some(p) => (&tok[..p], Some(&tok[p + 1..])),
                None => (tok, None),
            };
            let bad = || DataError::BadLibsvm {
                line: line_no,
                token: excerpt(tok),
                hint: hint_for(tok),
            };
            let label = parse_f64(lab).ok_or_else(bad)? as f32;
            if !label.is_finite() {
                return Err(DataError::MissingValue {
                    line: line_no,
                    what: "label",
                });
            }
            c.labels.push(label);
            let weight = match w {
                Some(w) => {
                    c.any_weight = true;
                    check_weight(parse_f64(w).ok_or_else(bad)? as f32, line_no)?
                }
                None => 1.0,
            };
            c.weights.push(weight);
        }
        for tok in toks {
            let bad = || DataError::BadLibsvm {
                line: line_no,
                token: excerpt(tok),
                hint: hint_for(tok),
            };
            let p = memchr::memchr(b':', tok).ok_or_else(bad)?;
            let (idx, val) = (&tok[..p], &tok[p + 1..]);
            if idx == b"qid" {
                continue;
            }
            let idx: u32 = std::str::from_utf8(idx)
                .ok()
                .and_then(|s| s.parse().ok())
                .filter(|&i: &u32| i < (1 << 24))
                .ok_or_else(bad)?;
            let val = parse_f64(val).ok_or_else(bad)? as f32;
            c.max_index = Some(c.max_index.map_or(idx, |m| m.max(idx)));
            c.entries.push((idx, val));
        }
        c.indptr.push(c.entries.len());
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn csv(s: &str) -> Result<Dataset, DataError> {
        parse_bytes(s.as_bytes(), ContentType::Csv, &ReadOptions::default())
    }

    #[test]
    fn csv_basic_missing_crlf_trailing_newline() {
        let d = csv("1,2.5,,3\r\n0,,1e-3,-4\r\n\r\n").unwrap();
        assert_eq!(d.labels, vec![1.0, 0.0]);
        assert_eq!(d.features.n_cols(), 3);
        let v = d.features.values();
        assert_eq!(v[0], 2.5);
        assert!(v[1].is_nan());
        assert_eq!(v[2], 3.0);
        assert!(v[3].is_nan());
        assert_eq!(v[4], 1e-3);
        assert_eq!(v[5], -4.0);
        let d2 = csv("1,2.5,,3\n0,,1e-3,-4").unwrap();
        assert_eq!(d2.labels, d.labels);
    }

    #[test]
    fn csv_padded_to_min_features_with_missing() {
        let opts = ReadOptions {
            min_features: 4,
            ..ReadOptions::default()
        };
        let d = parse_bytes(b"1,2\n\n0,0\n", ContentType::Csv, &opts).unwrap();
        assert_eq!(d.features.n_cols(), 4);
        for (r, x) in [(0, 2.0), (1, 0.0)] {
            let row = d.features.row(r);
            assert_eq!(row[0], x);
            assert!(row[1..].iter().all(|v| v.is_nan()), "{row:?}");
        }
    }

    #[test]
    fn csv_bad_number_reports_line_and_field() {
        let e = csv("1,2,3\n0,4,5\n1,abc,6\n").unwrap_err().to_string();
        assert_eq!(e, "line 3: could not parse field 2 ('abc') as a number");
        let e = csv("Survived,Age\n1,2\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("no header row"), "{e}");
    }

    #[test]
    fn csv_bad_number_line_numbers_across_chunks() {
        let mut s = String::new();
        for i in 0..200_000 {
            s.push_str(&format!("{},{}.5\n", i % 2, i));
        }
        s.push_str("1,x\n");
        let e = csv(&s).unwrap_err().to_string();
        assert!(e.starts_with("line 200001:"), "{e}");
    }

    #[test]
    fn csv_blank_lines_across_chunks_are_squeezed_out() {
        // Several chunks (each at least 64 KiB), blank lines in all of them.
        let mut s = String::new();
        let mut want = Vec::new();
        for i in 0..150_000u32 {
            match i % 997 {
                0 => s.push('\n'),
                1 => s.push_str("  \r\n"),
                _ => {
                    s.push_str(&format!("{},{}.5,{}\n", i % 2, i, i % 7));
                    want.push(i);
                }
            }
        }
        let opts = ReadOptions {
            csv_weights: true,
            min_features: 3,
            ..ReadOptions::default()
        };
        let d = parse_bytes(s.as_bytes(), ContentType::Csv, &opts).unwrap();
        assert_eq!(d.n_rows(), want.len());
        assert_eq!(d.features.n_cols(), 3);
        let weights = d.weights.as_ref().unwrap();
        for (r, &i) in want.iter().enumerate() {
            assert_eq!(d.labels[r], (i % 2) as f32);
            assert_eq!(weights[r], i as f32 + 0.5);
            let row = d.features.row(r);
            assert_eq!(row[0], (i % 7) as f32);
            assert!(row[1].is_nan() && row[2].is_nan());
        }
        // Line numbers still count the blank lines.
        s.push_str("1,2,x\n");
        let e = parse_bytes(s.as_bytes(), ContentType::Csv, &opts)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 150001:"), "{e}");
    }

    #[test]
    fn csv_field_count_and_missing_label() {
        let e = csv("1,2,3\n0,4\n").unwrap_err();
        assert!(matches!(
            e,
            DataError::FieldCount {
                line: 2,
                expected: 3,
                found: 2
            }
        ));
        let e = csv("1,2\n,4\n").unwrap_err();
        assert!(matches!(e, DataError::MissingValue { line: 2, what: "label" }));
        assert!(matches!(csv("\n\n"), Err(DataError::Empty)));
    }

    #[test]
    fn csv_weights_and_delimiters() {
        let opts = ReadOptions {
            csv_weights: true,
            ..ReadOptions::default()
        };
        let d = parse_bytes(b"1,0.5,7\n0,2,8\n", ContentType::Csv, &opts).unwrap();
        assert_eq!(d.weights, Some(vec![0.5, 2.0]));
        assert_eq!(d.features.values(), &[7.0, 8.0]);
        let e = parse_bytes(b"1,-1,7\n", ContentType::Csv, &opts).unwrap_err();
        assert!(matches!(e, DataError::NegativeWeight { .. }));
        let d = csv("1\t2\t3\n0\t4\t5\n").unwrap();
        assert_eq!(d.features.values(), &[2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn libsvm_basic() {
        let s = "1 0:1.5 3:2\n0:2.0 qid:4 1:-1 # comment\n\n1 2:3\n";
        let d = parse_bytes(s.as_bytes(), ContentType::Libsvm, &ReadOptions::default()).unwrap();
        assert_eq!(d.labels, vec![1.0, 0.0, 1.0]);
        assert_eq!(d.weights, Some(vec![1.0, 2.0, 1.0]));
        assert_eq!(d.features.n_cols(), 4);
        let r0 = d.features.row(0);
        assert_eq!(r0[0], 1.5);
        assert!(r0[1].is_nan());
        assert_eq!(r0[3], 2.0);
        assert_eq!(d.features.row(1)[1], -1.0);
        let e = parse_bytes(b"1 0:1\n0 1:x\n", ContentType::Libsvm, &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 2:") && e.contains("1:x"), "{e}");
        let e = parse_bytes(b"1,2,3\n", ContentType::Libsvm, &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("text/csv"), "{e}");
    }

    #[test]
    fn libsvm_too_wide_is_an_error_not_an_abort() {
        let text = "1 16000000:1\n".repeat(300);
        let e = parse_bytes(text.as_bytes(), ContentType::Libsvm, &ReadOptions::default()).unwrap_err();
        assert!(matches!(e, DataError::TooWide { rows: 300, .. }), "{e}");
    }

    #[test]
    fn content_types() {
        assert_eq!(ContentType::parse(None).unwrap(), ContentType::Libsvm);
        for c in ["text/csv", "csv", "text/csv;label_size=1", "text/csv; label_size=1"] {
            assert_eq!(ContentType::parse(Some(c)).unwrap(), ContentType::Csv, "{c}");
        }
        for c in ["text/libsvm", "libsvm", "text/x-libsvm"] {
            assert_eq!(ContentType::parse(Some(c)).unwrap(), ContentType::Libsvm, "{c}");
        }
        assert!(ContentType::parse(Some("text/csv;label_size=2")).is_err());
        assert!(ContentType::parse(Some("application/json")).is_err());
        for c in ["application/x-parquet", "parquet"] {
            assert_eq!(ContentType::parse(Some(c)).unwrap(), ContentType::Parquet, "{c}");
        }
    }

    #[test]
    fn mmap_matches_read() {
        let dir = std::env::temp_dir().join(format!("kiln-mmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.csv");
        let content: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        std::fs::write(&p, &content).unwrap();
        assert_eq!(map_file(&p).unwrap().as_bytes(), &content[..]);
        let e = dir.join("empty.csv");
        std::fs::write(&e, b"").unwrap();
        assert_eq!(map_file(&e).unwrap().as_bytes(), b"");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_dir_skips_hidden_and_sorts() {
        let dir = std::env::temp_dir().join(format!("kiln-dir-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("b.csv"), "1,2\n").unwrap();
        std::fs::write(dir.join("a.csv"), "0,1\n").unwrap();
        std::fs::write(dir.join("sub/c.csv"), "1,3\n").unwrap();
        std::fs::write(dir.join(".hidden"), "garbage").unwrap();
        std::fs::write(dir.join("_SUCCESS"), "garbage").unwrap();
        let d = read_dir(&dir, ContentType::Csv, &ReadOptions::default()).unwrap();
        assert_eq!(d.labels, vec![0.0, 1.0, 1.0]);
        assert_eq!(d.features.values(), &[1.0, 2.0, 3.0]);
        std::fs::write(dir.join("sub/d.csv"), "1,zz\n").unwrap();
        let e = read_dir(&dir, ContentType::Csv, &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.csv") && e.contains("line 1"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parse_f64_examples() {
        for s in [
            "0",
            "-0",
            "1",
            "1.5",
            "-2.25e-3",
            "1e22",
            "1e23",
            "123456789012345678901234",
            "0.000001234567",
            "3.4028235e38",
            "1E5",
            "+7",
            ".5",
            "5.",
            "nan",
            "inf",
        ] {
            let want: f64 = s.parse().unwrap();
            let got = parse_f64(s.as_bytes()).unwrap();
            assert!(got == want || (got.is_nan() && want.is_nan()), "{s}");
        }
        for s in ["", "-", "e5", "1e", "abc", "1.2.3", "--1"] {
            assert_eq!(parse_f64(s.as_bytes()), None, "{s}");
        }
    }

    #[test]
    fn digit_words() {
        let word = |s: &[u8]| {
            let mut b = [0u8; 8];
            b[..s.len()].copy_from_slice(s);
            u64::from_le_bytes(b)
        };
        for (s, n, v) in [
            (&b""[..], 0, 0),
            (b"7", 1, 7),
            (b"0123,", 4, 123),
            (b"12345678", 8, 12_345_678),
            (b"9999999/", 7, 9_999_999),
            (b"5:", 1, 5),
            (b"\xff1", 0, 0),
            (b"1.5", 1, 1),
        ] {
            assert_eq!(digit_run(word(s)), n, "{s:?}");
            assert_eq!(digits_value(word(s), n), v, "{s:?}");
        }
    }

    /// The in-place parser of plain fields takes the shapes it can compute exactly and leaves
    /// every other one (exponents, spaces, quotes, CR, 20+ digits, text) to the general path.
    #[test]
    fn plain_number_takes_plain_fields_only() {
        for (field, want) in [
            ("0", Some(0.0)),
            ("-0", Some(-0.0)),
            ("1.5", Some(1.5)),
            ("-0.7259973", Some(-0.7259973)),
            ("0.02313675", Some(0.02313675)),
            ("+7", Some(7.0)),
            (".5", Some(0.5)),
            ("5.", Some(5.0)),
            ("-.25", Some(-0.25)),
            ("1234567890123456789", None), // above 2^53
            ("12345678901234567.8", None),
            ("0.00000000000000000001", None), // 21 digits
            ("1e5", None),
            ("1.5E-3", None),
            (" 1", None),
            ("1 ", None),
            ("1\r", None),
            ("\"1\"", None),
            ("", None),
            ("-", None),
            (".", None),
            ("nan", None),
            ("1.2.3", None),
            ("1-2", None),
        ] {
            let line = format!("{field},9");
            let got = plain_number(line.as_bytes(), 0, b',');
            match want {
                Some(w) => {
                    let (v, end): (f64, usize) = got.unwrap_or_else(|| panic!("{field:?} refused"));
                    assert_eq!(v.to_bits(), f64::to_bits(w), "{field:?}");
                    assert_eq!(end, field.len(), "{field:?}");
                    // The last field of a line ends at the line's end.
                    assert_eq!(plain_number(field.as_bytes(), 0, b','), Some((v, field.len())));
                }
                None => assert_eq!(got, None, "{field:?}"),
            }
        }
        // In a row, refused fields still parse (or fail) as before.
        let mut out = [0f32; 4];
        let (n, label, _) = parse_csv_row(b"1, 2.5,1e2,\"3\",", b',', 1, &mut out, |_, _| DataError::Empty).unwrap();
        assert_eq!((n, label), (5, 1.0));
        assert_eq!(&out[..3], &[2.5, 100.0, 3.0]);
        assert!(out[3].is_nan());
        assert!(parse_csv_row(b"1,2,x", b',', 1, &mut out, |_, _| DataError::Empty).is_err());
    }

    /// Rows of `text` as `for_each_row` reads them (`general`: every line by `parse_row`,
    /// the reference), as (label, weight, features) bit patterns, or the error's text.
    fn rows_of(text: &[u8], lay: &CsvLayout, general: bool) -> Result<Vec<(u32, u32, Vec<u32>)>, String> {
        struct Collect(Vec<f32>, Vec<(u32, u32, Vec<u32>)>);
        impl RowSink for Collect {
            fn features(&mut self) -> &mut [f32] {
                &mut self.0
            }
            fn push(&mut self, label: f32, weight: f32) {
                let feats = self.0.iter().map(|x| x.to_bits()).collect();
                self.1.push((label.to_bits(), weight.to_bits(), feats));
            }
        }
        let mut sink = Collect(vec![0.0; lay.n_feat()], Vec::new());
        if general {
            for (k, line) in lines(text).enumerate() {
                if !is_blank(line) {
                    let (label, weight) = parse_row(line, k + 1, lay, &mut sink.0).map_err(|e| e.to_string())?;
                    sink.push(label, weight);
                }
            }
        } else {
            for_each_row(text, 1, lay, &mut sink).map_err(|e| e.to_string())?;
        }
        Ok(sink.1)
    }

    #[test]
    fn fast_rows_match_general_rows() {
        let lay = |n_fields, has_weight| CsvLayout {
            delim: b',',
            n_fields,
            has_label: true,
            has_weight,
        };
        let cases: [(&[u8], CsvLayout); 13] = [
            (
                b"1,0.0003138857,-0.004960918,7.000000000000001\n0,1.5,2.5,3.5\n",
                lay(4, false),
            ),
            (b"1,2,3\n0,45,-6\n", lay(3, false)),
            (b"1,0.02313675,-0.06554221,12345678.5\r\n", lay(4, false)),
            (b"1,123456789,1.123456789,99999999.99999999\n", lay(4, false)),
            (b"1,,3\n0,4,\n1,,\n", lay(3, false)),
            (b"1, 2,3\n0,\"4\",5e3\n1,+2,.5\n0,5.,-\n", lay(3, false)),
            (b"1,2\n\n  \n\r\n0,3\n", lay(2, false)),
            (b"1,2,3\n0,4\n", lay(3, false)),
            (b"1,2\n0,4,5\n", lay(2, false)),
            (b"1,2\n,4\n", lay(2, false)),
            (b"1,0.5,7\n0,-1,8\n", lay(3, true)),
            (b"1,,7\n", lay(3, true)),
            (b"1,-0,-0.0\n0,-12,-1.25", lay(3, false)),
        ];
        for (text, lay) in cases {
            let want = rows_of(text, &lay, true);
            assert_eq!(rows_of(text, &lay, false), want, "{}", String::from_utf8_lossy(text));
        }
        // The fast path takes the plain rows (checked through the values it gives).
        let mut out = vec![0.0; 3];
        let mut lead = [0.0; 2];
        let text = b"1,0.02313675,-45,1234567.5\r\nnext line";
        assert_eq!(fast_row(text, 0, &lay(4, false), &mut lead, &mut out), Some(28));
        assert_eq!((lead[0], &out[..]), (1.0, &[0.023_136_75, -45.0, 1_234_567.5][..]));
        let text = b"0,0.0003138857,-0.004960918,7.000000000000001\nnext line";
        assert_eq!(fast_row(text, 0, &lay(4, false), &mut lead, &mut out), Some(46));
        assert_eq!(out, [0.000_313_885_7, -0.004_960_918, 7.0]);
        // Eight integer digits are left to the general path.
        let text = b"1,0.5,-45,12345678\nnext line";
        assert_eq!(fast_row(text, 0, &lay(4, false), &mut lead, &mut out), None);
        let text = b"1,,2\n........";
        let mut out = vec![0.0; 2];
        assert_eq!(fast_row(text, 0, &lay(3, false), &mut lead, &mut out), Some(5));
        assert!(out[0].is_nan() && out[1] == 2.0);
    }

    proptest! {
        /// Any bytes (numbers, separators, junk, odd line ends) are read or refused with an error,
        /// never a panic, by both readers (the fuzz target issue 24 asks for).
        #[test]
        fn the_readers_answer_any_bytes(bytes in proptest::collection::vec(
            proptest::sample::select(b"0123456789.-+eE :,\n\r\tnaNinf#x\xff".to_vec()), 0..600)) {
            let opts = ReadOptions::default();
            let _ = parse_libsvm(&bytes, &opts);
            let _ = parse_csv(&bytes, &opts);
        }

        /// Whatever the in-place parser accepts, it reads exactly as `parse_f64` does.
        #[test]
        fn plain_number_matches_parse_f64(x in -1e7f64..1e7, decimals in 0usize..12, sign in 0u8..3) {
            let sign = ["", "-", "+"][sign as usize];
            for s in [format!("{sign}{x:.decimals$}"), format!("{sign}{}", x as f32), format!("{x}")] {
                let line = format!("{s};0");
                let want = parse_f64(s.as_bytes());
                let got = plain_number(line.as_bytes(), 0, b';');
                if let Some((v, end)) = got {
                    prop_assert_eq!(Some(v.to_bits()), want.map(f64::to_bits), "{}", s);
                    prop_assert_eq!(end, s.len());
                }
                // Word at a time or byte by byte, the same fields are taken, with the same values.
                prop_assert_eq!(got, plain_number_bytes(line.as_bytes(), 0, b';'), "{}", s);
            }
        }

        /// On any bytes, the word-at-a-time parser agrees with the byte-by-byte one.
        #[test]
        fn plain_number_words_match_bytes(field in proptest::collection::vec(
            proptest::sample::select(b"0123456789.-+e, /:9".to_vec()), 0..24)) {
            for end in [&b""[..], b",1"] {
                let line = [&field[..], end].concat();
                for start in 0..=field.len().min(3) {
                    prop_assert_eq!(plain_number(&line, start, b','), plain_number_bytes(&line, start, b','));
                }
            }
        }

        /// On rows of plain and awkward fields, now and then a field short or over, a blank
        /// line or a `\r\n`, reading rows the fast way gives what the general path gives,
        /// errors included.
        #[test]
        fn fast_rows_match_general_rows_on_any_text(
            rows in proptest::collection::vec((
                proptest::collection::vec(proptest::sample::select(vec![
                    "0", "7", "-3", "42", "1234567", "-765", "0.5", "-0.25", "3.14159265", "0.123456789",
                    "0.0003138857", "-0.004960918", "7.000000000000001", "", "12345678", "123456789",
                    "-98765432", "99999999.99999999", "1234567.123456789012345", "0.1234567890123456789",
                    "1e3", " 4", "\"5\"", "+6", ".5", "5.", "-", "x", "1.2.3", "-0", "00012", "1;2",
                ]), 3),
                0u8..25,
                0u8..6,
            ), 1..40),
            has_weight: bool,
        ) {
            let mut text = String::new();
            for (fields, shape, end) in &rows {
                let fields = match shape {
                    0 => &fields[..2],
                    _ => &fields[..],
                };
                text.push_str(&fields.join(","));
                if *shape == 1 {
                    text.push_str(",1");
                }
                text.push_str(match end {
                    0 => "\r\n",
                    1 => "\n\n",
                    _ => "\n",
                });
            }
            let lay = CsvLayout { delim: b',', n_fields: 3, has_label: true, has_weight };
            prop_assert_eq!(rows_of(text.as_bytes(), &lay, false), rows_of(text.as_bytes(), &lay, true), "{:?}", text);
            let lay = CsvLayout { has_label: false, has_weight: false, ..lay };
            prop_assert_eq!(rows_of(text.as_bytes(), &lay, false), rows_of(text.as_bytes(), &lay, true), "{:?}", text);
        }

        #[test]
        fn parse_f64_matches_std(x in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL) {
            for s in [format!("{x}"), format!("{x:e}"), format!("{x:.7}"), format!("{:.7e}", x)] {
                let want: f64 = s.parse().unwrap();
                prop_assert_eq!(parse_f64(s.as_bytes()), Some(want), "{}", s);
            }
        }

        #[test]
        fn csv_roundtrip(rows in proptest::collection::vec(
            (0u8..2, proptest::collection::vec(proptest::option::of(-1e6f32..1e6), 3)), 1..50)) {
            let mut s = String::new();
            for (l, r) in &rows {
                s.push_str(&l.to_string());
                for v in r {
                    s.push(',');
                    if let Some(v) = v { s.push_str(&v.to_string()); }
                }
                s.push('\n');
            }
            let d = csv(&s).unwrap();
            prop_assert_eq!(d.n_rows(), rows.len());
            for (i, (l, r)) in rows.iter().enumerate() {
                prop_assert_eq!(d.labels[i], f32::from(*l));
                for (j, v) in r.iter().enumerate() {
                    let got = d.features.row(i)[j];
                    match v {
                        Some(v) => prop_assert_eq!(got, *v),
                        None => prop_assert!(got.is_nan()),
                    }
                }
            }
        }
    }
}

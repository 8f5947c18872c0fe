//! `application/x-recordio-protobuf`: the format the SageMaker SDK's `record_set()` uploads and
//! the default input of SageMaker's built-ins other than XGBoost.
//!
//! Two layers. RecordIO framing (MXNet's): each record is a little-endian `u32` magic
//! `0xCED7230A`, a `u32` whose low 29 bits are the payload length and top 3 bits a continuation
//! flag (0 whole record; 1 first, 2 middle, 3 last part of a record that was split where its
//! payload held the magic, which the reader puts back between the parts), the payload, and zero
//! padding to a 4-byte boundary. Each payload is an `aialgs.data.Record` protobuf (the SDK's
//! `record.proto`): `features` and `label` are maps from a name (always `"values"` as the SDK
//! writes them) to a `Value` holding a `Float32Tensor` (field 2), `Float64Tensor` (3) or
//! `Int32Tensor` (7); a tensor has packed `values` (1), `keys` (2) and `shape` (3). A tensor
//! without keys is dense; with keys it is sparse and `shape[0]` is the row's width.
//!
//! The protobuf decoding is written out here (a tiny schema) rather than generated, to keep
//! protoc and prost out of the build.

use std::io::Read;

/// RecordIO's record marker.
pub const MAGIC: u32 = 0xCED7_230A;
/// The payload length is the low 29 bits of the second word.
const LEN_MASK: u32 = (1 << 29) - 1;

/// Where and why RecordIO-protobuf input is malformed.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: record {record} (at byte {offset}): {what}")]
pub struct FormatError {
    /// The file (or FIFO) read.
    pub source_name: String,
    /// 1-based index of the record.
    pub record: usize,
    /// Byte offset of the record's header in the source.
    pub offset: u64,
    /// What was wrong, and what to do about it.
    pub what: String,
}

/// Reads RecordIO records one after another from any reader (a file or a Pipe-mode FIFO).
pub struct RecordReader<R> {
    inner: R,
    name: String,
    offset: u64,
    record: usize,
}

impl<R: Read> RecordReader<R> {
    /// A reader over `inner`, named `name` in errors.
    pub fn new(inner: R, name: impl Into<String>) -> Self {
        Self {
            inner,
            name: name.into(),
            offset: 0,
            record: 0,
        }
    }

    fn error(&self, offset: u64, what: impl Into<String>) -> FormatError {
        FormatError {
            source_name: self.name.clone(),
            record: self.record,
            offset,
            what: what.into(),
        }
    }

    /// Reads up to `buf.len()` bytes; returns how many (fewer only at the end of the input).
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, FormatError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.error(self.offset, format!("read failed: {e}"))),
            }
        }
        self.offset += got as u64;
        Ok(got)
    }

    /// Reads the next record's payload into `payload` (replacing its contents); `false` at the
    /// end of the input.
    pub fn next_into(&mut self, payload: &mut Vec<u8>) -> Result<bool, FormatError> {
        payload.clear();
        self.record += 1;
        let start = self.offset;
        let mut first = true;
        loop {
            let mut header = [0u8; 8];
            let got = self.fill(&mut header)?;
            if got == 0 && first {
                self.record -= 1;
                return Ok(false);
            }
            if got < 8 {
                return Err(self.error(
                    start,
                    format!("the input ends inside a record header ({got} of 8 bytes); the file is truncated"),
                ));
            }
            let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            if magic != MAGIC {
                return Err(self.error(
                    start,
                    format!(
                        "expected the RecordIO magic 0xced7230a, found 0x{magic:08x}: this is not \
                         application/x-recordio-protobuf data (write it with the SageMaker SDK's \
                         record_set() or write_numpy_to_dense_tensor(), or set the channel's \
                         ContentType to text/csv for CSV)"
                    ),
                ));
            }
            let word = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let (flag, len) = (word >> 29, (word & LEN_MASK) as usize);
            match (first, flag) {
                (true, 0 | 1) | (false, 2 | 3) => {}
                _ => {
                    return Err(self.error(
                        start,
                        format!("RecordIO continuation flag {flag} out of sequence; the file is corrupt"),
                    ));
                }
            }
            if !first {
                payload.extend_from_slice(&MAGIC.to_le_bytes());
            }
            let at = payload.len();
            payload.resize(at + len, 0);
            let got = self.fill(&mut payload[at..])?;
            if got < len {
                return Err(self.error(
                    start,
                    format!("the record says {len} bytes but the input ends after {got}; the file is truncated"),
                ));
            }
            let pad = (4 - len % 4) % 4;
            let mut skip = [0u8; 3];
            // The last record's padding may be missing; nothing follows it to misread.
            self.fill(&mut skip[..pad])?;
            if matches!(flag, 0 | 3) {
                return Ok(true);
            }
            first = false;
        }
    }

    /// The 1-based index of the record last read.
    pub fn record_index(&self) -> usize {
        self.record
    }

    /// Bytes read so far: the offset of the next record's header.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// A tensor from a `Value`, widened to `f32`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tensor {
    /// The values (dense: all of them; sparse: those at `keys`).
    pub values: Vec<f32>,
    /// Sparse positions; empty for a dense tensor.
    pub keys: Vec<u64>,
    /// The shape; for a sparse row, `[width]`.
    pub shape: Vec<u64>,
}

/// One decoded `aialgs.data.Record`: its `features["values"]` and `label["values"]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// `features["values"]`.
    pub features: Option<Tensor>,
    /// `label["values"]`.
    pub label: Option<Tensor>,
}

/// A protobuf cursor over one message.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err("a varint runs past the end of its message".into());
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("a varint is longer than 10 bytes".into())
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "a field of {n} bytes runs past the end of its message ({} bytes left)",
                    self.buf.len() - self.pos
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn delimited(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()?;
        self.bytes(usize::try_from(n).map_err(|_| "a length does not fit in memory".to_string())?)
    }

    /// The next field's number and wire type.
    fn tag(&mut self) -> Result<(u64, u8), String> {
        let t = self.varint()?;
        Ok((t >> 3, (t & 7) as u8))
    }

    /// Skips a field of wire type `wire`.
    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.bytes(8).map(|_| ()),
            2 => self.delimited().map(|_| ()),
            5 => self.bytes(4).map(|_| ()),
            w => Err(format!(
                "unknown protobuf wire type {w}; this is not an aialgs.data.Record"
            )),
        }
    }
}

/// The element type of a tensor.
#[derive(Clone, Copy)]
enum Elem {
    F32,
    F64,
    I32,
}

fn decode_tensor(buf: &[u8], elem: Elem) -> Result<Tensor, String> {
    let mut t = Tensor::default();
    let mut c = Cursor::new(buf);
    while !c.done() {
        let (field, wire) = c.tag()?;
        match (field, wire) {
            (1, 2) => {
                let b = c.delimited()?;
                match elem {
                    Elem::F32 => {
                        if b.len() % 4 != 0 {
                            return Err(format!(
                                "packed float values of {} bytes (not a multiple of 4)",
                                b.len()
                            ));
                        }
                        t.values
                            .extend(b.chunks_exact(4).map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]])));
                    }
                    Elem::F64 => {
                        if b.len() % 8 != 0 {
                            return Err(format!(
                                "packed double values of {} bytes (not a multiple of 8)",
                                b.len()
                            ));
                        }
                        t.values.extend(
                            b.chunks_exact(8)
                                .map(|w| f64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) as f32),
                        );
                    }
                    Elem::I32 => {
                        let mut p = Cursor::new(b);
                        while !p.done() {
                            t.values.push(p.varint()? as i64 as i32 as f32);
                        }
                    }
                }
            }
            (1, 5) if matches!(elem, Elem::F32) => {
                let w = c.bytes(4)?;
                t.values.push(f32::from_le_bytes([w[0], w[1], w[2], w[3]]));
            }
            (1, 1) if matches!(elem, Elem::F64) => {
                let w = c.bytes(8)?;
                t.values
                    .push(f64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) as f32);
            }
            (1, 0) if matches!(elem, Elem::I32) => t.values.push(c.varint()? as i64 as i32 as f32),
            (2 | 3, 2) => {
                let b = c.delimited()?;
                let out = if field == 2 { &mut t.keys } else { &mut t.shape };
                let mut p = Cursor::new(b);
                while !p.done() {
                    out.push(p.varint()?);
                }
            }
            (2, 0) => t.keys.push(c.varint()?),
            (3, 0) => t.shape.push(c.varint()?),
            (_, w) => c.skip(w)?,
        }
    }
    Ok(t)
}

/// Decodes a `Value`; `None` for a `Bytes` value (no numbers in it).
fn decode_value(buf: &[u8]) -> Result<Option<Tensor>, String> {
    let mut c = Cursor::new(buf);
    let mut out = None;
    while !c.done() {
        let (field, wire) = c.tag()?;
        let elem = match (field, wire) {
            (2, 2) => Elem::F32,
            (3, 2) => Elem::F64,
            (7, 2) => Elem::I32,
            (_, w) => {
                c.skip(w)?;
                continue;
            }
        };
        out = Some(decode_tensor(c.delimited()?, elem)?);
    }
    Ok(out)
}

/// Decodes one map entry (`key` = 1, `value` = 2) into (key, tensor).
fn decode_entry(buf: &[u8]) -> Result<(String, Option<Tensor>), String> {
    let mut c = Cursor::new(buf);
    let (mut key, mut value) = (String::new(), None);
    while !c.done() {
        match c.tag()? {
            (1, 2) => {
                key = String::from_utf8(c.delimited()?.to_vec()).map_err(|_| "a map key is not UTF-8".to_string())?
            }
            (2, 2) => value = decode_value(c.delimited()?)?,
            (_, w) => c.skip(w)?,
        }
    }
    Ok((key, value))
}

/// Decodes an `aialgs.data.Record` payload.
pub fn decode_record(buf: &[u8]) -> Result<Record, String> {
    let mut c = Cursor::new(buf);
    let mut rec = Record::default();
    while !c.done() {
        let (field, wire) = c.tag()?;
        match (field, wire) {
            (1 | 2, 2) => {
                let (key, value) = decode_entry(c.delimited()?)?;
                if key == "values" {
                    if field == 1 {
                        rec.features = value;
                    } else {
                        rec.label = value;
                    }
                }
            }
            (_, w) => c.skip(w)?,
        }
    }
    Ok(rec)
}

impl Tensor {
    /// The row's width: the values of a dense tensor, `shape[0]` of a sparse one.
    fn width(&self) -> Result<usize, String> {
        if self.keys.is_empty() {
            return Ok(self.values.len());
        }
        match self.shape.first() {
            Some(&w) => usize::try_from(w).map_err(|_| format!("shape {w} does not fit in memory")),
            None => Err("a sparse tensor (with keys) has no shape; write it with \
                         write_spmatrix_to_sparse_tensor(), which records the row width"
                .into()),
        }
    }

    /// Appends the row, densified to `width` columns (missing sparse entries are 0).
    fn push_dense(&self, width: usize, absent: f32, out: &mut Vec<f32>) -> Result<(), String> {
        if self.keys.is_empty() {
            out.extend_from_slice(&self.values);
            return Ok(());
        }
        if self.keys.len() != self.values.len() {
            return Err(format!(
                "a sparse tensor has {} keys but {} values",
                self.keys.len(),
                self.values.len()
            ));
        }
        let at = out.len();
        out.resize(at + width, absent);
        for (&k, &v) in self.keys.iter().zip(&self.values) {
            let slot = usize::try_from(k)
                .ok()
                .filter(|&k| k < width)
                .ok_or_else(|| format!("sparse key {k} is outside the row's width {width}"))?;
            out[at + slot] = v;
        }
        Ok(())
    }
}

/// Rows read from RecordIO-protobuf, densified, row-major.
#[derive(Debug, Clone, Default)]
pub struct DenseRows {
    /// Columns per row (fixed by the first record, or the expected feature_dim).
    pub n_cols: usize,
    /// `n_rows * n_cols` values.
    pub values: Vec<f32>,
    /// One label per row (`label["values"][0]`), NaN when a record has none.
    pub labels: Vec<f32>,
}

impl DenseRows {
    /// Rows of `n_cols` columns (0: take the first record's width).
    pub fn new(n_cols: usize) -> Self {
        Self {
            n_cols,
            ..Self::default()
        }
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.labels.len()
    }
}

/// Reads every record of `input` (named `name` in errors) and appends it to `rows`. Every row
/// must have `rows.n_cols` columns (set by the first record read when 0).
pub fn read_dense<R: Read>(input: R, name: &str, rows: &mut DenseRows) -> Result<(), FormatError> {
    read_dense_with(input, name, rows, 0.0)
}

/// [`read_dense`], with the keys a sparse record leaves out set to `absent` (0 for the
/// algorithms that read a sparse tensor as a vector with zeros; NaN, missing, for XGBoost, which
/// reads it as a CSR matrix).
pub fn read_dense_with<R: Read>(input: R, name: &str, rows: &mut DenseRows, absent: f32) -> Result<(), FormatError> {
    let mut reader = RecordReader::new(input, name);
    let mut payload = Vec::new();
    loop {
        let before = reader.offset;
        if !reader.next_into(&mut payload)? {
            return Ok(());
        }
        let fail = |what: String| FormatError {
            source_name: name.to_string(),
            record: reader.record_index(),
            offset: before,
            what,
        };
        let rec = decode_record(&payload).map_err(|e| fail(format!("not a valid aialgs.data.Record protobuf: {e}")))?;
        let features = rec
            .features
            .ok_or_else(|| fail("the record has no features[\"values\"] tensor".into()))?;
        let width = features.width().map_err(&fail)?;
        if rows.n_cols == 0 {
            rows.n_cols = width;
        }
        if width != rows.n_cols {
            return Err(fail(format!(
                "the record has {width} features, expected {} (feature_dim, or the width of the first \
                 record); every record needs the same number of features",
                rows.n_cols
            )));
        }
        features.push_dense(width, absent, &mut rows.values).map_err(&fail)?;
        rows.labels
            .push(rec.label.and_then(|l| l.values.first().copied()).unwrap_or(f32::NAN));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames `payload` as the SDK's `_write_recordio` does.
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_le_bytes().to_vec();
        out.extend((payload.len() as u32).to_le_bytes());
        out.extend(payload);
        out.resize(out.len().div_ceil(4) * 4, 0);
        out
    }

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn delimited(field: u64, body: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(body.len() as u64, out);
        out.extend(body);
    }

    /// A Record with features["values"] = Float32Tensor(values, keys, shape), as protobuf
    /// serializes it.
    fn record(values: &[f32], keys: &[u64], shape: &[u64], label: Option<f32>) -> Vec<u8> {
        let tensor = |values: &[f32], keys: &[u64], shape: &[u64]| {
            let mut t = Vec::new();
            let vals: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            delimited(1, &vals, &mut t);
            for (f, list) in [(2, keys), (3, shape)] {
                if !list.is_empty() {
                    let mut p = Vec::new();
                    for &k in list {
                        varint(k, &mut p);
                    }
                    delimited(f, &p, &mut t);
                }
            }
            let mut value = Vec::new();
            delimited(2, &t, &mut value);
            let mut entry = Vec::new();
            delimited(1, b"values", &mut entry);
            delimited(2, &value, &mut entry);
            entry
        };
        let mut rec = Vec::new();
        delimited(1, &tensor(values, keys, shape), &mut rec);
        if let Some(l) = label {
            delimited(2, &tensor(&[l], &[], &[]), &mut rec);
        }
        rec
    }

    #[test]
    fn dense_and_sparse_rows() {
        let mut bytes = frame(&record(&[1.0, 2.0, 3.0], &[], &[], Some(1.0)));
        bytes.extend(frame(&record(&[5.0], &[1], &[3], None)));
        let mut rows = DenseRows::new(0);
        read_dense(&bytes[..], "f", &mut rows).unwrap();
        assert_eq!(rows.n_cols, 3);
        assert_eq!(rows.values, vec![1.0, 2.0, 3.0, 0.0, 5.0, 0.0]);
        assert_eq!(rows.labels[0], 1.0);
        assert!(rows.labels[1].is_nan());
    }

    #[test]
    fn continuation_parts_are_joined_with_the_magic() {
        let payload = record(&[1.0, 2.0], &[], &[], None);
        // Split the payload after 4 bytes as a writer does at an embedded magic.
        let (a, b) = payload.split_at(4);
        let mut b = b.to_vec();
        // The reader inserts the magic between parts, so the second part drops it.
        let joined = [a, &MAGIC.to_le_bytes()[..], &b[..]].concat();
        let mut bytes = Vec::new();
        for (flag, part) in [(1u32, a.to_vec()), (3u32, std::mem::take(&mut b))] {
            bytes.extend(MAGIC.to_le_bytes());
            bytes.extend(((flag << 29) | part.len() as u32).to_le_bytes());
            bytes.extend(&part);
            bytes.resize(bytes.len().div_ceil(4) * 4, 0);
        }
        let mut r = RecordReader::new(&bytes[..], "f");
        let mut got = Vec::new();
        assert!(r.next_into(&mut got).unwrap());
        assert_eq!(got, joined);
        assert!(!r.next_into(&mut got).unwrap());
    }

    #[test]
    fn malformed_input_names_the_record() {
        let good = frame(&record(&[1.0, 2.0], &[], &[], None));
        // Wrong magic in the second record.
        let mut bytes = good.clone();
        bytes.extend(b"1,2,3\n4,5,6\n");
        let e = read_dense(&bytes[..], "part-0", &mut DenseRows::new(0)).unwrap_err();
        assert_eq!(e.record, 2);
        assert_eq!(e.offset, good.len() as u64);
        assert!(e.to_string().starts_with("part-0: record 2 (at byte"), "{e}");
        assert!(e.what.contains("RecordIO magic"), "{e}");
        // Truncated payload.
        let e = read_dense(&good[..good.len() - 6], "p", &mut DenseRows::new(0)).unwrap_err();
        assert!(e.what.contains("truncated"), "{e}");
        // A payload that is not protobuf.
        let e = read_dense(&frame(&[0x0a, 0xff, 0x01])[..], "p", &mut DenseRows::new(0)).unwrap_err();
        assert!(e.what.contains("not a valid aialgs.data.Record"), "{e}");
        // Rows of different widths.
        let mut bytes = good.clone();
        bytes.extend(frame(&record(&[1.0, 2.0, 3.0], &[], &[], None)));
        let e = read_dense(&bytes[..], "p", &mut DenseRows::new(0)).unwrap_err();
        assert!(e.what.contains("has 3 features, expected 2"), "{e}");
        // A sparse key outside the shape.
        let e = read_dense(
            &frame(&record(&[1.0], &[7], &[3], None))[..],
            "p",
            &mut DenseRows::new(0),
        )
        .unwrap_err();
        assert!(e.what.contains("sparse key 7"), "{e}");
    }

    /// Files written by the SageMaker SDK's own `write_numpy_to_dense_tensor` and
    /// `write_spmatrix_to_sparse_tensor` (`testdata/make_recordio.py`).
    fn sdk_file(name: &str) -> DenseRows {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name);
        let mut rows = DenseRows::new(0);
        read_dense(std::fs::File::open(&path).unwrap(), name, &mut rows).unwrap();
        rows
    }

    const SDK_X: [f32; 12] = [1.5, -2.0, 0.0, 3.25, 4.0, 5.0, 6.0, 7.0, 0.125, 0.0, -1.0, 1e6];

    #[test]
    fn reads_the_sdk_writers_output() {
        for name in ["dense-f32-labels.rec", "dense-f64.rec", "sparse-f32-labels.rec"] {
            let rows = sdk_file(name);
            assert_eq!((rows.n_rows(), rows.n_cols), (3, 4), "{name}");
            assert_eq!(rows.values, SDK_X, "{name}");
            if name.contains("labels") {
                assert_eq!(rows.labels, [0.0, 1.0, 2.0], "{name}");
            } else {
                assert!(rows.labels.iter().all(|l| l.is_nan()), "{name}");
            }
        }
        // The sparse writer stores only the non-zeros, with keys and the row width.
        let bytes =
            std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sparse-f32-labels.rec"))
                .unwrap();
        let mut r = RecordReader::new(&bytes[..], "sparse");
        let mut payload = Vec::new();
        assert!(r.next_into(&mut payload).unwrap());
        let rec = decode_record(&payload).unwrap();
        let f = rec.features.unwrap();
        assert_eq!(
            (f.keys, f.shape, f.values),
            (vec![0, 1, 3], vec![4], vec![1.5, -2.0, 3.25])
        );
    }
}

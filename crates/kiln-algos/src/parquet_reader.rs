//! `application/x-parquet` for the built-in XGBoost, as its container reads it: every column a
//! number, the first the label (as in CSV), the rest the features in schema order; a null feature
//! is a missing value. Read column by column (the `parquet` crate's column readers, no arrow) into
//! the row-major matrix the trainer takes.

use parquet::basic::Type as Physical;
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::DataType;
use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::data::{Dataset, DenseMatrix};
use crate::reader::{DataError, ReadOptions};

/// Values decoded per call of a column reader.
const BATCH: usize = 8192;

/// The magic at the start and the end of every Parquet file.
const MAGIC: &[u8; 4] = b"PAR1";

/// Parses Parquet held in memory: one file, or several back to back (a Pipe mode channel streams
/// its objects one after the other, as SageMaker's does). Their rows are appended in order.
pub fn parse_parquet(bytes: &[u8], opts: &ReadOptions) -> Result<Dataset, DataError> {
    let mut out: Option<Dataset> = None;
    let pieces = split_files(bytes);
    let several = pieces.len() > 1;
    for (i, piece) in pieces.into_iter().enumerate() {
        let ds = match parse_one(piece, opts) {
            Ok(ds) => ds,
            Err(DataError::Empty) => continue,
            Err(e) if several => {
                return Err(DataError::Malformed(format!(
                    "Parquet file {} of the stream: {e}",
                    i + 1
                )));
            }
            Err(e) => return Err(e),
        };
        out = Some(match out {
            None => ds,
            Some(prev) if prev.features.n_cols() != ds.features.n_cols() => {
                return Err(DataError::Malformed(format!(
                    "Parquet file {} of the stream has {} feature columns, the ones before it {}",
                    i + 1,
                    ds.features.n_cols(),
                    prev.features.n_cols()
                )));
            }
            Some(prev) => prev.append(ds),
        });
    }
    out.ok_or(DataError::Empty)
}

/// Cuts concatenated Parquet files apart. A file ends with its footer's length (4 bytes, little
/// endian) and `PAR1`, and begins with `PAR1`: a boundary is a `PAR1PAR1` whose footer length
/// fits in the bytes since the previous boundary. (A data page could hold those 8 bytes by
/// chance; the footer-length check makes a false cut very unlikely, and a false cut would fail
/// to parse with an error rather than read wrong rows.)
fn split_files(bytes: &[u8]) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut at = start + MAGIC.len();
    while let Some(off) = find(&bytes[at..], b"PAR1PAR1") {
        let end = at + off + MAGIC.len();
        let footer = u32::from_le_bytes(bytes[end - 8..end - 4].try_into().unwrap_or([0xff; 4])) as usize;
        if bytes[start..].starts_with(MAGIC) && footer + 8 + MAGIC.len() <= end - start {
            pieces.push(&bytes[start..end]);
            start = end;
            at = start + MAGIC.len();
        } else {
            at = end;
        }
    }
    pieces.push(&bytes[start..]);
    pieces
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses one whole Parquet file held in memory.
fn parse_one(bytes: &[u8], opts: &ReadOptions) -> Result<Dataset, DataError> {
    let malformed = |e: parquet::errors::ParquetError| {
        DataError::Malformed(format!(
            "not a readable Parquet file ({e}); write it with pandas' to_parquet or pyarrow"
        ))
    };
    let reader = SerializedFileReader::new(bytes::Bytes::copy_from_slice(bytes)).map_err(malformed)?;
    let meta = reader.metadata();
    let schema = meta.file_metadata().schema_descr();
    let n_cols = schema.num_columns();
    for c in 0..n_cols {
        let col = schema.column(c);
        let numeric = matches!(
            col.physical_type(),
            Physical::BOOLEAN | Physical::INT32 | Physical::INT64 | Physical::FLOAT | Physical::DOUBLE
        );
        if !numeric || col.max_rep_level() > 0 {
            return Err(DataError::Malformed(format!(
                "column {} ('{}') is {}{}; every column must be a number (the label first, then the \
                 features): encode strings and categories as numbers before writing the file",
                c + 1,
                col.name(),
                col.physical_type(),
                if col.max_rep_level() > 0 { " in a list" } else { "" }
            )));
        }
    }
    let lead = usize::from(opts.has_label);
    if n_cols <= lead {
        return Err(DataError::Malformed(format!(
            "the file has {n_cols} column(s); it needs the label and at least one feature"
        )));
    }
    let n = usize::try_from(meta.file_metadata().num_rows()).unwrap_or(0);
    if n == 0 {
        return Err(DataError::Empty);
    }
    let n_feat = n_cols - lead;
    let mut values = vec![f32::NAN; n * n_feat];
    let mut labels = vec![f32::NAN; if opts.has_label { n } else { 0 }];
    let mut first_row = 0;
    for g in 0..meta.num_row_groups() {
        let group = reader.get_row_group(g).map_err(malformed)?;
        let rows = usize::try_from(group.metadata().num_rows()).unwrap_or(0);
        if first_row + rows > n {
            return Err(DataError::Malformed(format!(
                "row group {} ends at row {} but the file declares {n} rows",
                g + 1,
                first_row + rows
            )));
        }
        for c in 0..n_cols {
            let max_def = schema.column(c).max_def_level();
            let reader = group.get_column_reader(c).map_err(malformed)?;
            // Where each of the group's rows goes: the label vector, or a column of the matrix.
            let mut put: Box<dyn FnMut(usize, f32)> = if c < lead {
                let labels = &mut labels[first_row..first_row + rows];
                Box::new(move |i, v| labels[i] = v)
            } else {
                let (j, values) = (c - lead, &mut values[first_row * n_feat..(first_row + rows) * n_feat]);
                Box::new(move |i, v| values[i * n_feat + j] = v)
            };
            let read = match reader {
                ColumnReader::BoolColumnReader(r) => drain(r, rows, max_def, |b| f32::from(u8::from(b)), &mut put),
                ColumnReader::Int32ColumnReader(r) => drain(r, rows, max_def, |v| v as f32, &mut put),
                ColumnReader::Int64ColumnReader(r) => drain(r, rows, max_def, |v| v as f32, &mut put),
                ColumnReader::FloatColumnReader(r) => drain(r, rows, max_def, |v| v, &mut put),
                ColumnReader::DoubleColumnReader(r) => drain(r, rows, max_def, |v| v as f32, &mut put),
                _ => unreachable!("column types were checked above"),
            }
            .map_err(malformed)?;
            if read != rows {
                return Err(DataError::Malformed(format!(
                    "column {} ('{}') of row group {} holds {read} rows, not {rows}",
                    c + 1,
                    schema.column(c).name(),
                    g + 1
                )));
            }
        }
        first_row += rows;
    }
    if let Some(i) = labels.iter().position(|l| l.is_nan()) {
        return Err(DataError::Malformed(format!(
            "row {} has no label (null or NaN in the first column, '{}'); every training row needs one",
            i + 1,
            schema.column(0).name()
        )));
    }
    let features = DenseMatrix::new(n, n_feat, values)
        .ok_or(DataError::Empty)?
        .with_min_cols(opts.min_features);
    Ok(Dataset {
        features,
        labels,
        weights: None,
    })
}

/// Reads one column chunk of `rows` rows, calling `put(row, value)` for each non-null value
/// (nulls stay missing). Returns the rows read.
fn drain<T: DataType>(
    mut r: ColumnReaderImpl<T>,
    rows: usize,
    max_def: i16,
    to_f32: impl Fn(T::T) -> f32,
    put: &mut dyn FnMut(usize, f32),
) -> parquet::errors::Result<usize>
where
    T::T: Copy,
{
    let (mut vals, mut defs) = (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
    let mut row = 0;
    while row < rows {
        vals.clear();
        defs.clear();
        let (records, _, _) = r.read_records(BATCH.min(rows - row), Some(&mut defs), None, &mut vals)?;
        if records == 0 {
            break;
        }
        if max_def == 0 {
            for (i, &v) in vals.iter().enumerate() {
                put(row + i, to_f32(v));
            }
        } else {
            let mut next = vals.iter();
            for (i, &d) in defs.iter().enumerate() {
                if d == max_def
                    && let Some(&v) = next.next()
                {
                    put(row + i, to_f32(v));
                }
            }
        }
        row += records;
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parquet::data_type::{BoolType, DoubleType, FloatType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    use super::*;

    /// A file of `schema` with one row group per entry of `groups`; each group writes its columns
    /// in order through `write`.
    fn file(
        schema: &str,
        groups: usize,
        write: impl Fn(usize, usize, &mut parquet::file::writer::SerializedColumnWriter<'_>),
    ) -> Vec<u8> {
        let schema = Arc::new(parse_message_type(schema).unwrap());
        let props = Arc::new(WriterProperties::builder().build());
        let mut out = Vec::new();
        let mut w = SerializedFileWriter::new(&mut out, schema, props).unwrap();
        for g in 0..groups {
            let mut rg = w.next_row_group().unwrap();
            let mut c = 0;
            while let Some(mut col) = rg.next_column().unwrap() {
                write(g, c, &mut col);
                col.close().unwrap();
                c += 1;
            }
            rg.close().unwrap();
        }
        w.close().unwrap();
        out
    }

    const SCHEMA: &str = "message m {
        required double label;
        optional float f1;
        required int64 f2;
        optional boolean f3;
    }";

    #[test]
    fn reads_numbers_nulls_and_row_groups_in_order() {
        // Group 0: rows 0-1; group 1: row 2. f1 is null in row 1, f3 in row 2.
        let bytes = file(SCHEMA, 2, |g, c, col| {
            let rows: &[usize] = if g == 0 { &[0, 1] } else { &[2] };
            match c {
                0 => {
                    let v: Vec<f64> = rows.iter().map(|&r| r as f64).collect();
                    col.typed::<DoubleType>().write_batch(&v, None, None).unwrap();
                }
                1 => {
                    let defs: Vec<i16> = rows.iter().map(|&r| i16::from(r != 1)).collect();
                    let v: Vec<f32> = rows.iter().filter(|&&r| r != 1).map(|&r| 10.0 + r as f32).collect();
                    col.typed::<FloatType>().write_batch(&v, Some(&defs), None).unwrap();
                }
                2 => {
                    let v: Vec<i64> = rows.iter().map(|&r| 100 + r as i64).collect();
                    col.typed::<Int64Type>().write_batch(&v, None, None).unwrap();
                }
                _ => {
                    let defs: Vec<i16> = rows.iter().map(|&r| i16::from(r != 2)).collect();
                    let v: Vec<bool> = rows.iter().filter(|&&r| r != 2).map(|&r| r == 0).collect();
                    col.typed::<BoolType>().write_batch(&v, Some(&defs), None).unwrap();
                }
            }
        });
        let ds = parse_parquet(&bytes, &ReadOptions::default()).unwrap();
        assert_eq!(ds.labels, vec![0.0, 1.0, 2.0]);
        assert_eq!(ds.features.n_cols(), 3);
        let rows: Vec<Vec<f32>> = ds.features.values().chunks(3).map(<[f32]>::to_vec).collect();
        assert_eq!(rows[0], vec![10.0, 100.0, 1.0]);
        assert!(rows[1][0].is_nan());
        assert_eq!(rows[1][1..], [101.0, 0.0]);
        assert_eq!(rows[2][..2], [12.0, 102.0]);
        assert!(rows[2][2].is_nan());

        // Without a label (prediction data) every column is a feature.
        let opts = ReadOptions {
            has_label: false,
            ..ReadOptions::default()
        };
        let ds = parse_parquet(&bytes, &opts).unwrap();
        assert!(ds.labels.is_empty());
        assert_eq!(ds.features.n_cols(), 4);
        assert_eq!(ds.features.values()[..4], [0.0, 10.0, 100.0, 1.0]);
    }

    #[test]
    fn concatenated_files_are_read_in_order() {
        let one = |first: f64| {
            file(
                "message m { required double label; required float f; }",
                1,
                move |_, c, col| {
                    if c == 0 {
                        col.typed::<DoubleType>()
                            .write_batch(&[first, first + 1.0], None, None)
                            .unwrap();
                    } else {
                        col.typed::<FloatType>().write_batch(&[7.0, 8.0], None, None).unwrap();
                    }
                },
            )
        };
        let stream = [one(0.0), one(2.0), one(4.0)].concat();
        assert_eq!(split_files(&stream).len(), 3);
        let ds = parse_parquet(&stream, &ReadOptions::default()).unwrap();
        assert_eq!(ds.labels, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(ds.features.values(), &[7.0, 8.0, 7.0, 8.0, 7.0, 8.0]);
        // A truncated second file is an error naming it, not fewer rows.
        let cut = [one(0.0), one(2.0)[..40].to_vec()].concat();
        let e = parse_parquet(&cut, &ReadOptions::default()).unwrap_err().to_string();
        assert!(e.contains("not a readable Parquet file"), "{e}");
    }

    #[test]
    fn strings_missing_labels_and_garbage_are_clear_errors() {
        let text = file(
            "message m { required double label; required binary name (UTF8); }",
            1,
            |_, c, col| {
                if c == 0 {
                    col.typed::<DoubleType>().write_batch(&[1.0], None, None).unwrap();
                } else {
                    let v = [parquet::data_type::ByteArray::from("a")];
                    col.typed::<parquet::data_type::ByteArrayType>()
                        .write_batch(&v, None, None)
                        .unwrap();
                }
            },
        );
        let e = parse_parquet(&text, &ReadOptions::default()).unwrap_err().to_string();
        assert!(
            e.contains("column 2 ('name') is BYTE_ARRAY") && e.contains("must be a number"),
            "{e}"
        );

        let no_label = file(
            "message m { optional double label; required float f; }",
            1,
            |_, c, col| {
                if c == 0 {
                    col.typed::<DoubleType>()
                        .write_batch(&[1.0], Some(&[1, 0]), None)
                        .unwrap();
                } else {
                    col.typed::<FloatType>().write_batch(&[1.0, 2.0], None, None).unwrap();
                }
            },
        );
        let e = parse_parquet(&no_label, &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 2 has no label"), "{e}");

        let e = parse_parquet(b"label,f\n1,2\n", &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a readable Parquet file"), "{e}");
    }
}

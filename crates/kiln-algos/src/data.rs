//! In-memory data: a dense row-major `f32` feature matrix (NaN = missing) with labels and weights.

/// A dense row-major feature matrix; `NaN` marks a missing value.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseMatrix {
    n_rows: usize,
    n_cols: usize,
    values: Vec<f32>,
}

impl DenseMatrix {
    /// Wraps row-major values; `None` if `values.len() != n_rows * n_cols`.
    pub fn new(n_rows: usize, n_cols: usize, values: Vec<f32>) -> Option<Self> {
        (n_rows.checked_mul(n_cols)? == values.len()).then_some(Self { n_rows, n_cols, values })
    }

    /// Builds a matrix from rows of equal length; `None` if the rows are ragged.
    pub fn from_rows(rows: &[Vec<f32>]) -> Option<Self> {
        let n_cols = rows.first().map_or(0, Vec::len);
        let mut values = Vec::with_capacity(rows.len() * n_cols);
        for r in rows {
            if r.len() != n_cols {
                return None;
            }
            values.extend_from_slice(r);
        }
        Self::new(rows.len(), n_cols, values)
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Number of columns (features).
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    /// All values, row-major.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// One row.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.n_cols..(i + 1) * self.n_cols]
    }

    /// Pads (with missing values) or keeps the matrix so it has at least `n_cols` columns.
    pub fn with_min_cols(self, n_cols: usize) -> Self {
        if n_cols <= self.n_cols {
            return self;
        }
        let mut values = Vec::with_capacity(self.n_rows * n_cols);
        for r in 0..self.n_rows {
            values.extend_from_slice(self.row(r));
            values.extend(std::iter::repeat_n(f32::NAN, n_cols - self.n_cols));
        }
        Self {
            n_rows: self.n_rows,
            n_cols,
            values,
        }
    }
}

/// A labelled data set: features, one label per row and optional instance weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Feature matrix.
    pub features: DenseMatrix,
    /// One label per row (empty when the data had no label column).
    pub labels: Vec<f32>,
    /// Optional instance weights, one per row.
    pub weights: Option<Vec<f32>>,
}

impl Dataset {
    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.features.n_rows()
    }

    /// Appends `other` (same number of columns, or padded to the wider of the two).
    pub fn append(self, other: Dataset) -> Dataset {
        let n_cols = self.features.n_cols().max(other.features.n_cols());
        let a = self.features.with_min_cols(n_cols);
        let b = other.features.with_min_cols(n_cols);
        let weights = match (self.weights, other.weights) {
            (None, None) => None,
            (wa, wb) => {
                let mut w = wa.unwrap_or_else(|| vec![1.0; a.n_rows()]);
                w.extend(wb.unwrap_or_else(|| vec![1.0; b.n_rows()]));
                Some(w)
            }
        };
        let mut values = a.values;
        values.extend_from_slice(&b.values);
        let mut labels = self.labels;
        labels.extend(other.labels);
        Dataset {
            features: DenseMatrix {
                n_rows: a.n_rows + b.n_rows,
                n_cols,
                values,
            },
            labels,
            weights,
        }
    }
}

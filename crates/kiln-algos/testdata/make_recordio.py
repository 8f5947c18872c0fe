"""Writes the RecordIO-protobuf fixtures of kiln-algos' protobuf tests with the SageMaker SDK's
own writers (run: python3 testdata/make_recordio.py, from crates/kiln-algos)."""
import numpy as np
import scipy.sparse
from sagemaker.serializer_utils import write_numpy_to_dense_tensor, write_spmatrix_to_sparse_tensor

x = np.array([[1.5, -2.0, 0.0, 3.25], [4.0, 5.0, 6.0, 7.0], [0.125, 0.0, -1.0, 1e6]])
y = np.array([0.0, 1.0, 2.0])
with open("testdata/dense-f32-labels.rec", "wb") as f:
    write_numpy_to_dense_tensor(f, x.astype("float32"), y.astype("float32"))
with open("testdata/dense-f64.rec", "wb") as f:
    write_numpy_to_dense_tensor(f, x)
with open("testdata/sparse-f32-labels.rec", "wb") as f:
    write_spmatrix_to_sparse_tensor(f, scipy.sparse.csr_matrix(x.astype("float32")), y.astype("float32"))

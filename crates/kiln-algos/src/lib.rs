//! kiln's built-in algorithms (SageMaker's XGBoost, K-Means and Linear Learner) and the readers for the data
//! formats SageMaker's built-ins accept. It runs inside the SageMaker container contract
//! (`kiln algo <name>`), and knows nothing about the server, the store or the network. It is not
//! a general ML library: it implements what SageMaker's built-ins offer (hyperparameters, log
//! lines, model files), fast on CPU, and no more.
//!
//! Layout: [`registry`] lists the built-ins (one [`registry::Algorithm`] each: images,
//! hyperparameters, channels, metric definitions, train and predict), which the engine and the
//! CLI look up by name or image. XGBoost: [`reader`] parses CSV/libsvm; [`binning`] turns
//! features into `u8` bins once; [`grow`] grows one tree from gradient histograms; [`booster`]
//! runs the boosting loop; [`metric`] evaluates each round (the area metrics rank rows with
//! [`rank`]); [`model_json`] reads and writes xgboost's JSON model format; [`params`] validates
//! hyperparameters; [`container`] and [`xgboost`] implement `kiln algo xgboost train|predict`;
//! [`collective`] connects the hosts of a distributed job so that they train one model.
//! K-Means: [`kmeans`]. Linear Learner: [`linear`]. PCA: [`pca`], k-NN: [`knn`] (both with [`linalg`]), Random Cut Forest: [`rcf`], Factorization Machines: [`fm`] (sparse rows). [`dense_input`] and [`hparams`] read
//! the rows and hyperparameters of the built-ins after K-Means. [`protobuf`] reads RecordIO-protobuf (the SDK's `record_set()`).

pub mod binning;
pub mod booster;
pub mod checkpoint;
pub mod cli;
pub mod collective;
pub mod container;
pub mod data;
pub mod dense_input;
pub mod distributed;
pub mod fm;
pub mod grow;
pub mod hparams;
pub mod kmeans;
pub mod knn;
pub mod linalg;
pub mod linear;
pub mod metric;
pub mod model_json;
pub mod objective;
pub mod params;
pub mod parquet_reader;
pub mod pca;
pub mod prof;
pub mod protobuf;
pub mod rank;
pub mod rcf;
pub mod reader;
pub mod registry;
pub mod rng;
pub mod stream;
pub mod tree;
pub mod xgboost;

pub use booster::{Booster, TrainError, TrainOptions, train};
pub use data::{Dataset, DenseMatrix};
pub use metric::Metric;
pub use objective::Objective;
pub use params::{GrowPolicy, ParamError, XgbConfig, XgbParams};

/// The (Name, Regex) metric definitions the service injects for a built-in algorithm's image
/// (see [`registry::Algorithm::metric_definitions`]); empty for unknown algorithms.
pub fn builtin_metric_definitions(algorithm: &str) -> Vec<(String, String)> {
    registry::by_name(algorithm).map_or_else(Vec::new, |a| a.metric_definitions())
}

//! kiln's built-in algorithms (XGBoost-compatible gradient-boosted trees first) and the readers for
//! the data formats SageMaker's built-ins accept. It runs inside the SageMaker container contract
//! (`kiln algo <name>`), and knows nothing about the server, the store or the network.

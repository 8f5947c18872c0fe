//! Tuning strategies (random, grid, Bayesian, Hyperband) and early-stopping rules, as pure functions
//! of a search space and a trial history. No I/O: the engine owns the tuning job and its children.

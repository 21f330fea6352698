//! Oracle CDC through LogMiner.

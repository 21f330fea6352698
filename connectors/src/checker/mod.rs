//! The consistency checker: proves a sink table equals its source, chunk by primary-key range.

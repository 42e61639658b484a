//! TODO(helper): see tests/src/lib.rs

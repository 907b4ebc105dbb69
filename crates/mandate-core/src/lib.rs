//! mandate-core

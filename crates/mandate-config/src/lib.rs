//! mandate-config

//! mandate-store

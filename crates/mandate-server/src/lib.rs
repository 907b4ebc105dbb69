//! mandate-server

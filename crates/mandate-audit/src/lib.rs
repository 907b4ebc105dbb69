//! mandate-audit

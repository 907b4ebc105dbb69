//! First-start material in the data directory: the master key that seals
//! signing keys, and the admin API token. Both are created once, mode 0600,
//! and can be supplied through the environment instead (`MANDATE_MASTER_KEY`,
//! `MANDATE_ADMIN_TOKEN`), which replicas sharing a database must do for the
//! master key.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use mandate_types::random_token;

/// File holding the master key (base64url of 32 bytes).
pub const MASTER_KEY_FILE: &str = "master.key";
/// File holding the admin API token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// A start-up failure, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The data directory or a file in it could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The master key is malformed.
    #[error("{0}")]
    MasterKey(String),
}

fn io(path: &Path, source: std::io::Error) -> BootstrapError {
    BootstrapError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Creates the data directory (mode 0700) if needed.
pub fn ensure_data_dir(dir: &Path) -> Result<(), BootstrapError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io(dir, e))
}

/// Reads `name` from the data directory, or creates it with `make()`, 0600.
fn read_or_create(
    dir: &Path,
    name: &str,
    make: impl Fn() -> String,
) -> Result<String, BootstrapError> {
    let path = dir.join(name);
    match fs::read_to_string(&path) {
        Ok(s) => return Ok(s.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&path, e)),
    }
    let value = make();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io(&path, e))?;
    file.write_all(value.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io(&path, e))?;
    tracing::info!(path = %path.display(), "created {name}");
    Ok(value)
}

/// The master key from `MANDATE_MASTER_KEY` (32 bytes as base64 or 64 hex
/// digits) or the data directory.
pub fn master_key(dir: &Path, from_env: Option<String>) -> Result<[u8; 32], BootstrapError> {
    let (text, source) = match from_env {
        Some(v) => (v, "MANDATE_MASTER_KEY"),
        None => (
            read_or_create(dir, MASTER_KEY_FILE, || random_token(32))?,
            MASTER_KEY_FILE,
        ),
    };
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex_decode(text)
    } else {
        URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .or_else(|_| STANDARD.decode(text))
            .ok()
    };
    let bytes: [u8; 32] = bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| {
        BootstrapError::MasterKey(format!(
            "{source} must hold 32 bytes as base64 or 64 hex digits"
        ))
    })?;
    Ok(bytes)
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// The admin token from `MANDATE_ADMIN_TOKEN` or the data directory.
pub fn admin_token(dir: &Path, from_env: Option<String>) -> Result<String, BootstrapError> {
    match from_env {
        Some(t) if t.len() >= 16 => Ok(t),
        Some(_) => Err(BootstrapError::MasterKey(
            "MANDATE_ADMIN_TOKEN must be at least 16 characters".into(),
        )),
        None => read_or_create(dir, ADMIN_TOKEN_FILE, || random_token(32)),
    }
}

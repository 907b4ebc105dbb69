//! Signing keys over their life: pending (published, not yet signing), active
//! (signing), retired (still published until every token it signed expired).
//!
//! Rotation never surprises a verifier: a new key is published in the JWKS for
//! `prepublish` seconds before it signs anything, and the JWKS is served with a
//! cache lifetime shorter than that, so every cache holds the key before the
//! first token it signs. A key that stops signing stays published for
//! `retire_after` seconds, the longest access token lifetime plus leeway.
//!
//! One keyring serves one [`KeyPurpose`]: the JWS keys (the JWKS) or the
//! Biscuit root keys (`biscuit_root_keys` in the metadata), with the same
//! life cycle.
//!
//! The keyring keeps a snapshot in memory and reloads it from the store
//! periodically, so replicas sharing a database converge on the same keys.

use std::sync::{Arc, RwLock};

use mandate_biscuit::{PublishedRootKey, RootKey};
use mandate_jose::{MasterKey, PrivateKeyDer, PublicJwk, SigningAlg, SigningKey};
use mandate_types::{Clock, UnixTime};
use serde::Serialize;

use crate::model::{KeyPurpose, StoredSigningKey};
use crate::store::Store;
use crate::Error;

/// Timing of key rotation.
#[derive(Debug, Clone, Copy)]
pub struct KeyringSettings {
    /// Algorithm of keys we generate and sign with.
    pub alg: SigningAlg,
    /// Seconds a rotated-in key is published before it signs.
    pub prepublish: i64,
    /// Seconds a superseded key stays published.
    pub retire_after: i64,
    /// What the keys sign.
    pub purpose: KeyPurpose,
}

impl KeyringSettings {
    /// The JWKS `Cache-Control: max-age`: half the pre-publication window.
    pub fn jwks_max_age(&self) -> i64 {
        (self.prepublish / 2).max(1)
    }
}

/// A key's state at a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Published, will sign from `activate_at`.
    Pending,
    /// Signing now.
    Active,
    /// No longer signing; published until `unpublish_at`.
    Retired,
    /// No longer published.
    Expired,
}

/// What `mandate keys list` shows.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: SigningAlg,
    /// What it signs.
    pub purpose: KeyPurpose,
    /// State now.
    pub state: KeyState,
    /// When it was created and published.
    pub created_at: UnixTime,
    /// When it starts (or started) signing.
    pub activate_at: UnixTime,
    /// When it leaves the JWKS, once superseded.
    pub unpublish_at: Option<UnixTime>,
}

struct LoadedKey {
    info: StoredSigningKey,
    key: Arc<SigningKey>,
    /// The same key as a Biscuit root key, for that purpose.
    root: Option<Arc<RootKey>>,
}

/// The keys as of the last load.
pub struct KeySnapshot {
    keys: Vec<LoadedKey>,
    published: Vec<PublicJwk>,
    published_roots: Vec<PublishedRootKey>,
    jwks_json: Arc<str>,
    retire_after: i64,
    alg: SigningAlg,
}

impl KeySnapshot {
    fn build(mut keys: Vec<LoadedKey>, settings: &KeyringSettings, now: UnixTime) -> Self {
        keys.sort_by_key(|k| (k.info.activate_at, k.info.created_at));
        let mut snapshot = Self {
            keys,
            published: Vec::new(),
            published_roots: Vec::new(),
            jwks_json: Arc::from(""),
            retire_after: settings.retire_after,
            alg: settings.alg,
        };
        let live: Vec<&LoadedKey> = snapshot
            .infos(now)
            .iter()
            .zip(&snapshot.keys)
            .filter(|(info, _)| info.state != KeyState::Expired)
            .map(|(_, k)| k)
            .collect();
        let published = live.iter().map(|k| k.key.public_jwk().clone()).collect();
        let published_roots = live
            .iter()
            .filter_map(|k| k.root.as_ref().map(|r| r.published()))
            .collect();
        snapshot.published = published;
        snapshot.published_roots = published_roots;
        let jwks = serde_json::json!({ "keys": snapshot.published });
        snapshot.jwks_json = Arc::from(jwks.to_string());
        snapshot
    }

    /// The key that signs at `now`: the latest activated key of our algorithm.
    pub fn signer(&self, now: UnixTime) -> Option<&Arc<SigningKey>> {
        self.keys
            .iter()
            .rev()
            .find(|k| k.info.alg == self.alg && k.info.activate_at <= now)
            .map(|k| &k.key)
    }

    /// Every published public key.
    pub fn published(&self) -> &[PublicJwk] {
        &self.published
    }

    /// The Biscuit root key that signs at `now` (a Biscuit keyring only).
    pub fn biscuit_root(&self, now: UnixTime) -> Option<&Arc<RootKey>> {
        let kid = self.signer(now)?.kid();
        self.keys
            .iter()
            .find(|k| k.info.kid == kid)
            .and_then(|k| k.root.as_ref())
    }

    /// Every published Biscuit root public key (a Biscuit keyring only).
    pub fn published_roots(&self) -> &[PublishedRootKey] {
        &self.published_roots
    }

    /// The JWKS document, serialized once per load.
    pub fn jwks_json(&self) -> &Arc<str> {
        &self.jwks_json
    }

    /// Each key's state at `now`, oldest first.
    pub fn infos(&self, now: UnixTime) -> Vec<KeyInfo> {
        let signer_kid = self.signer(now).map(|k| k.kid().to_owned());
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                // Superseded when the next key (in activation order) activated.
                let superseded_at = self
                    .keys
                    .get(i + 1..)
                    .unwrap_or_default()
                    .iter()
                    .map(|n| n.info.activate_at)
                    .find(|&t| t <= now);
                let unpublish_at = superseded_at.map(|t| t + self.retire_after);
                let state = if k.info.activate_at > now {
                    KeyState::Pending
                } else if signer_kid.as_deref() == Some(k.info.kid.as_str()) {
                    KeyState::Active
                } else if unpublish_at.is_some_and(|t| t <= now) {
                    KeyState::Expired
                } else {
                    KeyState::Retired
                };
                KeyInfo {
                    kid: k.info.kid.clone(),
                    alg: k.info.alg,
                    purpose: k.info.purpose,
                    state,
                    created_at: k.info.created_at,
                    activate_at: k.info.activate_at,
                    unpublish_at,
                }
            })
            .collect()
    }
}

/// The server's two keyrings: JWS signing keys and Biscuit root keys.
#[derive(Clone)]
pub struct Keyrings {
    /// Sign access tokens and Agent Cards; published in the JWKS.
    pub jws: Arc<Keyring>,
    /// Sign Biscuit authority blocks; published as `biscuit_root_keys`.
    pub biscuit: Arc<Keyring>,
}

/// Loads, rotates and serves signing keys.
pub struct Keyring {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    master: MasterKey,
    settings: KeyringSettings,
    snapshot: RwLock<Arc<KeySnapshot>>,
    /// Held through a reload, from reading the store to swapping the
    /// snapshot: two reloads at once (the periodic one, and one after a
    /// rotation) could otherwise swap in the older reading last, and a
    /// rotated key would vanish from the JWKS until the next reload.
    reloading: tokio::sync::Mutex<()>,
}

impl Keyring {
    /// Loads the keys; creates an immediately active key of the configured
    /// algorithm when there is none (first start, or a new algorithm).
    pub async fn open(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        master: MasterKey,
        settings: KeyringSettings,
    ) -> Result<Self, Error> {
        let keyring = Self {
            store,
            clock,
            master,
            settings,
            snapshot: RwLock::new(Arc::new(KeySnapshot::build(Vec::new(), &settings, 0))),
            reloading: tokio::sync::Mutex::new(()),
        };
        keyring.reload().await?;
        let has_key = keyring
            .snapshot()
            .keys
            .iter()
            .any(|k| k.info.alg == settings.alg);
        if !has_key {
            let now = keyring.clock.now();
            keyring.create(now).await?;
            tracing::info!(alg = %settings.alg, purpose = settings.purpose.as_str(), "generated a signing key");
        }
        Ok(keyring)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<KeySnapshot> {
        match self.snapshot.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The rotation settings.
    pub fn settings(&self) -> &KeyringSettings {
        &self.settings
    }

    /// Re-reads keys from the store (other replicas may have rotated).
    pub async fn reload(&self) -> Result<(), Error> {
        let _one_at_a_time = self.reloading.lock().await;
        let stored = self.store.list_signing_keys().await?;
        let mut loaded = Vec::with_capacity(stored.len());
        for info in stored {
            if info.purpose != self.settings.purpose {
                continue;
            }
            let der = self
                .master
                .open(&info.sealed_private_key, info.kid.as_bytes())
                .map_err(|e| Error::Keys(format!("key {}: {e}", info.kid).into()))?;
            let root = match info.purpose {
                KeyPurpose::Biscuit => Some(Arc::new(
                    RootKey::from_ed25519_pkcs8(&info.kid, &der)
                        .map_err(|e| Error::Keys(format!("key {}: {e}", info.kid).into()))?,
                )),
                KeyPurpose::Jws => None,
            };
            let key = SigningKey::from_private(info.alg, &PrivateKeyDer::from_der(der))
                .map_err(|e| Error::Keys(format!("key {}: {e}", info.kid).into()))?;
            if key.kid() != info.kid {
                return Err(Error::Keys(
                    format!("key {} does not match its kid", info.kid).into(),
                ));
            }
            loaded.push(LoadedKey {
                info,
                key: Arc::new(key),
                root,
            });
        }
        let snapshot = Arc::new(KeySnapshot::build(loaded, &self.settings, self.clock.now()));
        match self.snapshot.write() {
            Ok(mut s) => *s = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
        Ok(())
    }

    /// Rotates: publishes a new key now that starts signing after the
    /// pre-publication window. Returns its id.
    pub async fn rotate(&self) -> Result<KeyInfo, Error> {
        let now = self.clock.now();
        let kid = self.create(now + self.settings.prepublish).await?;
        self.snapshot()
            .infos(now)
            .into_iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| Error::Keys("rotated key vanished".into()))
    }

    async fn create(&self, activate_at: UnixTime) -> Result<String, Error> {
        let alg = self.settings.alg;
        // RSA generation takes a while; keep it off the async workers.
        let private = tokio::task::spawn_blocking(move || PrivateKeyDer::generate(alg))
            .await
            .map_err(|_| Error::Keys("key generation task failed".into()))?
            .map_err(|e| Error::Keys(e.to_string().into()))?;
        let key = SigningKey::from_private(alg, &private)
            .map_err(|e| Error::Keys(e.to_string().into()))?;
        let sealed = self
            .master
            .seal(private.der(), key.kid().as_bytes())
            .map_err(|e| Error::Keys(e.to_string().into()))?;
        let stored = StoredSigningKey {
            kid: key.kid().to_owned(),
            alg,
            sealed_private_key: sealed,
            created_at: self.clock.now(),
            activate_at,
            purpose: self.settings.purpose,
        };
        self.store.insert_signing_key(&stored).await?;
        self.reload().await?;
        Ok(stored.kid)
    }
}

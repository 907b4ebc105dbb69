//! [`CachedStore`]: a read-through cache of clients and resources in front of
//! any [`Store`], so the token hot path does not query the database for the
//! same client on every request.
//!
//! Writes made through this store invalidate at once. Writes made by another
//! replica are seen within `ttl`: a client deleted or a secret rotated on one
//! replica may keep its old form on another for that long. Everything else
//! (replay cache, revocations, audit, keys) goes straight to the inner store.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mandate_audit::{Anchor, Event, NewEvent};
use mandate_types::{ClientId, ResourceUri, UnixTime};

use crate::model::{
    Client, Grant, RefreshRecord, RefreshUse, Resource, RevokedAccess, StoredSigningKey, User,
};
use crate::store::{Store, StoreError};

/// Most cached clients; past that the cache is cleared and refilled.
const MAX_CACHED_CLIENTS: usize = 100_000;

struct Entry<T> {
    at: Instant,
    value: T,
}

/// A [`Store`] that caches clients and resources for `ttl`.
pub struct CachedStore {
    inner: Arc<dyn Store>,
    ttl: Duration,
    clients: RwLock<HashMap<ClientId, Entry<Option<Client>>>>,
    resources: RwLock<Option<Entry<Vec<Resource>>>>,
}

impl CachedStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            clients: RwLock::new(HashMap::new()),
            resources: RwLock::new(None),
        }
    }

    fn forget_client(&self, id: &ClientId) {
        if let Ok(mut c) = self.clients.write() {
            c.remove(id);
        }
    }

    fn forget_resources(&self) {
        if let Ok(mut r) = self.resources.write() {
            *r = None;
        }
    }

    async fn resources(&self) -> Result<Vec<Resource>, StoreError> {
        if let Ok(r) = self.resources.read() {
            if let Some(e) = r.as_ref().filter(|e| e.at.elapsed() < self.ttl) {
                return Ok(e.value.clone());
            }
        }
        let fresh = self.inner.list_resources().await?;
        if let Ok(mut r) = self.resources.write() {
            *r = Some(Entry {
                at: Instant::now(),
                value: fresh.clone(),
            });
        }
        Ok(fresh)
    }
}

#[async_trait]
impl Store for CachedStore {
    async fn put_client(&self, client: &Client) -> Result<(), StoreError> {
        self.forget_client(&client.client_id);
        self.inner.put_client(client).await
    }

    async fn get_client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        if let Ok(c) = self.clients.read() {
            if let Some(e) = c.get(id).filter(|e| e.at.elapsed() < self.ttl) {
                return Ok(e.value.clone());
            }
        }
        let fresh = self.inner.get_client(id).await?;
        if let Ok(mut c) = self.clients.write() {
            if c.len() >= MAX_CACHED_CLIENTS {
                c.clear();
            }
            c.insert(
                id.clone(),
                Entry {
                    at: Instant::now(),
                    value: fresh.clone(),
                },
            );
        }
        Ok(fresh)
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        self.inner.list_clients().await
    }

    async fn delete_client(&self, id: &ClientId) -> Result<bool, StoreError> {
        self.forget_client(id);
        self.inner.delete_client(id).await
    }

    async fn put_resource(&self, resource: &Resource) -> Result<(), StoreError> {
        self.forget_resources();
        self.inner.put_resource(resource).await
    }

    async fn get_resource(&self, id: &ResourceUri) -> Result<Option<Resource>, StoreError> {
        Ok(self.resources().await?.into_iter().find(|r| &r.id == id))
    }

    async fn list_resources(&self) -> Result<Vec<Resource>, StoreError> {
        self.resources().await
    }

    async fn delete_resource(&self, id: &ResourceUri) -> Result<bool, StoreError> {
        self.forget_resources();
        self.inner.delete_resource(id).await
    }

    async fn insert_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        self.inner.insert_signing_key(key).await
    }

    async fn list_signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        self.inner.list_signing_keys().await
    }

    async fn use_once(
        &self,
        namespace: &str,
        value: &str,
        expires_at: UnixTime,
    ) -> Result<bool, StoreError> {
        self.inner.use_once(namespace, value, expires_at).await
    }

    async fn revoke_token(&self, jti: &str, expires_at: UnixTime) -> Result<(), StoreError> {
        self.inner.revoke_token(jti, expires_at).await
    }

    async fn record_exchange(
        &self,
        jti: &str,
        parent_jti: &str,
        expires_at: UnixTime,
    ) -> Result<bool, StoreError> {
        self.inner
            .record_exchange(jti, parent_jti, expires_at)
            .await
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        self.inner.is_revoked(jti).await
    }

    async fn list_revoked(&self, now: UnixTime) -> Result<Vec<String>, StoreError> {
        self.inner.list_revoked(now).await
    }

    async fn append_audit(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError> {
        self.inner.append_audit(events).await
    }

    async fn append_audit_unsynced(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError> {
        self.inner.append_audit_unsynced(events).await
    }

    async fn audit_after(&self, after: i64, limit: i64) -> Result<Vec<Event>, StoreError> {
        self.inner.audit_after(after, limit).await
    }

    async fn audit_anchor(&self) -> Result<Anchor, StoreError> {
        self.inner.audit_anchor().await
    }

    async fn prune_audit(&self, before_ms: i64, limit: i64) -> Result<u64, StoreError> {
        self.inner.prune_audit(before_ms, limit).await
    }

    async fn purge_expired(&self, now: UnixTime) -> Result<u64, StoreError> {
        self.inner.purge_expired(now).await
    }

    async fn put_user(&self, user: &User) -> Result<(), StoreError> {
        self.inner.put_user(user).await
    }

    async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.inner.get_user(id).await
    }

    async fn find_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.inner.find_user(username).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.inner.list_users().await
    }

    async fn put_ephemeral(
        &self,
        namespace: &str,
        key: &str,
        doc: &str,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        self.inner
            .put_ephemeral(namespace, key, doc, expires_at)
            .await
    }

    async fn put_owned_ephemeral(
        &self,
        namespace: &str,
        key: &str,
        owner: &str,
        doc: &str,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        self.inner
            .put_owned_ephemeral(namespace, key, owner, doc, expires_at)
            .await
    }

    async fn get_ephemeral(
        &self,
        namespace: &str,
        key: &str,
        now: UnixTime,
    ) -> Result<Option<String>, StoreError> {
        self.inner.get_ephemeral(namespace, key, now).await
    }

    async fn take_ephemeral(
        &self,
        namespace: &str,
        key: &str,
        now: UnixTime,
    ) -> Result<Option<String>, StoreError> {
        self.inner.take_ephemeral(namespace, key, now).await
    }

    async fn put_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        self.inner.put_grant(grant).await
    }

    async fn find_grant(
        &self,
        user_id: &str,
        client_id: &ClientId,
        resource: &ResourceUri,
    ) -> Result<Option<Grant>, StoreError> {
        self.inner.find_grant(user_id, client_id, resource).await
    }

    async fn get_grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        self.inner.get_grant(id).await
    }

    async fn list_grants(&self, user_id: &str) -> Result<Vec<Grant>, StoreError> {
        self.inner.list_grants(user_id).await
    }

    async fn delete_grant(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.delete_grant(id).await
    }

    async fn insert_refresh(
        &self,
        hash: &str,
        record: &RefreshRecord,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        self.inner.insert_refresh(hash, record, expires_at).await
    }

    async fn peek_refresh(
        &self,
        hash: &str,
        now: UnixTime,
    ) -> Result<Option<RefreshRecord>, StoreError> {
        self.inner.peek_refresh(hash, now).await
    }

    async fn use_refresh(&self, hash: &str, now: UnixTime) -> Result<RefreshUse, StoreError> {
        self.inner.use_refresh(hash, now).await
    }

    async fn revoke_refresh_family(&self, family: &str) -> Result<u64, StoreError> {
        self.inner.revoke_refresh_family(family).await
    }

    async fn revoke_user_access(&self, user_id: &str) -> Result<RevokedAccess, StoreError> {
        self.inner.revoke_user_access(user_id).await
    }
}

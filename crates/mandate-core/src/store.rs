//! The one storage trait. `mandate-store` implements it on SQLite and PostgreSQL;
//! the protocol core sees nothing but this.

use async_trait::async_trait;
use mandate_audit::{Anchor, Event, NewEvent};
use mandate_types::{ClientId, ResourceUri, UnixTime};

use crate::model::{
    Client, Grant, RefreshRecord, RefreshUse, Resource, RevokedAccess, StoredSigningKey, User,
};

/// A storage failure. Never shown to a client beyond `server_error`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(String),
    /// A stored row could not be decoded.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// Which table.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// Durable state of the authorization server.
///
/// Every method is one transaction: a crash leaves either all of it or none.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts or replaces a client.
    async fn put_client(&self, client: &Client) -> Result<(), StoreError>;
    /// Reads a client.
    async fn get_client(&self, id: &ClientId) -> Result<Option<Client>, StoreError>;
    /// Lists every client.
    async fn list_clients(&self) -> Result<Vec<Client>, StoreError>;
    /// Deletes a client; `false` if there was none.
    async fn delete_client(&self, id: &ClientId) -> Result<bool, StoreError>;

    /// Inserts or replaces a resource.
    async fn put_resource(&self, resource: &Resource) -> Result<(), StoreError>;
    /// Reads a resource.
    async fn get_resource(&self, id: &ResourceUri) -> Result<Option<Resource>, StoreError>;
    /// Lists every resource.
    async fn list_resources(&self) -> Result<Vec<Resource>, StoreError>;
    /// Deletes a resource; `false` if there was none.
    async fn delete_resource(&self, id: &ResourceUri) -> Result<bool, StoreError>;

    /// Adds a signing key.
    async fn insert_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError>;
    /// Lists every signing key, oldest first.
    async fn list_signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError>;

    /// Records a single-use value (an assertion `jti`, say) in `namespace` until
    /// `expires_at`. `true` the first time, `false` on every replay, across all
    /// replicas sharing the store.
    async fn use_once(
        &self,
        namespace: &str,
        value: &str,
        expires_at: UnixTime,
    ) -> Result<bool, StoreError>;

    /// Marks the token `jti` revoked until it would have expired, and with it
    /// every token recorded as exchanged from it ([`Store::record_exchange`]),
    /// at any depth, each until its own expiry. A token exchanged while the
    /// revocation runs is either revoked by it or told by `record_exchange`
    /// that its parent is revoked; never neither, on any isolation level the
    /// backends run at.
    async fn revoke_token(&self, jti: &str, expires_at: UnixTime) -> Result<(), StoreError>;
    /// Records that the token `jti` (expiring at `expires_at`) was exchanged
    /// from the token `parent_jti`, so that revoking the parent revokes it,
    /// and then tells whether the parent is revoked: a revocation committed
    /// before the record found nothing to cascade to, one committed after
    /// it finds the record.
    async fn record_exchange(
        &self,
        jti: &str,
        parent_jti: &str,
        expires_at: UnixTime,
    ) -> Result<bool, StoreError>;
    /// Whether `jti` is revoked.
    async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError>;
    /// Every revoked `jti` not yet expired at `now` (the gateway's revocation feed).
    async fn list_revoked(&self, now: UnixTime) -> Result<Vec<String>, StoreError>;

    /// Appends events to the hash chain, atomically, after the current head
    /// (whichever replica wrote it). Returns them chained.
    async fn append_audit(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError>;
    /// As [`Store::append_audit`], for events nobody waits for (gateway
    /// decisions, answered before they are recorded): the commit need not
    /// reach stable storage before this returns. It survives Mandate
    /// crashing, is synced by the next durable commit or checkpoint, and
    /// only a crash of the database's host in between can lose it, with the
    /// chain still intact up to the last synced event.
    async fn append_audit_unsynced(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError> {
        self.append_audit(events).await
    }
    /// Events with `seq > after`, at most `limit`, in order.
    async fn audit_after(&self, after: i64, limit: i64) -> Result<Vec<Event>, StoreError>;
    /// Where the stored chain starts ([`Store::prune_audit`] moves it).
    async fn audit_anchor(&self) -> Result<Anchor, StoreError>;
    /// Retention: removes from the front of the chain the events recorded
    /// before `before_ms` (Unix milliseconds), at most `limit`, in one
    /// transaction that also moves the anchor to the last one removed. Only
    /// an unbroken run from the front goes: an event stamped later than one
    /// after it (two replicas' clocks) ends the run. Returns how many went.
    async fn prune_audit(&self, before_ms: i64, limit: i64) -> Result<u64, StoreError>;

    /// Inserts or replaces a user.
    async fn put_user(&self, user: &User) -> Result<(), StoreError>;
    /// Reads a user by id.
    async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError>;
    /// Reads a user by sign-in name.
    async fn find_user(&self, username: &str) -> Result<Option<User>, StoreError>;
    /// Lists users.
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;

    /// Stores a short-lived document (pending authorization request, code,
    /// session) under `namespace`/`key` until `expires_at`.
    async fn put_ephemeral(
        &self,
        namespace: &str,
        key: &str,
        doc: &str,
        expires_at: UnixTime,
    ) -> Result<(), StoreError>;
    /// Stores a short-lived document like [`Store::put_ephemeral`], as
    /// belonging to the user `owner` (a session, a code), so that
    /// [`Store::revoke_user_access`] ends it.
    async fn put_owned_ephemeral(
        &self,
        namespace: &str,
        key: &str,
        owner: &str,
        doc: &str,
        expires_at: UnixTime,
    ) -> Result<(), StoreError>;
    /// Reads a live document.
    async fn get_ephemeral(
        &self,
        namespace: &str,
        key: &str,
        now: UnixTime,
    ) -> Result<Option<String>, StoreError>;
    /// Reads and deletes a document atomically: only one caller, across
    /// replicas, ever gets it.
    async fn take_ephemeral(
        &self,
        namespace: &str,
        key: &str,
        now: UnixTime,
    ) -> Result<Option<String>, StoreError>;

    /// Inserts or replaces a consent grant.
    async fn put_grant(&self, grant: &Grant) -> Result<(), StoreError>;
    /// A user's grant to a client for a resource.
    async fn find_grant(
        &self,
        user_id: &str,
        client_id: &ClientId,
        resource: &ResourceUri,
    ) -> Result<Option<Grant>, StoreError>;
    /// Reads a grant by id.
    async fn get_grant(&self, id: &str) -> Result<Option<Grant>, StoreError>;
    /// A user's grants.
    async fn list_grants(&self, user_id: &str) -> Result<Vec<Grant>, StoreError>;
    /// Deletes a grant and every refresh token resting on it, in one transaction.
    async fn delete_grant(&self, id: &str) -> Result<bool, StoreError>;

    /// Stores a refresh token's record under its hash.
    async fn insert_refresh(
        &self,
        hash: &str,
        record: &RefreshRecord,
        expires_at: UnixTime,
    ) -> Result<(), StoreError>;
    /// Reads an unspent, unexpired refresh token's record without spending it.
    async fn peek_refresh(
        &self,
        hash: &str,
        now: UnixTime,
    ) -> Result<Option<RefreshRecord>, StoreError>;
    /// Spends a refresh token: atomically marks it used and returns its record,
    /// or says it was already used (reuse) or is unknown.
    async fn use_refresh(&self, hash: &str, now: UnixTime) -> Result<RefreshUse, StoreError>;
    /// Revokes every token of a rotation family.
    async fn revoke_refresh_family(&self, family: &str) -> Result<u64, StoreError>;
    /// Ends what a user holds, in one transaction: every short-lived
    /// document they own ([`Store::put_owned_ephemeral`]: sessions,
    /// unredeemed codes) and every refresh token resting on one of their
    /// grants. The grants themselves stay.
    async fn revoke_user_access(&self, user_id: &str) -> Result<RevokedAccess, StoreError>;

    /// Deletes single-use values and revocations past their expiry.
    async fn purge_expired(&self, now: UnixTime) -> Result<u64, StoreError>;
}

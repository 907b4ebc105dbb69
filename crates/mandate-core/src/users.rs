//! People: argon2id password hashes, lock-out after repeated failures, and
//! sign-in whose timing does not reveal whether a username exists.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use mandate_audit::Outcome;
use mandate_types::random_token;

use crate::authority::Authority;
use crate::model::User;
use crate::Error;

/// Failed sign-ins before the account locks.
pub const MAX_FAILED_LOGINS: i64 = 5;
/// How long a locked account stays locked, seconds.
pub const LOCKOUT_SECONDS: i64 = 15 * 60;
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Longest password hashed (argon2 cost grows with length).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Why a sign-in failed. The page says the same thing for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// Unknown user or wrong password.
    BadCredentials,
    /// Too many failures; try later.
    Locked,
    /// The account is disabled.
    Disabled,
}

fn hash_password(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| Error::Keys("password hashing failed".into()))
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

fn check_password_rules(password: &str) -> Result<(), Error> {
    if password.chars().count() < MIN_PASSWORD_LEN || password.len() > MAX_PASSWORD_LEN {
        return Err(Error::Conflict(
            format!("passwords are {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters").into(),
        ));
    }
    Ok(())
}

impl Authority {
    /// Creates a user.
    pub async fn create_user(&self, username: &str, password: String) -> Result<User, Error> {
        let name_ok = !username.is_empty()
            && username.len() <= 64
            && username
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
        if !name_ok {
            return Err(Error::Conflict(
                "usernames are 1 to 64 of A-Z a-z 0-9 . _ - @".into(),
            ));
        }
        check_password_rules(&password)?;
        if self.store.find_user(username).await?.is_some() {
            return Err(Error::Conflict("a user with this name exists".into()));
        }
        let password_hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|_| Error::Keys("password hashing task failed".into()))??;
        let user = User {
            id: random_token(16),
            username: username.to_owned(),
            password_hash,
            disabled: false,
            failed_logins: 0,
            locked_until: None,
            created_at: self.clock.now(),
            upstream: None,
        };
        self.store.put_user(&user).await?;
        let mut e = self.event("user.created", Outcome::Success);
        e.subject = Some(user.id.clone());
        e.reason = Some(format!("username {}", user.username));
        self.audit.record(e).await?;
        Ok(user)
    }

    /// Sets a user's password (and unlocks the account).
    pub async fn set_password(&self, username: &str, password: String) -> Result<(), Error> {
        check_password_rules(&password)?;
        let mut user = self
            .store
            .find_user(username)
            .await?
            .ok_or(Error::NotFound("user"))?;
        user.password_hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|_| Error::Keys("password hashing task failed".into()))??;
        user.failed_logins = 0;
        user.locked_until = None;
        self.store.put_user(&user).await?;
        let mut e = self.event("user.password_set", Outcome::Success);
        e.subject = Some(user.id);
        self.audit.record(e).await
    }

    /// Enables or disables a user. Disabling also ends what the user holds:
    /// their sessions and unredeemed codes, and every refresh token family
    /// of their grants (the grants stay, so enabling the user again does
    /// not ask for consent again, but nothing issued before comes back).
    /// Access tokens already issued run out their lifetime.
    pub async fn set_user_disabled(&self, username: &str, disabled: bool) -> Result<(), Error> {
        let mut user = self
            .store
            .find_user(username)
            .await?
            .ok_or(Error::NotFound("user"))?;
        user.disabled = disabled;
        // Disabled first: sign-in, sessions, codes and refreshes check it,
        // so nothing new starts while the rest is revoked.
        self.store.put_user(&user).await?;
        let kind = if disabled {
            "user.disabled"
        } else {
            "user.enabled"
        };
        let mut e = self.event(kind, Outcome::Success);
        if disabled {
            let ended = self.store.revoke_user_access(&user.id).await?;
            e.reason = Some(format!(
                "{} sessions and codes ended, {} refresh token families revoked",
                ended.documents, ended.refresh_families
            ));
        }
        e.subject = Some(user.id);
        self.audit.record(e).await
    }

    /// Checks a username and password. An unknown user costs the same argon2
    /// verification as a known one.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Result<User, LoginFailure>, Error> {
        let user = if username.len() <= 64 && password.len() <= MAX_PASSWORD_LEN {
            self.store.find_user(username).await?
        } else {
            None
        };
        // A user linked to an upstream provider has no password; it costs
        // the same check as an unknown user, and fails.
        let phc = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| self.dummy_password_hash().to_owned());
        let presented = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || verify_password(&presented, &phc))
            .await
            .map_err(|_| Error::Keys("password check task failed".into()))?;
        let now = self.clock.now();
        let mut event = self.event("user.login", Outcome::Failure);
        let Some(mut user) = user else {
            event.reason = Some("unknown user".into());
            self.audit_refusal(event, &Error::InvalidGrant("login failed".into()))
                .await;
            return Ok(Err(LoginFailure::BadCredentials));
        };
        event.subject = Some(user.id.clone());
        let outcome = if user.disabled {
            Err(LoginFailure::Disabled)
        } else if user.locked_until.is_some_and(|t| t > now) {
            Err(LoginFailure::Locked)
        } else if !matches {
            user.failed_logins += 1;
            if user.failed_logins >= MAX_FAILED_LOGINS {
                user.locked_until = Some(now + LOCKOUT_SECONDS);
                user.failed_logins = 0;
            }
            self.store.put_user(&user).await?;
            Err(LoginFailure::BadCredentials)
        } else {
            if user.failed_logins != 0 || user.locked_until.is_some() {
                user.failed_logins = 0;
                user.locked_until = None;
                self.store.put_user(&user).await?;
            }
            Ok(user)
        };
        match &outcome {
            Ok(_) => {
                event.outcome = Outcome::Success;
                self.audit.record(event).await?;
            }
            Err(f) => {
                event.reason = Some(format!("{f:?}"));
                self.audit.record(event).await?;
            }
        }
        Ok(outcome)
    }
}

/// A valid argon2id hash of a random password, computed once, so that an
/// unknown username costs a real verification.
pub(crate) fn make_dummy_hash() -> String {
    hash_password(&random_token(24)).unwrap_or_default()
}

//! Mandate's configuration: the TOML file ([`raw`]), `MANDATE_*` environment
//! variables and command-line flags, merged once into a validated [`Config`].
//!
//! Precedence, highest first: flag, environment, file, default. Every problem
//! names the key it is about ("`clients[1].secret_env`: environment variable
//! AGENT_SECRET is not set"), and start-up stops on the first one.

mod gateway;
mod login;
mod raw;
mod trust;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use mandate_core::model::{ClientAuthMethod, ClientKeys, GrantType};
use mandate_core::registration::RegistrationMode;
use mandate_jose::SigningAlg;
use mandate_types::{ClientId, ResourceUri, Scope, ScopeSet, SecretHash};

/// Most threads the public listener may run.
pub const MAX_LISTENER_THREADS: usize = 256;
/// Longest `limits.request_timeout` and `limits.header_read_timeout`, seconds.
pub const MAX_REQUEST_TIMEOUT: i64 = 300;

pub use gateway::{GatewayConfig, IssuerConfig, RouteConfig, UpstreamCa, UpstreamClientCert};
pub use login::LoginConfig;
pub use raw::RawConfig;

/// A configuration problem, naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration key `{key}`: {problem}")]
pub struct ConfigError {
    /// The key, in TOML path form (`tokens.access_token_ttl`, `clients[0].scopes`).
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

pub(crate) fn err(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        problem: problem.into(),
    }
}

/// Values given on the command line, which beat everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--issuer`.
    pub issuer: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<String>,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A resource from the file.
#[derive(Debug, Clone)]
pub struct ResourceConfig {
    /// Identifier and audience.
    pub id: ResourceUri,
    /// Name.
    pub name: String,
    /// Scope to description.
    pub scopes: BTreeMap<Scope, String>,
    /// Token lifetime, seconds.
    pub access_token_ttl: Option<i64>,
}

/// A client from the file.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Identifier.
    pub client_id: ClientId,
    /// Name.
    pub name: String,
    /// Grants.
    pub grant_types: BTreeSet<GrantType>,
    /// Most it may get.
    pub scopes: ScopeSet,
    /// Audiences it may use (`None`: all).
    pub resources: Option<BTreeSet<ResourceUri>>,
    /// Authentication method.
    pub auth_method: ClientAuthMethod,
    /// Hash of its secret (from `secret_env` or `secret_sha256`).
    pub secret_hash: Option<SecretHash>,
    /// Its keys.
    pub keys: Option<ClientKeys>,
    /// Redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Clients whose tokens it may exchange; `*` for any.
    pub may_act_for: Vec<String>,
    /// Every token must be DPoP-bound.
    pub require_dpop: bool,
}

/// The validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Issuer identifier, no trailing slash.
    pub issuer: String,
    /// Public listener.
    pub listen: SocketAddr,
    /// Threads serving the public listener, each its own event loop.
    pub listener_threads: usize,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// State directory (SQLite file, master key, admin token).
    pub data_dir: PathBuf,
    /// `None`: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Default access token lifetime, seconds.
    pub access_token_ttl: i64,
    /// Signing algorithm.
    pub signing_alg: SigningAlg,
    /// Seconds a new key is published before it signs.
    pub key_prepublish: i64,
    /// Longest client assertion lifetime, seconds.
    pub client_assertion_max_lifetime: i64,
    /// Clock skew tolerance, seconds.
    pub leeway: i64,
    /// Default overlap of old secrets on rotation, seconds.
    pub secret_rotation_overlap: i64,
    /// Longest delegation (`act`) chain.
    pub max_delegation_depth: usize,
    /// DPoP proofs at the token endpoint must carry a server nonce.
    pub dpop_nonce: bool,
    /// A refresh token unused this long expires, seconds.
    pub refresh_token_idle_ttl: i64,
    /// A refresh token family ends this long after the authorization, seconds.
    pub refresh_token_absolute_ttl: i64,
    /// The code grant issues a refresh token only when `offline_access` was
    /// requested and consented.
    pub refresh_requires_offline_access: bool,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Longest a request to the server's own routes may take (408 after);
    /// the gateway's routes have their `upstream_timeout` instead. Seconds.
    pub request_timeout: i64,
    /// Longest the public listener waits for a request's head (the request
    /// line and headers), from the moment it starts waiting for one, also
    /// on an idle kept-alive connection; then the connection is closed.
    /// Seconds.
    pub header_read_timeout: i64,
    /// Audit events older than this are removed from the front of the chain
    /// (`audit.retention`), seconds; `None` keeps every event.
    pub audit_retention: Option<i64>,
    /// Resources to apply at start.
    pub resources: Vec<ResourceConfig>,
    /// Clients to apply at start.
    pub clients: Vec<ClientConfig>,
    /// Registration mode.
    pub registration_mode: RegistrationMode,
    /// Hash of the initial access token.
    pub initial_access_token: Option<SecretHash>,
    /// Grants registered clients may have.
    pub registration_grant_types: BTreeSet<GrantType>,
    /// Registrations per minute per client address.
    pub registration_rate_limit: u32,
    /// Registered clients that never complete a flow are removed after this, seconds.
    pub registration_unused_client_ttl: i64,
    /// Accept Client ID Metadata Documents (https URLs as client ids).
    pub client_metadata_documents: bool,
    /// Hosts whose documents may live on private addresses.
    pub client_metadata_allowlist: Vec<String>,
    /// DANGER, tests only: documents over http on loopback.
    pub insecure_allow_http_client_metadata_on_loopback: bool,
    /// The gateway (no routes: no gateway).
    pub gateway: GatewayConfig,
    /// Other trust domains: issuers whose JWTs are accepted, peers grants
    /// are issued for.
    pub trust: mandate_core::trust::Trust,
    /// Sign-in through upstream OpenID Providers.
    pub login: LoginConfig,
}

impl Config {
    /// The SQLite URL in `data_dir`, or the configured database.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("mandate.db").display()
            ),
        }
    }

    /// Reads `file` (if any), then the environment through `env`, then `flags`.
    pub fn load(
        file: Option<&str>,
        flags: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig = match file {
            Some(text) => toml::from_str(text).map_err(|e| {
                let key = e
                    .span()
                    .map(|s| text.get(s).unwrap_or("").to_owned())
                    .unwrap_or_default();
                err(
                    if key.is_empty() { "(file)".into() } else { key },
                    e.message(),
                )
            })?,
            None => RawConfig::default(),
        };
        Self::from_raw(raw, flags, env)
    }

    /// Validates a parsed file with the environment and flags on top.
    pub fn from_raw(
        raw: RawConfig,
        flags: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let pick = |flag: &Option<String>, var: &str, file: Option<String>| {
            flag.clone().or_else(|| env(var)).or(file)
        };
        let listen_raw = pick(&flags.listen, "MANDATE_LISTEN", raw.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_raw.parse().map_err(|_| {
            err(
                "listen",
                format!("{listen_raw:?} is not an address like 127.0.0.1:8080"),
            )
        })?;
        let issuer = pick(&flags.issuer, "MANDATE_ISSUER", raw.issuer)
            .unwrap_or_else(|| format!("http://{listen}"));
        let issuer = check_issuer(&issuer)?;
        let data_dir = PathBuf::from(
            pick(&flags.data_dir, "MANDATE_DATA_DIR", raw.data_dir)
                .unwrap_or_else(|| "./mandate-data".into()),
        );
        let database_url = env("MANDATE_DATABASE_URL").or(raw.database_url);
        if let Some(u) = &database_url {
            if !(u.starts_with("sqlite:")
                || u.starts_with("postgres://")
                || u.starts_with("postgresql://"))
            {
                return Err(err(
                    "database_url",
                    "must be a postgres:// (or sqlite:) URL",
                ));
            }
        }
        let log_format = match env("MANDATE_LOG_FORMAT").or(raw.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(err("log_format", format!("{other:?}: use text or json"))),
        };
        let admin_raw = env("MANDATE_ADMIN_LISTEN")
            .or(raw.admin.listen)
            .unwrap_or_else(|| "127.0.0.1:8081".into());
        let admin_listen: SocketAddr = admin_raw
            .parse()
            .map_err(|_| err("admin.listen", format!("{admin_raw:?} is not an address")))?;
        if admin_listen == listen && listen.port() != 0 {
            return Err(err("admin.listen", "must differ from listen"));
        }

        let t = raw.tokens;
        let access_token_ttl = duration(
            "tokens.access_token_ttl",
            env("MANDATE_ACCESS_TOKEN_TTL").or(t.access_token_ttl),
            15 * 60,
        )?;
        if access_token_ttl > 24 * 3600 {
            return Err(err(
                "tokens.access_token_ttl",
                "at most 24h: access tokens are short-lived",
            ));
        }
        let signing_alg = match env("MANDATE_SIGNING_ALG").or(t.signing_alg) {
            None => SigningAlg::EdDSA,
            Some(s) => s
                .parse()
                .map_err(|e: String| err("tokens.signing_alg", e))?,
        };
        let key_prepublish = duration("tokens.key_prepublish", t.key_prepublish, 10 * 60)?;
        let client_assertion_max_lifetime = duration(
            "tokens.client_assertion_max_lifetime",
            t.client_assertion_max_lifetime,
            5 * 60,
        )?;
        let leeway = duration("tokens.leeway", t.leeway, 30)?;
        let secret_rotation_overlap = duration(
            "tokens.secret_rotation_overlap",
            t.secret_rotation_overlap,
            24 * 3600,
        )?;
        let refresh_token_idle_ttl = duration(
            "tokens.refresh_token_idle_ttl",
            t.refresh_token_idle_ttl,
            14 * 86400,
        )?;
        let refresh_token_absolute_ttl = duration(
            "tokens.refresh_token_absolute_ttl",
            t.refresh_token_absolute_ttl,
            90 * 86400,
        )?;
        if refresh_token_idle_ttl > refresh_token_absolute_ttl {
            return Err(err(
                "tokens.refresh_token_idle_ttl",
                "must not exceed refresh_token_absolute_ttl",
            ));
        }
        let refresh_requires_offline_access =
            match env("MANDATE_REFRESH_REQUIRES_OFFLINE_ACCESS").as_deref() {
                None => t.refresh_requires_offline_access.unwrap_or(false),
                Some("true" | "1") => true,
                Some("false" | "0") => false,
                Some(other) => {
                    return Err(err(
                        "tokens.refresh_requires_offline_access",
                        format!("{other:?}: use true or false"),
                    ))
                }
            };
        let max_delegation_depth = t.max_delegation_depth.unwrap_or(5);
        if !(1..=32).contains(&max_delegation_depth) {
            return Err(err(
                "tokens.max_delegation_depth",
                "must be between 1 and 32",
            ));
        }
        let listener_threads = match raw.listener_threads {
            None => std::thread::available_parallelism().map_or(1, usize::from),
            Some(n @ 1..=MAX_LISTENER_THREADS) => n,
            Some(_) => {
                return Err(err(
                    "listener_threads",
                    format!("must be between 1 and {MAX_LISTENER_THREADS}"),
                ))
            }
        };
        let timeout = |key: &str, value: &Option<String>| {
            let secs = duration(key, value.clone(), 30)?;
            if secs > MAX_REQUEST_TIMEOUT {
                return Err(err(
                    key,
                    format!("must be at most {MAX_REQUEST_TIMEOUT} seconds"),
                ));
            }
            Ok(secs)
        };
        let request_timeout = timeout("limits.request_timeout", &raw.limits.request_timeout)?;
        let header_read_timeout = timeout(
            "limits.header_read_timeout",
            &raw.limits.header_read_timeout,
        )?;
        let audit_retention = match raw.audit.retention {
            None => None,
            Some(v) => match duration("audit.retention", Some(v), 0)? {
                secs if secs < mandate_core::authority::MIN_AUDIT_RETENTION => {
                    return Err(err(
                        "audit.retention",
                        "must be at least one hour: shorter would remove events before anyone could read or export them",
                    ))
                }
                secs => Some(secs),
            },
        };
        let max_body_bytes = raw.limits.max_body_bytes.unwrap_or(64 * 1024);
        if !(1024..=16 * 1024 * 1024).contains(&max_body_bytes) {
            return Err(err(
                "limits.max_body_bytes",
                "must be between 1024 and 16777216",
            ));
        }

        let mut resources = Vec::new();
        for (i, r) in raw.resources.into_iter().enumerate() {
            let key = |k: &str| format!("resources[{i}].{k}");
            let id = ResourceUri::parse(&r.id).map_err(|e| err(key("id"), e))?;
            if resources.iter().any(|x: &ResourceConfig| x.id == id) {
                return Err(err(key("id"), "defined twice"));
            }
            let mut scopes = BTreeMap::new();
            for (name, description) in r.scopes {
                let s = Scope::parse(&name)
                    .map_err(|e| err(key("scopes"), format!("{name:?}: {e}")))?;
                scopes.insert(s, description);
            }
            let ttl = r
                .access_token_ttl
                .map(|d| duration(&key("access_token_ttl"), Some(d), 0))
                .transpose()?;
            if ttl.is_some_and(|t| t > 24 * 3600) {
                return Err(err(
                    key("access_token_ttl"),
                    "at most 24h: access tokens are short-lived",
                ));
            }
            resources.push(ResourceConfig {
                name: r.name.unwrap_or_else(|| id.to_string()),
                id,
                scopes,
                access_token_ttl: ttl,
            });
        }

        let mut clients: Vec<ClientConfig> = Vec::new();
        for (i, c) in raw.clients.into_iter().enumerate() {
            let client = client_config(i, c, &resources, env)?;
            if clients.iter().any(|x| x.client_id == client.client_id) {
                return Err(err(format!("clients[{i}].client_id"), "defined twice"));
            }
            clients.push(client);
        }

        let reg = raw.registration;
        let registration_mode = match env("MANDATE_REGISTRATION_MODE").or(reg.mode).as_deref() {
            None | Some("closed") => RegistrationMode::Closed,
            Some("initial_access_token") => RegistrationMode::InitialAccessToken,
            Some("open") => RegistrationMode::Open,
            Some(other) => {
                return Err(err(
                    "registration.mode",
                    format!("{other:?}: use closed, initial_access_token or open"),
                ))
            }
        };
        let initial_access_token = match registration_mode {
            RegistrationMode::InitialAccessToken => {
                let var = reg
                    .initial_access_token_env
                    .unwrap_or_else(|| "MANDATE_INITIAL_ACCESS_TOKEN".into());
                let token = env(&var).ok_or_else(|| {
                    err(
                        "registration.initial_access_token_env",
                        format!("environment variable {var} is not set"),
                    )
                })?;
                if token.len() < 16 {
                    return Err(err(
                        "registration.initial_access_token_env",
                        "the token must be at least 16 characters",
                    ));
                }
                Some(mandate_types::ClientSecret::new(token).hash())
            }
            _ => None,
        };
        let registration_grant_types = match reg.grant_types {
            Some(list) => grant_types("registration.grant_types", &list)?,
            None => match registration_mode {
                RegistrationMode::Open => {
                    BTreeSet::from([GrantType::AuthorizationCode, GrantType::RefreshToken])
                }
                _ => BTreeSet::from([
                    GrantType::AuthorizationCode,
                    GrantType::RefreshToken,
                    GrantType::ClientCredentials,
                ]),
            },
        };

        let registration_rate_limit = reg.rate_limit.unwrap_or(20);
        let registration_unused_client_ttl = duration(
            "registration.unused_client_ttl",
            reg.unused_client_ttl,
            24 * 3600,
        )?;
        let client_metadata_documents = reg.client_metadata_documents.unwrap_or(true);
        let client_metadata_allowlist = reg.client_metadata_allowlist;
        let insecure_allow_http_client_metadata_on_loopback =
            reg.insecure_allow_http_client_metadata_on_loopback;
        if registration_rate_limit == 0 {
            return Err(err(
                "registration.rate_limit",
                "must be at least 1 per minute",
            ));
        }
        let gateway = gateway::gateway_config(raw.gateway, &issuer)?;
        let trust = trust::trust(raw.trust, &issuer)?;
        let login = login::login(raw.login, env)?;

        Ok(Self {
            registration_rate_limit,
            registration_unused_client_ttl,
            client_metadata_documents,
            client_metadata_allowlist,
            insecure_allow_http_client_metadata_on_loopback,
            gateway,
            trust,
            login,
            issuer,
            listen,
            listener_threads,
            admin_listen,
            data_dir,
            database_url,
            log_format,
            access_token_ttl,
            signing_alg,
            key_prepublish,
            client_assertion_max_lifetime,
            leeway,
            secret_rotation_overlap,
            refresh_token_idle_ttl,
            refresh_token_absolute_ttl,
            refresh_requires_offline_access,
            max_delegation_depth,
            dpop_nonce: t.dpop_nonce.unwrap_or(true),
            max_body_bytes,
            request_timeout,
            header_read_timeout,
            audit_retention,
            resources,
            clients,
            registration_mode,
            initial_access_token,
            registration_grant_types,
        })
    }
}

fn check_issuer(issuer: &str) -> Result<String, ConfigError> {
    let parsed = url::Url::parse(issuer)
        .map_err(|e| err("issuer", format!("{issuer:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(err(
            "issuer",
            "must be an https URL (http only for local use)",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(err(
            "issuer",
            "must not have a query or fragment (RFC 8414 §2)",
        ));
    }
    Ok(issuer.trim_end_matches('/').to_owned())
}

/// Parses "15m", "90s", "1h 30m" into seconds; `default` when absent.
pub(crate) fn duration(key: &str, value: Option<String>, default: i64) -> Result<i64, ConfigError> {
    let Some(v) = value else { return Ok(default) };
    let d = humantime::parse_duration(&v)
        .map_err(|e| err(key, format!("{v:?} is not a duration like \"15m\": {e}")))?;
    let secs = i64::try_from(d.as_secs()).map_err(|_| err(key, "too long"))?;
    if secs == 0 {
        return Err(err(key, "must be at least one second"));
    }
    Ok(secs)
}

fn grant_types(key: &str, list: &[String]) -> Result<BTreeSet<GrantType>, ConfigError> {
    list.iter()
        .map(|g| GrantType::parse(g).ok_or_else(|| err(key, format!("unknown grant type {g:?}"))))
        .collect()
}

fn client_config(
    i: usize,
    c: raw::RawClient,
    resources: &[ResourceConfig],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ClientConfig, ConfigError> {
    let key = |k: &str| format!("clients[{i}].{k}");
    let client_id = ClientId::parse(&c.client_id).map_err(|e| err(key("client_id"), e))?;
    if c.grant_types.is_empty() {
        return Err(err(key("grant_types"), "name at least one grant type"));
    }
    let grant_types = grant_types(&key("grant_types"), &c.grant_types)?;
    let mut scopes = BTreeSet::new();
    for s in &c.scopes {
        scopes.insert(Scope::parse(s).map_err(|e| err(key("scopes"), format!("{s:?}: {e}")))?);
    }
    let resources_allowed = match c.resources {
        None => None,
        Some(list) => {
            let mut set = BTreeSet::new();
            for r in list {
                let uri = ResourceUri::parse(&r).map_err(|e| err(key("resources"), e))?;
                if !resources.iter().any(|x| x.id == uri) {
                    return Err(err(
                        key("resources"),
                        format!("{r} is not a [[resources]] id"),
                    ));
                }
                set.insert(uri);
            }
            Some(set)
        }
    };
    let keys = trust::keys(&key, c.jwks, c.jwks_uri)?;
    let secret_hash = match (c.secret_env, c.secret_sha256) {
        (Some(_), Some(_)) => {
            return Err(err(
                key("secret_env"),
                "give secret_env or secret_sha256, not both",
            ))
        }
        (Some(var), None) => {
            let secret = env(&var).ok_or_else(|| {
                err(
                    key("secret_env"),
                    format!("environment variable {var} is not set"),
                )
            })?;
            if secret.len() < 16 {
                return Err(err(
                    key("secret_env"),
                    format!("the secret in {var} must be at least 16 characters"),
                ));
            }
            Some(mandate_types::ClientSecret::new(secret).hash())
        }
        (None, Some(hex)) => {
            Some(SecretHash::from_hex(&hex).map_err(|e| err(key("secret_sha256"), e))?)
        }
        (None, None) => None,
    };
    let auth_method = match c.token_endpoint_auth_method.as_deref() {
        Some(m) => ClientAuthMethod::parse(m).ok_or_else(|| {
            err(
                key("token_endpoint_auth_method"),
                format!("unknown method {m:?}"),
            )
        })?,
        None if keys.is_some() => ClientAuthMethod::PrivateKeyJwt,
        None if secret_hash.is_some() => ClientAuthMethod::ClientSecretBasic,
        None => ClientAuthMethod::None,
    };
    match auth_method {
        ClientAuthMethod::ClientSecretBasic | ClientAuthMethod::ClientSecretPost
            if secret_hash.is_none() =>
        {
            return Err(err(
                key("secret_env"),
                "a secret method needs secret_env or secret_sha256",
            ))
        }
        ClientAuthMethod::PrivateKeyJwt if keys.is_none() => {
            return Err(err(key("jwks"), "private_key_jwt needs jwks or jwks_uri"))
        }
        ClientAuthMethod::None if grant_types.contains(&GrantType::ClientCredentials) => {
            return Err(err(
                key("grant_types"),
                "client_credentials needs a client that authenticates",
            ))
        }
        _ => {}
    }
    if secret_hash.is_some() && !auth_method.uses_secret() {
        return Err(err(
            key("token_endpoint_auth_method"),
            "a secret is given but the method does not use it",
        ));
    }
    if keys.is_some() && auth_method != ClientAuthMethod::PrivateKeyJwt {
        return Err(err(
            key("token_endpoint_auth_method"),
            "keys are given but the method is not private_key_jwt",
        ));
    }
    // The same rules as the admin API and registration: https or loopback,
    // no fragment.
    for (j, uri) in c.redirect_uris.iter().enumerate() {
        mandate_core::registration::check_redirect_uri(uri)
            .map_err(|e| err(key(&format!("redirect_uris[{j}]")), e.to_string()))?;
    }
    Ok(ClientConfig {
        name: c.name.unwrap_or_else(|| client_id.to_string()),
        client_id,
        grant_types,
        scopes: ScopeSet::from_scopes(scopes),
        resources: resources_allowed,
        auth_method,
        secret_hash,
        keys,
        redirect_uris: c.redirect_uris,
        may_act_for: c.may_act_for,
        require_dpop: c.require_dpop,
    })
}

#[cfg(test)]
mod tests;

//! Mandate's HTTP surface: the public OAuth listener and the admin listener,
//! assembled from the configuration by [`start`].
//!
//! Handlers are thin (extract, one core call, map); the one mapping from core
//! errors to OAuth responses is [`errors`]. Tests call [`start`] with port 0
//! and a controllable clock, and drive the server over real HTTP.

pub mod admin;
pub mod bootstrap;
pub mod browser;
pub mod errors;
pub mod extract;
pub mod fetch;
pub mod gateway;
mod listener;
pub mod oauth;
pub mod ops;
pub mod pages;
pub mod state;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use mandate_config::Config;
use mandate_core::audit::AuditLog;
use mandate_core::keyring::{Keyring, KeyringSettings, Keyrings};
use mandate_core::model::{Client, ClientOrigin, KeyPurpose, StoredSecret};
use mandate_core::registration::RegistrationPolicy;
use mandate_core::{Authority, Settings, Store};
use mandate_store::SqlStore;
use mandate_types::{ClientSecret, Clock};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::AppState;

/// How often each replica re-reads signing keys from the store.
const KEY_RELOAD_EVERY: Duration = Duration::from_secs(30);
/// How long a replica may serve a client or resource changed by another replica.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// How often expired single-use values and revocations are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Data directory, master key or admin token.
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    /// The database.
    #[error("database: {0}")]
    Store(#[from] mandate_core::StoreError),
    /// Keys, configuration clients or resources.
    #[error("{error}{}", error.log_detail().map(|d| format!(": {d}")).unwrap_or_default())]
    Core {
        /// The cause.
        #[from]
        error: mandate_core::Error,
    },
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The HTTP client for outbound fetches.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    /// The gateway's routes (an upstream's CA file, say).
    #[error("{0}")]
    Gateway(String),
    /// The public listener's threads.
    #[error("cannot start the listener threads: {0}")]
    Threads(std::io::Error),
}

/// A running server.
pub struct RunningServer {
    /// Where the public listener is bound.
    pub public_addr: SocketAddr,
    /// Where the admin listener is bound.
    pub admin_addr: SocketAddr,
    /// The admin API token.
    pub admin_token: String,
    /// The engine, for tests that want to look inside.
    pub authority: Arc<Authority>,
    stop: watch::Sender<bool>,
    public: listener::PublicListener,
    tasks: Vec<JoinHandle<()>>,
    audit_writer: JoinHandle<()>,
    store: Arc<SqlStore>,
}

impl RunningServer {
    /// Stops accepting connections, finishes in-flight requests, flushes the
    /// audit trail and closes the database.
    pub async fn shutdown(self) {
        let RunningServer {
            authority,
            stop,
            mut public,
            tasks,
            audit_writer,
            store,
            ..
        } = self;
        let _ = stop.send(true);
        let _ = (&mut public.stopped).await;
        for t in tasks {
            let _ = t.await;
        }
        // The writer ends once the last handle to the audit log is gone.
        drop(authority);
        let _ = tokio::time::timeout(Duration::from_secs(10), audit_writer).await;
        store.close().await;
        public.release().await;
    }
}

/// Builds everything from `config` and starts both listeners.
pub async fn start(
    config: &Config,
    clock: Arc<dyn Clock>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RunningServer, StartError> {
    bootstrap::ensure_data_dir(&config.data_dir)?;
    let master_bytes = bootstrap::master_key(&config.data_dir, env("MANDATE_MASTER_KEY"))?;
    let master = mandate_jose::MasterKey::from_bytes(&master_bytes);
    // Replicas share the master key, so they agree on DPoP nonces too.
    let dpop_nonce_key = mandate_core::dpop::derive_nonce_key(&master_bytes);
    let admin_token = bootstrap::admin_token(&config.data_dir, env("MANDATE_ADMIN_TOKEN"))?;
    let store = Arc::new(SqlStore::connect(&config.effective_database_url()).await?);
    match store.encrypted().await {
        Ok(Some(true)) => tracing::info!("connected to PostgreSQL over TLS"),
        Ok(Some(false)) => tracing::warn!(
            "the connection to PostgreSQL is not encrypted: add sslmode=verify-full \
             (and sslrootcert=<CA file> for a private CA) to database_url"
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not tell whether the PostgreSQL connection is encrypted")
        }
    }
    // Clients and resources are cached for the hot path; see mandate_core::cache.
    let dyn_store: Arc<dyn Store> = Arc::new(mandate_core::cache::CachedStore::new(
        store.clone(),
        CACHE_TTL,
    ));

    let keyring = Keyring::open(
        Arc::clone(&dyn_store),
        Arc::clone(&clock),
        master,
        KeyringSettings {
            alg: config.signing_alg,
            prepublish: config.key_prepublish,
            retire_after: mandate_core::admin::MAX_ACCESS_TOKEN_TTL + config.leeway,
            purpose: KeyPurpose::Jws,
        },
    )
    .await
    .map_err(|e| match e {
        mandate_core::Error::Keys(d) if d.contains("master key") => mandate_core::Error::Keys(
            format!("{d}. Every replica must use the same MANDATE_MASTER_KEY").into(),
        ),
        other => other,
    })?;
    let keyring = Arc::new(keyring);
    // Biscuit root keys: Ed25519, on the same life cycle as the JWS keys.
    let biscuit_keyring = Arc::new(
        Keyring::open(
            Arc::clone(&dyn_store),
            Arc::clone(&clock),
            mandate_jose::MasterKey::from_bytes(&master_bytes),
            KeyringSettings {
                alg: mandate_jose::SigningAlg::EdDSA,
                purpose: KeyPurpose::Biscuit,
                ..*keyring.settings()
            },
        )
        .await?,
    );
    let (audit, audit_writer) = AuditLog::start(Arc::clone(&dyn_store));
    let settings = Settings {
        issuer: config.issuer.clone(),
        access_token_ttl: config.access_token_ttl,
        max_assertion_lifetime: config.client_assertion_max_lifetime,
        leeway: config.leeway,
        max_delegation_depth: config.max_delegation_depth,
        dpop_nonce_key,
        dpop_nonce_required: config.dpop_nonce,
        refresh_idle_ttl: config.refresh_token_idle_ttl,
        refresh_absolute_ttl: config.refresh_token_absolute_ttl,
        refresh_requires_offline_access: config.refresh_requires_offline_access,
        trust: config.trust.clone(),
        registration: RegistrationPolicy {
            mode: config.registration_mode,
            initial_access_token: config.initial_access_token.clone(),
            allowed_grant_types: config.registration_grant_types.clone(),
            unused_client_ttl: config.registration_unused_client_ttl,
        },
    };
    let authority = Arc::new(Authority::new(
        settings,
        Arc::clone(&dyn_store),
        Arc::clone(&clock),
        Keyrings {
            jws: Arc::clone(&keyring),
            biscuit: Arc::clone(&biscuit_keyring),
        },
        audit,
        Arc::new(fetch::HttpJwksFetcher::new()?),
        if config.client_metadata_documents {
            if config.insecure_allow_http_client_metadata_on_loopback {
                tracing::warn!("DANGER: client metadata documents over http on loopback are accepted (registration.insecure_allow_http_client_metadata_on_loopback)");
            }
            Arc::new(fetch::HttpClientDocuments::new(
                config.client_metadata_allowlist.clone(),
                config.insecure_allow_http_client_metadata_on_loopback,
            ))
        } else {
            Arc::new(mandate_core::documents::NoClientDocuments)
        },
    ));
    apply_config(&authority, config).await?;
    let revocations = Arc::new(gateway::StoreRevocations::default());
    revocations.refresh(dyn_store.as_ref(), clock.now()).await;
    let gateway = gateway::build(
        config,
        Arc::clone(&dyn_store),
        Keyrings {
            jws: Arc::clone(&keyring),
            biscuit: Arc::clone(&biscuit_keyring),
        },
        authority.audit().clone(),
        Arc::clone(&clock),
        Arc::clone(&revocations),
        Some(Arc::new(gateway::AuthorityNonces(Arc::clone(&authority)))),
    )?;

    let state = AppState::new(state::Shared {
        authority: Arc::clone(&authority),
        store: Arc::clone(&store),
        metrics: Arc::new(ops::Metrics::new()),
        admin_token: Arc::new(ClientSecret::new(admin_token.clone()).hash()),
        secret_rotation_overlap: config.secret_rotation_overlap,
        registration_limiter: Arc::new(mandate_gateway::RateLimiter::new(
            config.registration_rate_limit,
        )),
        gateway,
        upstream: Arc::new(upstream_logins(config)),
    });
    // The request timeout covers the server's own routes, not the gateway's
    // fallback, whose routes have their own upstream timeouts.
    let timeout = tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        Duration::from_secs(config.request_timeout.unsigned_abs()),
    );
    let public = with_common_layers(
        oauth::router().route_layer(timeout),
        &state,
        config.max_body_bytes,
    );
    let admin = with_common_layers(
        admin::router(state.clone()).route_layer(timeout),
        &state,
        config.max_body_bytes,
    );

    let (stop, stopped) = watch::channel(false);
    let header_read_timeout = Duration::from_secs(config.header_read_timeout.unsigned_abs());
    let public = listener::PublicListener::start(
        config.listen,
        listener::App {
            router: public,
            gateway: state.gateway.clone(),
        },
        listener::ConnectionLimits {
            threads: config.listener_threads,
            header_read_timeout,
        },
        stopped.clone(),
    )?;
    let (admin_addr, admin_task) = serve_admin(
        config.admin_listen,
        admin,
        header_read_timeout,
        stopped.clone(),
    )
    .await?;
    let tasks = vec![
        admin_task,
        tokio::spawn(housekeeping(
            Arc::clone(&authority),
            config.audit_retention,
            stopped.clone(),
        )),
        tokio::spawn(refresh_revocations(
            Arc::clone(&authority),
            revocations,
            Duration::from_secs(config.gateway.revocation_refresh.unsigned_abs()),
            stopped,
        )),
    ];
    Ok(RunningServer {
        public_addr: public.addr,
        admin_addr,
        admin_token,
        authority,
        stop,
        public,
        tasks,
        audit_writer,
        store,
    })
}

/// The `[[login.oidc]]` providers with their HTTP fetcher.
fn upstream_logins(config: &Config) -> mandate_core::upstream_login::UpstreamLogins {
    let login = &config.login;
    if login.insecure_allow_http_oidc_on_loopback {
        tracing::warn!("DANGER: upstream OpenID Providers over http on loopback are accepted (login.insecure_allow_http_oidc_on_loopback)");
    }
    let urls = login.oidc.iter().flat_map(|p| {
        [
            Some(p.issuer.as_str()),
            p.authorization_endpoint.as_deref(),
            p.token_endpoint.as_deref(),
            p.jwks_uri.as_deref(),
        ]
        .into_iter()
        .flatten()
    });
    let fetcher = fetch::HttpOidcFetcher::new(urls, login.insecure_allow_http_oidc_on_loopback);
    mandate_core::upstream_login::UpstreamLogins::new(login.oidc.clone(), Arc::new(fetcher))
}

fn with_common_layers(router: Router<AppState>, state: &AppState, max_body: usize) -> Router {
    router
        // Routes only: the gateway's fallback has its own per-route metrics.
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.metrics),
            ops::observe,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state.clone())
}

/// The admin listener, on the process's runtime: it serves operators, not agents,
/// so it needs none of the public listener's threads (see `listener`), but the
/// same connection handling, header-read timeout included: a client that
/// opens connections and never finishes a request head must not hold them.
async fn serve_admin(
    addr: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    stopped: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), StartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let app = listener::App {
        router: app,
        gateway: None,
    };
    let http = listener::http1_server(header_read_timeout);
    let task = tokio::spawn(listener::accept_until_stopped(
        listener, None, app, http, stopped,
    ));
    Ok((bound, task))
}

async fn housekeeping(
    authority: Arc<Authority>,
    audit_retention: Option<i64>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut reload = tokio::time::interval(KEY_RELOAD_EVERY);
    // The first purge comes one period after start, not at once: nothing is
    // due that cannot wait, and a purge at an unpredictable moment of
    // start-up once raced a test that moved its clock past a client's TTL.
    let mut purge =
        tokio::time::interval_at(tokio::time::Instant::now() + PURGE_EVERY, PURGE_EVERY);
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = reload.tick() => {
                for keyring in [authority.keys(), authority.biscuit_keys()] {
                    if let Err(e) = keyring.reload().await {
                        tracing::error!(error = %e, "reloading signing keys failed");
                    }
                }
            }
            _ = purge.tick() => {
                if let Err(e) = authority.purge_unused_clients().await {
                    tracing::warn!(error = %e, "purging unused registered clients failed");
                }
                match authority.store().purge_expired(authority.clock().now()).await {
                    Ok(n) if n > 0 => tracing::debug!(purged = n, "purged expired replay and revocation entries"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "purge failed"),
                }
                if let Some(keep) = audit_retention {
                    match authority.prune_audit(keep).await {
                        Ok((n, anchor)) if n > 0 => tracing::info!(removed = n, anchor = anchor.seq, "audit retention removed old events"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "audit retention failed"),
                    }
                }
            }
        }
    }
}

/// Keeps the gateway's view of revocations fresh.
async fn refresh_revocations(
    authority: Arc<Authority>,
    revocations: Arc<gateway::StoreRevocations>,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tick.tick() => {
                revocations
                    .refresh(authority.store().as_ref(), authority.clock().now())
                    .await;
            }
        }
    }
}

/// Applies `[[resources]]` and `[[clients]]`: the file is the truth for
/// what came from it, so entries removed from the file are removed here.
async fn apply_config(authority: &Authority, config: &Config) -> Result<(), StartError> {
    let store = authority.store();
    let file_resources: BTreeSet<_> = config.resources.iter().map(|r| r.id.clone()).collect();
    for r in store.list_resources().await? {
        if r.from_config && !file_resources.contains(&r.id) {
            store.delete_resource(&r.id).await?;
        }
    }
    for r in &config.resources {
        authority
            .put_resource(
                mandate_core::admin::NewResource {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    scopes: r.scopes.clone(),
                    access_token_ttl: r.access_token_ttl,
                },
                true,
            )
            .await?;
    }
    let file_clients: BTreeSet<_> = config.clients.iter().map(|c| c.client_id.clone()).collect();
    for c in store.list_clients().await? {
        if c.origin == ClientOrigin::Config && !file_clients.contains(&c.client_id) {
            store.delete_client(&c.client_id).await?;
        }
    }
    for c in &config.clients {
        let existing = store.get_client(&c.client_id).await?;
        if existing
            .as_ref()
            .is_some_and(|e| e.origin != ClientOrigin::Config)
        {
            tracing::warn!(client_id = %c.client_id, "a client created at run time has this id; the configuration file replaces it");
        }
        let client = Client {
            client_id: c.client_id.clone(),
            name: c.name.clone(),
            grant_types: c.grant_types.clone(),
            scopes: c.scopes.clone(),
            resources: c.resources.clone(),
            auth_method: c.auth_method,
            secrets: c
                .secret_hash
                .iter()
                .map(|h| StoredSecret {
                    hash: h.clone(),
                    expires_at: None,
                })
                .collect(),
            keys: c.keys.clone(),
            redirect_uris: c.redirect_uris.clone(),
            may_act_for: c.may_act_for.clone(),
            require_dpop: c.require_dpop,
            origin: ClientOrigin::Config,
            registration_token: None,
            activated_at: None,
            created_at: existing.map_or_else(|| authority.clock().now(), |e| e.created_at),
        };
        store.put_client(&client).await?;
    }
    Ok(())
}

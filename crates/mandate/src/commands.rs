//! What each command does.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mandate_audit::{Anchor, ChainVerifier, Event};
use mandate_config::{Config, LogFormat, Overrides};
use mandate_types::{Clock as _, SystemClock};
use serde_json::{json, Value};

use crate::cli::{
    AuditCommand, Cli, ClientCommand, Command, KeysCommand, ResourceCommand, TokenArgs,
    TokenOffline, UserCommand,
};

type Result<T> = std::result::Result<T, String>;

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn load_config(cli: &Cli, listen: Option<String>, issuer: Option<String>) -> Result<Config> {
    let text = match &cli.global.config {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let flags = Overrides {
        listen,
        issuer,
        data_dir: cli.global.data_dir.clone(),
    };
    Config::load(text.as_deref(), &flags, &env).map_err(|e| e.to_string())
}

pub(crate) async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Serve(args) => {
            let config = load_config(&cli, args.listen.clone(), args.issuer.clone())?;
            let format = match args.log_format.as_deref() {
                Some("json") => LogFormat::Json,
                Some("text") => LogFormat::Text,
                Some(other) => return Err(format!("--log-format {other:?}: use text or json")),
                None => config.log_format,
            };
            init_logging(format);
            serve(config).await
        }
        Command::Token(TokenArgs {
            offline: Some(offline),
            ..
        }) => token_offline(offline),
        Command::Token(args) => {
            let config = load_config(&cli, None, None)?;
            token(&config, args).await
        }
        Command::Demo => {
            print!("{}", crate::demo::render(&crate::demo::run().await?));
            Ok(())
        }
        other => {
            let config = load_config(&cli, None, None)?;
            let admin = Admin::new(&cli, &config)?;
            match other {
                Command::Client(c) => client(&admin, c, &config).await,
                Command::Resource(c) => resource(&admin, c).await,
                Command::User(c) => user(&admin, c).await,
                Command::Keys(KeysCommand::List) => print(admin.get("/admin/keys").await?),
                Command::Keys(KeysCommand::Rotate { biscuit }) => print(
                    admin
                        .send(
                            reqwest::Method::POST,
                            if *biscuit {
                                "/admin/keys/rotate?purpose=biscuit"
                            } else {
                                "/admin/keys/rotate"
                            },
                            None,
                        )
                        .await?,
                ),
                Command::Audit(AuditCommand::Verify) => audit_verify(&admin).await,
                Command::Audit(AuditCommand::Prune { older_than }) => print(
                    admin
                        .send(
                            reqwest::Method::POST,
                            "/admin/audit/prune",
                            Some(json!({ "older_than_secs": seconds(older_than)? })),
                        )
                        .await?,
                ),
                Command::Audit(AuditCommand::Chain { jti }) => audit_chain(&admin, jti).await,
                Command::Audit(AuditCommand::Tail { lines, once }) => {
                    audit_tail(&admin, *lines, *once).await
                }
                Command::Serve(_) | Command::Token(_) | Command::Demo => Ok(()),
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config: Config) -> Result<()> {
    let server = mandate_server::start(&config, Arc::new(SystemClock), &env)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "Mandate is listening on http://{} (issuer {})\n\
         Admin API on http://{}; state in {}{}\n\
         Next: create a resource and a client, then fetch a token:\n  \
         mandate resource create --id https://api.example.com --scope read\n  \
         mandate client create --name demo --grant-type client_credentials --scope read\n  \
         MANDATE_CLIENT_SECRET=... mandate token --client-id ... --resource https://api.example.com",
        server.public_addr,
        config.issuer,
        server.admin_addr,
        config.data_dir.display(),
        if config.effective_database_url().starts_with("postgres") {
            " (database: PostgreSQL)"
        } else {
            " (database: SQLite)"
        },
    );
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn print(v: Value) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// A client of the admin API.
struct Admin {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Admin {
    fn new(cli: &Cli, config: &Config) -> Result<Self> {
        let base = cli
            .global
            .admin_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.admin_listen));
        let token = match env("MANDATE_ADMIN_TOKEN") {
            Some(t) => t,
            None => {
                let path = config
                    .data_dir
                    .join(mandate_server::bootstrap::ADMIN_TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_owned())
                    .map_err(|e| {
                        format!(
                            "no admin token: set MANDATE_ADMIN_TOKEN or point --data-dir at the server's data ({}: {e})",
                            path.display()
                        )
                    })?
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("cannot reach the admin API at {}: {e}", self.base))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        let value: Value = if text.is_empty() {
            json!({"status": status.as_u16()})
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!(
                "{status}: {}",
                value
                    .get("error_description")
                    .and_then(Value::as_str)
                    .map_or_else(|| value.to_string(), str::to_owned)
            ))
        }
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.send(reqwest::Method::GET, path, None).await
    }
}

fn seconds(d: &str) -> Result<i64> {
    humantime::parse_duration(d)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .ok_or_else(|| format!("{d:?} is not a duration like \"15m\""))
}

/// Form-urlencodes a path segment, a query value, or (RFC 6749 §2.3.1) a
/// Basic credential: every byte but `A-Za-z0-9-._*` is escaped.
fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn client(admin: &Admin, c: &ClientCommand, _config: &Config) -> Result<()> {
    match c {
        ClientCommand::Create {
            name,
            grant_types,
            scope,
            resources,
            jwks,
            jwks_uri,
            client_id,
            auth_method,
        } => {
            let jwks: Option<Value> = match jwks {
                Some(path) => Some(read_json(path)?),
                None => None,
            };
            let body = json!({
                "client_id": client_id,
                "name": name,
                "grant_types": grant_types,
                "scopes": scope,
                "resources": (!resources.is_empty()).then_some(resources),
                "token_endpoint_auth_method": auth_method,
                "jwks": jwks,
                "jwks_uri": jwks_uri,
            });
            print(
                admin
                    .send(reqwest::Method::POST, "/admin/clients", Some(body))
                    .await?,
            )
        }
        ClientCommand::List => print(admin.get("/admin/clients").await?),
        ClientCommand::Show { client_id } => print(
            admin
                .get(&format!("/admin/clients/{}", form_encode(client_id)))
                .await?,
        ),
        ClientCommand::RotateSecret { client_id, overlap } => {
            let body = match overlap {
                Some(o) => json!({ "overlap_seconds": seconds(o)? }),
                None => json!({}),
            };
            let path = format!("/admin/clients/{}/rotate-secret", form_encode(client_id));
            print(admin.send(reqwest::Method::POST, &path, Some(body)).await?)
        }
        ClientCommand::Delete { client_id } => {
            let path = format!("/admin/clients/{}", form_encode(client_id));
            admin.send(reqwest::Method::DELETE, &path, None).await?;
            println!("deleted client {client_id}");
            Ok(())
        }
    }
}

/// A password from the named environment variable, or the first line of
/// standard input; never from the command line, where `ps` would show it.
fn read_password(env_name: Option<&str>) -> Result<String> {
    if let Some(name) = env_name {
        return std::env::var(name).map_err(|_| format!("environment variable {name} is not set"));
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("reading the password from standard input: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn user(admin: &Admin, c: &UserCommand) -> Result<()> {
    match c {
        UserCommand::Create {
            username,
            password_env,
        } => {
            let password = read_password(password_env.as_deref())?;
            let body = json!({"username": username, "password": password});
            print(
                admin
                    .send(reqwest::Method::POST, "/admin/users", Some(body))
                    .await?,
            )
        }
        UserCommand::List => print(admin.get("/admin/users").await?),
        UserCommand::Disable { username } | UserCommand::Enable { username } => {
            let action = if matches!(c, UserCommand::Disable { .. }) {
                "disable"
            } else {
                "enable"
            };
            let path = format!("/admin/users/{}/{action}", form_encode(username));
            admin.send(reqwest::Method::POST, &path, None).await?;
            println!("{action}d user {username}");
            Ok(())
        }
        UserCommand::SetPassword {
            username,
            password_env,
        } => {
            let password = read_password(password_env.as_deref())?;
            let path = format!("/admin/users/{}/password", form_encode(username));
            admin
                .send(
                    reqwest::Method::POST,
                    &path,
                    Some(json!({"password": password})),
                )
                .await?;
            println!("password set for {username}");
            Ok(())
        }
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

async fn resource(admin: &Admin, c: &ResourceCommand) -> Result<()> {
    match c {
        ResourceCommand::Create {
            id,
            name,
            scopes,
            access_token_ttl,
        } => {
            let scopes: serde_json::Map<String, Value> = scopes
                .iter()
                .map(|s| match s.split_once('=') {
                    Some((n, d)) => (n.to_owned(), json!(d)),
                    None => (s.clone(), json!("")),
                })
                .collect();
            let ttl = access_token_ttl.as_deref().map(seconds).transpose()?;
            let body = json!({
                "id": id,
                "name": name.clone().unwrap_or_else(|| id.clone()),
                "scopes": scopes,
                "access_token_ttl": ttl,
            });
            print(
                admin
                    .send(reqwest::Method::POST, "/admin/resources", Some(body))
                    .await?,
            )
        }
        ResourceCommand::List => print(admin.get("/admin/resources").await?),
        ResourceCommand::Delete { id } => {
            let path = format!("/admin/resources?id={}", form_encode(id));
            admin.send(reqwest::Method::DELETE, &path, None).await?;
            println!("deleted resource {id}");
            Ok(())
        }
    }
}

async fn audit_page(admin: &Admin, after: i64, limit: i64) -> Result<Vec<Event>> {
    let v = admin
        .get(&format!("/admin/audit?after={after}&limit={limit}"))
        .await?;
    serde_json::from_value(v).map_err(|e| format!("unexpected audit page: {e}"))
}

/// Pulls every event and checks the chain here, not trusting the server's
/// word; from the anchor retention left, when it removed events.
async fn audit_verify(admin: &Admin) -> Result<()> {
    let anchor: Anchor = serde_json::from_value(admin.get("/admin/audit/anchor").await?)
        .map_err(|e| format!("unexpected audit anchor: {e}"))?;
    let mut verifier = ChainVerifier::from_anchor(&anchor);
    loop {
        let page = audit_page(admin, verifier.checked(), 5000).await?;
        if page.is_empty() {
            break;
        }
        for event in &page {
            if let Err(broken) = verifier.push(event) {
                return Err(format!(
                    "audit chain BROKEN at event {}: {}",
                    broken.seq, broken.problem
                ));
            }
        }
    }
    println!(
        "audit chain intact: {} events, head {}",
        verifier.checked(),
        verifier.head_hash()
    );
    if anchor.seq > 0 {
        println!(
            "events 1 to {} were removed by retention; checked from there (hash {})",
            anchor.seq, anchor.hash
        );
    }
    Ok(())
}

/// Every issued or exchanged token's event, with the jti it came from.
async fn token_events(admin: &Admin) -> Result<Vec<(Event, Option<String>)>> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = audit_page(admin, after, 5000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in page {
            if e.event.kind != "token.issued" && e.event.kind != "token.exchanged" {
                continue;
            }
            let parent = e
                .event
                .reason
                .as_deref()
                .and_then(|r| r.split("exchanged from jti ").nth(1))
                .map(str::to_owned);
            out.push((e, parent));
        }
    }
    Ok(out)
}

fn describe(e: &Event) -> String {
    let when = e.event.time_ms / 1000;
    format!(
        "{} [{}] for {} by client {} on {} scope \"{}\" at {}{}",
        e.event.jti.as_deref().unwrap_or("?"),
        e.event.kind,
        e.event.subject.as_deref().unwrap_or("?"),
        e.event.client_id.as_deref().unwrap_or("?"),
        e.event.audience.as_deref().unwrap_or("?"),
        e.event.scopes.as_deref().unwrap_or(""),
        when,
        e.event
            .reason
            .as_deref()
            .and_then(|r| r.strip_prefix("acting chain: "))
            .and_then(|r| r.split(';').next())
            .map(|c| format!(" (acting: {c})"))
            .unwrap_or_default(),
    )
}

/// Prints the ancestors of `jti`, then its descendants as a tree.
async fn audit_chain(admin: &Admin, jti: &str) -> Result<()> {
    let events = token_events(admin).await?;
    let by_jti = |j: &str| {
        events
            .iter()
            .find(|(e, _)| e.event.jti.as_deref() == Some(j))
    };
    let Some(start) = by_jti(jti) else {
        return Err(format!("no issued token with jti {jti} in the audit trail"));
    };
    let mut ancestors = Vec::new();
    let mut parent = start.1.clone();
    while let Some(p) = parent.filter(|p| p != "-") {
        match by_jti(&p) {
            Some(found) if ancestors.len() < 64 => {
                ancestors.push(found);
                parent = found.1.clone();
            }
            _ => break,
        }
    }
    for (depth, (e, _)) in ancestors.iter().rev().enumerate() {
        println!("{}{}", "  ".repeat(depth), describe(e));
    }
    let base = ancestors.len();
    let mut stack = vec![(start, base)];
    while let Some(((e, _), depth)) = stack.pop() {
        let marker = if e.event.jti.as_deref() == Some(jti) {
            "> "
        } else {
            ""
        };
        println!("{}{marker}{}", "  ".repeat(depth), describe(e));
        for child in events
            .iter()
            .filter(|(_, p)| p.as_deref() == e.event.jti.as_deref())
        {
            if depth < 64 {
                stack.push((child, depth + 1));
            }
        }
    }
    Ok(())
}

async fn audit_tail(admin: &Admin, lines: i64, once: bool) -> Result<()> {
    // Find the end, then print the last `lines` events and follow.
    let mut last = 0;
    loop {
        let page = audit_page(admin, last, 10_000).await?;
        match page.last() {
            Some(e) => last = e.seq,
            None => break,
        }
    }
    let mut after = (last - lines).max(0);
    loop {
        for event in audit_page(admin, after, 1000).await? {
            println!(
                "{}",
                serde_json::to_string(&event).map_err(|e| e.to_string())?
            );
            after = event.seq;
        }
        if once {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `mandate token attenuate|inspect`: offline, no configuration needed.
fn token_offline(command: &TokenOffline) -> Result<()> {
    let read = |t: &str| -> Result<String> {
        if t != "-" {
            return Ok(t.trim().to_owned());
        }
        let mut s = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(std::io::stdin(), 64 * 1024),
            &mut s,
        )
        .map_err(|e| e.to_string())?;
        Ok(s.trim().to_owned())
    };
    match command {
        TokenOffline::Inspect { token } => {
            for (i, block) in mandate_biscuit::inspect(&read(token)?)
                .map_err(|e| e.to_string())?
                .iter()
                .enumerate()
            {
                let name = if i == 0 { "authority" } else { "attenuation" };
                println!("// block {i} ({name})\n{}\n", block.trim_end());
            }
            Ok(())
        }
        TokenOffline::Attenuate {
            token,
            tools,
            scope,
            resource,
            expires,
            check,
            seal,
        } => {
            let not_after = expires.as_deref().map(parse_expiry).transpose()?;
            let attenuation = mandate_biscuit::Attenuation {
                scopes: scope
                    .as_deref()
                    .map(mandate_types::ScopeSet::parse)
                    .transpose()
                    .map_err(|e| format!("--scope: {e}"))?,
                resource: resource.clone(),
                tools: tools.clone(),
                not_after,
                datalog: check.clone(),
                seal: *seal,
            };
            let narrowed = mandate_biscuit::attenuate(&read(token)?, &attenuation)
                .map_err(|e| e.to_string())?;
            println!("{narrowed}");
            Ok(())
        }
    }
}

/// RFC 3339, or a duration from now.
fn parse_expiry(raw: &str) -> Result<i64> {
    let at = match humantime::parse_rfc3339_weak(raw) {
        Ok(t) => t,
        Err(_) => {
            let d = humantime::parse_duration(raw)
                .map_err(|_| format!("--expires {raw}: neither RFC 3339 nor a duration"))?;
            std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(SystemClock.now().unsigned_abs())
                + d
        }
    };
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    i64::try_from(secs).map_err(|e| e.to_string())
}

async fn token(config: &Config, args: &TokenArgs) -> Result<()> {
    let (Some(client_id), Some(client_secret)) = (&args.client_id, &args.client_secret) else {
        return Err("--client-id and --client-secret are required".into());
    };
    let url = args
        .token_url
        .clone()
        .unwrap_or_else(|| format!("{}/token", config.issuer));
    let mut form = vec![("grant_type", "client_credentials".to_owned())];
    if let Some(r) = &args.resource {
        form.push(("resource", r.clone()));
    }
    if let Some(s) = &args.scope {
        form.push(("scope", s.clone()));
    }
    let response = reqwest::Client::new()
        .post(&url)
        .basic_auth(form_encode(client_id), Some(form_encode(client_secret)))
        .form(&form)
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {body}"));
    }
    print(body)
}

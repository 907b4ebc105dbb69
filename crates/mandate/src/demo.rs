//! `mandate demo`: the whole idea in one command, with nothing to set up.
//!
//! It starts, in this process, Mandate (SQLite in a temporary directory,
//! fresh keys, loopback ports) with its gateway in front of three small
//! agents, and runs one task through them:
//!
//! ```text
//! you ──► orchestrator ──hop 1──► research-agent ──hop 2──► payment-agent ──hop 3──► (ledger)
//!          client_credentials      token exchange           token exchange: REFUSED
//!          DPoP-bound              narrower, DPoP-bound     asks for more than it holds
//! ```
//!
//! Every agent uses the SDK (`mandate-client`) exactly as a real one would:
//! the orchestrator authenticates with `private_key_jwt` and binds its token
//! to a DPoP key; the research agent acts for the orchestrator with a token
//! exchanged from the one it received, narrower in scope and for another
//! audience; the payment agent then asks for a scope it was not handed and
//! Mandate refuses. The gateway checks each call (audience, scope, proof of
//! possession) and passes the verified identity on.
//!
//! [`run`] returns a [`DemoReport`] (the hops as the agents saw them, the
//! refusal, the audit trail and its verification), so that the integration
//! test asserts on data; [`render`] turns it into what the command prints.
//!
//! The orchestrator's own route is public in the demo: a person would
//! normally reach it through the sign-in and consent flow, which needs a
//! browser.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use mandate_audit::{ChainVerifier, Event};
use mandate_client::{
    AuthorizedClient, ClientCredentials, DpopKey, Endpoint, Exchange, TokenSource,
};
use mandate_config::{Config, Overrides};
use mandate_core::token::{AccessTokenClaims, Actor};
use mandate_jose::{PrivateKeyDer, SigningAlg, SigningKey, UnverifiedJwt};
use mandate_types::{ClientSecret, Clock, SystemClock};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The orchestrator's audience.
pub(crate) const ORCHESTRATOR: &str = "https://agents.example/orchestrator";
/// The research agent's audience.
pub(crate) const RESEARCH: &str = "https://agents.example/research";
/// The payment agent's audience.
pub(crate) const PAYMENT: &str = "https://agents.example/payment";
/// The bank's ledger: an audience with no agent behind it in the demo.
pub(crate) const LEDGER: &str = "https://agents.example/ledger";
/// What the orchestrator asks for, for the research agent.
pub(crate) const HOP1_SCOPE: &str = "research:read payments:quote payments:pay";
/// What the research agent hands on to the payment agent.
pub(crate) const HOP2_SCOPE: &str = "payments:quote";
/// What the payment agent asks for, and was not given.
pub(crate) const HOP3_SCOPE: &str = "payments:pay";

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The longest the task may take before the demo gives up.
const TASK_TIMEOUT: Duration = Duration::from_secs(30);

/// A token as the agent that received it saw it (after the gateway checked
/// it: signature, audience, scope, proof of possession).
#[derive(Debug, Clone)]
pub(crate) struct TokenView {
    /// `Bearer` or `DPoP`.
    pub(crate) scheme: String,
    /// The principal the chain acts for.
    pub(crate) sub: String,
    /// The client that holds the token.
    pub(crate) client_id: String,
    /// The audience.
    pub(crate) aud: String,
    /// The scopes, as granted.
    pub(crate) scope: String,
    /// The `act` chain, current actor first.
    pub(crate) act: Vec<String>,
    /// The DPoP key thumbprint it is bound to.
    pub(crate) jkt: Option<String>,
    /// Token id, as the audit trail names it.
    pub(crate) jti: String,
    /// Expiry.
    pub(crate) exp: i64,
}

impl TokenView {
    /// The scopes, one by one.
    pub(crate) fn scopes(&self) -> Vec<&str> {
        self.scope.split(' ').filter(|s| !s.is_empty()).collect()
    }
}

/// One call from an agent to another through the gateway.
#[derive(Debug, Clone)]
pub(crate) struct Hop {
    /// The calling client.
    pub(crate) from: String,
    /// The agent called.
    pub(crate) to: String,
    /// Method and path at the gateway.
    pub(crate) call: String,
    /// The status the caller got.
    pub(crate) status: Option<u16>,
    /// The token the call carried.
    pub(crate) token: TokenView,
}

/// The last hop: what was asked and why it was refused.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    /// Who asked.
    pub(crate) agent: String,
    /// For which audience.
    pub(crate) resource: String,
    /// Which scope.
    pub(crate) asked_scope: String,
    /// What its token held.
    pub(crate) held_scope: String,
    /// The OAuth `error` code.
    pub(crate) error: String,
    /// The server's `error_description`.
    pub(crate) description: Option<String>,
}

/// The result of verifying the hash chain.
#[derive(Debug, Clone)]
pub(crate) struct ChainCheck {
    /// Events checked.
    pub(crate) events: i64,
    /// Hash of the last one.
    pub(crate) head: String,
    /// The first broken link, if any.
    pub(crate) broken: Option<String>,
}

/// Everything the demo did.
#[derive(Debug, Clone)]
pub(crate) struct DemoReport {
    /// Mandate's issuer (and the gateway's origin).
    pub(crate) issuer: String,
    /// Where each agent listens, behind the gateway.
    pub(crate) agents: Vec<(String, String, String)>,
    /// The status of the task sent to the orchestrator.
    pub(crate) task_status: u16,
    /// The orchestrator's answer.
    pub(crate) answer: Value,
    /// The calls between agents, in order.
    pub(crate) hops: Vec<Hop>,
    /// The refused last hop.
    pub(crate) refusal: Option<Refusal>,
    /// The whole audit trail.
    pub(crate) audit: Vec<Event>,
    /// Its verification, done here from the events as served.
    pub(crate) chain: ChainCheck,
}

type Result<T> = std::result::Result<T, String>;

#[derive(Default)]
struct Recorder {
    hops: Vec<Hop>,
    refusal: Option<Refusal>,
}

type Shared = Arc<Mutex<Recorder>>;

fn with<T>(shared: &Shared, f: impl FnOnce(&mut Recorder) -> T) -> Option<T> {
    shared.lock().ok().map(|mut r| f(&mut r))
}

/// Runs the demo and reports what happened.
pub(crate) async fn run() -> Result<DemoReport> {
    let data_dir = tempfile::Builder::new()
        .prefix("mandate-demo-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    // Each agent's listener first, so the gateway can name them.
    let bind = || async {
        TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot listen on loopback: {e}"))
    };
    let (orch_l, research_l, payment_l) = (bind().await?, bind().await?, bind().await?);
    let addr = |l: &TcpListener| {
        l.local_addr()
            .map(|a| a.to_string())
            .map_err(|e| e.to_string())
    };
    let (orch_at, research_at, payment_at) =
        (addr(&orch_l)?, addr(&research_l)?, addr(&payment_l)?);

    // Credentials: a key for the orchestrator (private_key_jwt), secrets for
    // the two others. Generated now, never printed, gone with the process.
    let orch_der = PrivateKeyDer::generate(SigningAlg::EdDSA).map_err(|e| e.to_string())?;
    let orch_key =
        SigningKey::from_private(SigningAlg::EdDSA, &orch_der).map_err(|e| e.to_string())?;
    let jwk = serde_json::to_value(orch_key.public_jwk()).map_err(|e| e.to_string())?;
    let research_secret = ClientSecret::generate().expose().to_owned();
    let payment_secret = ClientSecret::generate().expose().to_owned();
    let env = move |k: &str| match k {
        "DEMO_RESEARCH_SECRET" => Some(research_secret.clone()),
        "DEMO_PAYMENT_SECRET" => Some(payment_secret.clone()),
        // Nothing from the real environment: the demo never touches your setup.
        _ => None,
    };

    let server =
        start_mandate(&data_dir, &env, &jwk, [&orch_at, &research_at, &payment_at]).await?;
    let issuer = format!("http://{}", server.public_addr);
    let shared: Shared = Arc::default();
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();

    // The orchestrator: its own authority, bound to its DPoP key.
    let orchestrator = TokenSource::builder(ClientCredentials::with_private_key(
        Endpoint::issuer(&issuer).map_err(|e| e.to_string())?,
        "orchestrator",
        orch_key,
    ))
    .dpop(DpopKey::generate().map_err(|e| e.to_string())?)
    .build()
    .map_err(|e| e.to_string())?;
    let orchestrator = AuthorizedClient::new(orchestrator)
        .target(
            &format!("{issuer}/agents/research"),
            RESEARCH,
            Some(HOP1_SCOPE),
        )
        .map_err(|e| e.to_string())?;
    tasks.push(serve(
        orch_l,
        Router::new()
            .route("/tasks", post(orchestrator_task))
            .with_state(Agent {
                issuer: issuer.clone(),
                client: orchestrator,
                source: None,
                shared: shared.clone(),
            }),
    ));

    // The research agent: acts for whoever called it, handing on less.
    let secret_client = |id: &str| -> Result<TokenSource> {
        let secret = env(match id {
            "research-agent" => "DEMO_RESEARCH_SECRET",
            _ => "DEMO_PAYMENT_SECRET",
        })
        .unwrap_or_default();
        TokenSource::builder(ClientCredentials::with_secret(
            Endpoint::token_url(&format!("{issuer}/token")).map_err(|e| e.to_string())?,
            id,
            ClientSecret::new(secret),
        ))
        .dpop(DpopKey::generate().map_err(|e| e.to_string())?)
        .build()
        .map_err(|e| e.to_string())
    };
    let research = AuthorizedClient::new(secret_client("research-agent")?)
        .target(
            &format!("{issuer}/agents/payment"),
            PAYMENT,
            Some(HOP2_SCOPE),
        )
        .map_err(|e| e.to_string())?;
    tasks.push(serve(
        research_l,
        Router::new()
            .route("/tasks", post(research_task))
            .with_state(Agent {
                issuer: issuer.clone(),
                client: research,
                source: None,
                shared: shared.clone(),
            }),
    ));

    // The payment agent: quotes, and would like to pay.
    let payment_source = secret_client("payment-agent")?;
    tasks.push(serve(
        payment_l,
        Router::new()
            .route("/quote", post(payment_quote))
            .with_state(Agent {
                issuer: issuer.clone(),
                client: AuthorizedClient::new(payment_source.clone()),
                source: Some(payment_source),
                shared: shared.clone(),
            }),
    ));

    // You: one task for the orchestrator.
    let outcome = async {
        let http = reqwest::Client::new();
        let response = tokio::time::timeout(
            TASK_TIMEOUT,
            http.post(format!("{issuer}/agents/orchestrator/tasks"))
                .json(&json!({"task": "find a dataset on EU energy prices, and buy it"}))
                .send(),
        )
        .await
        .map_err(|_| "the task did not finish in time".to_owned())?
        .map_err(|e| format!("cannot reach the orchestrator: {e}"))?;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let (audit, chain) = audit_trail(&server).await?;
        Ok::<_, String>((status, answer, audit, chain))
    }
    .await;

    for t in &tasks {
        t.abort();
    }
    server.shutdown().await;
    drop(data_dir);
    let (task_status, answer, audit, chain) = outcome?;
    let (hops, refusal) = with(&shared, |r| (r.hops.clone(), r.refusal.clone()))
        .ok_or("the agents' record was lost")?;
    Ok(DemoReport {
        agents: vec![
            (
                "orchestrator".into(),
                format!("{issuer}/agents/orchestrator"),
                orch_at,
            ),
            (
                "research-agent".into(),
                format!("{issuer}/agents/research"),
                research_at,
            ),
            (
                "payment-agent".into(),
                format!("{issuer}/agents/payment"),
                payment_at,
            ),
        ],
        issuer,
        task_status,
        answer,
        hops,
        refusal,
        audit,
        chain,
    })
}

/// Mandate with the demo's resources, clients and gateway routes, on a free
/// loopback port that is also its issuer.
async fn start_mandate(
    data_dir: &tempfile::TempDir,
    env: &dyn Fn(&str) -> Option<String>,
    orchestrator_jwk: &Value,
    [orch, research, payment]: [&String; 3],
) -> Result<mandate_server::RunningServer> {
    let jwk = orchestrator_jwk
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let mut last_error = String::new();
    // The issuer must name the port before the server starts, so a free one
    // is picked first; another process may take it meanwhile, hence a retry.
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("cannot find a free port: {e}"))?
            .port();
        let toml = format!(
            r#"
issuer = "http://127.0.0.1:{port}"
listen = "127.0.0.1:{port}"
[admin]
listen = "127.0.0.1:0"

[[resources]]
id = "{ORCHESTRATOR}"
name = "Orchestrator"
scopes = {{ tasks = "Give the orchestrator tasks" }}

[[resources]]
id = "{RESEARCH}"
name = "Research agent"
scopes = {{ "research:read" = "Search and read sources", "research:write" = "Keep notes", "payments:quote" = "Ask for price quotes for you", "payments:pay" = "Pay for you" }}

[[resources]]
id = "{PAYMENT}"
name = "Payment agent"
scopes = {{ "payments:quote" = "Quote a price", "payments:pay" = "Make a payment" }}

[[resources]]
id = "{LEDGER}"
name = "The bank's ledger"
scopes = {{ "payments:pay" = "Move money" }}

[[clients]]
client_id = "orchestrator"
name = "Orchestrator"
grant_types = ["client_credentials"]
scopes = ["research:read", "research:write", "payments:quote", "payments:pay"]
resources = ["{RESEARCH}"]
token_endpoint_auth_method = "private_key_jwt"
jwks = {{ keys = [ {{ {jwk} }} ] }}

[[clients]]
client_id = "research-agent"
name = "Research agent"
grant_types = ["{EXCHANGE}"]
scopes = ["research:read", "payments:quote", "payments:pay"]
resources = ["{PAYMENT}"]
secret_env = "DEMO_RESEARCH_SECRET"
may_act_for = ["orchestrator"]

[[clients]]
client_id = "payment-agent"
name = "Payment agent"
grant_types = ["{EXCHANGE}"]
scopes = ["payments:quote", "payments:pay"]
resources = ["{PAYMENT}", "{LEDGER}"]
secret_env = "DEMO_PAYMENT_SECRET"
may_act_for = ["research-agent"]

[[gateway.routes]]
path = "/agents/orchestrator"
upstream = "http://{orch}"
protocol = "http"
resource = "{ORCHESTRATOR}"
public = true

[[gateway.routes]]
path = "/agents/research"
upstream = "http://{research}"
protocol = "http"
resource = "{RESEARCH}"
scopes = ["research:read"]
pass_token = true

[[gateway.routes]]
path = "/agents/payment"
upstream = "http://{payment}"
protocol = "http"
resource = "{PAYMENT}"
scopes = ["payments:quote"]
pass_token = true
"#
        );
        let flags = Overrides {
            data_dir: Some(data_dir.path().display().to_string()),
            ..Overrides::default()
        };
        let config = Config::load(Some(&toml), &flags, env).map_err(|e| e.to_string())?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        match mandate_server::start(&config, clock, env).await {
            Ok(s) => return Ok(s),
            Err(e @ mandate_server::StartError::Bind { .. }) => last_error = e.to_string(),
            Err(e) => return Err(format!("Mandate did not start: {e}")),
        }
    }
    Err(format!("Mandate did not start: {last_error}"))
}

fn serve(listener: TcpListener, app: Router) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

#[derive(Clone)]
struct Agent {
    issuer: String,
    client: AuthorizedClient,
    source: Option<TokenSource>,
    shared: Shared,
}

fn failed(status: StatusCode, what: String) -> Response {
    (status, Json(json!({ "error": what }))).into_response()
}

/// The token the gateway passed on (`pass_token`), and what it says.
fn received(headers: &HeaderMap) -> Option<(String, TokenView)> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    // The gateway verified this token before forwarding it; reading its
    // claims here is for display.
    let claims: AccessTokenClaims = UnverifiedJwt::parse(token)
        .ok()?
        .insecure_peek_claims()
        .ok()?;
    let mut act = Vec::new();
    let mut next = claims.act.as_ref();
    while let Some(Actor {
        sub, act: inner, ..
    }) = next
    {
        act.push(sub.clone());
        next = inner.as_deref();
    }
    Some((
        token.to_owned(),
        TokenView {
            scheme: scheme.to_owned(),
            sub: claims.sub,
            client_id: claims.client_id,
            aud: claims.aud,
            scope: claims.scope,
            act,
            jkt: claims.cnf.map(|c| c.jkt),
            jti: claims.jti,
            exp: claims.exp,
        },
    ))
}

fn record_hop(shared: &Shared, to: &str, call: &str, token: TokenView) {
    with(shared, |r| {
        r.hops.push(Hop {
            from: token.client_id.clone(),
            to: to.to_owned(),
            call: call.to_owned(),
            status: None,
            token,
        })
    });
}

fn record_status(shared: &Shared, to: &str, status: u16) {
    with(shared, |r| {
        if let Some(h) = r.hops.iter_mut().rev().find(|h| h.to == to) {
            h.status = Some(status);
        }
    });
}

/// Calls `url` through `client`, on behalf of `subject` when given, and
/// returns the status and JSON answer.
async fn call(
    client: &AuthorizedClient,
    subject: Option<&str>,
    url: &str,
    body: Value,
) -> std::result::Result<(u16, Value), String> {
    let request = client
        .post(url)
        .json(&body)
        .build()
        .map_err(|e| e.to_string())?;
    let response = match subject {
        Some(s) => client.on_behalf_of(s).send(request).await,
        None => client.send(request).await,
    }
    .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn orchestrator_task(State(a): State<Agent>, Json(task): Json<Value>) -> Response {
    let url = format!("{}/agents/research/tasks", a.issuer);
    let body = json!({"task": task.get("task"), "from": "orchestrator"});
    match call(&a.client, None, &url, body).await {
        Ok((status, answer)) => {
            record_status(&a.shared, "research-agent", status);
            (StatusCode::OK, Json(json!({"research": answer}))).into_response()
        }
        Err(e) => failed(StatusCode::BAD_GATEWAY, e),
    }
}

async fn research_task(State(a): State<Agent>, headers: HeaderMap) -> Response {
    let Some((token, view)) = received(&headers) else {
        return failed(StatusCode::UNAUTHORIZED, "no token was passed on".into());
    };
    record_hop(
        &a.shared,
        "research-agent",
        "POST /agents/research/tasks",
        view,
    );
    // Found a dataset; the payment agent quotes it, acting for our caller.
    let url = format!("{}/agents/payment/quote", a.issuer);
    let body = json!({"item": "EU energy prices 2015-2025, CSV licence"});
    match call(&a.client, Some(&token), &url, body).await {
        Ok((status, quote)) => {
            record_status(&a.shared, "payment-agent", status);
            Json(json!({"found": "EU energy prices 2015-2025", "payment": quote})).into_response()
        }
        Err(e) => failed(StatusCode::BAD_GATEWAY, e),
    }
}

async fn payment_quote(State(a): State<Agent>, headers: HeaderMap) -> Response {
    let Some((token, view)) = received(&headers) else {
        return failed(StatusCode::UNAUTHORIZED, "no token was passed on".into());
    };
    let held = view.scope.clone();
    record_hop(
        &a.shared,
        "payment-agent",
        "POST /agents/payment/quote",
        view,
    );
    // Quoting is what it was asked to do. Paying would need payments:pay at
    // the ledger, which its token does not hold: Mandate will refuse.
    let Some(source) = &a.source else {
        return failed(StatusCode::INTERNAL_SERVER_ERROR, "no token source".into());
    };
    let attempt = source
        .exchange(Exchange::new(token).resource(LEDGER).scope(HOP3_SCOPE))
        .await;
    let paid = match attempt {
        Ok(_) => true,
        Err(e) => {
            let (error, description) = match e.oauth() {
                Some(o) => (o.error.clone(), o.error_description.clone()),
                None => ("(no answer)".to_owned(), Some(e.to_string())),
            };
            with(&a.shared, |r| {
                r.refusal = Some(Refusal {
                    agent: "payment-agent".into(),
                    resource: LEDGER.into(),
                    asked_scope: HOP3_SCOPE.into(),
                    held_scope: held,
                    error,
                    description,
                })
            });
            false
        }
    };
    Json(json!({"quote": {"amount": "120.00", "currency": "EUR"}, "paid": paid})).into_response()
}

/// The audit trail through the admin API, once the gateway's decisions
/// (recorded without waiting) are in, and its hash chain checked here.
async fn audit_trail(server: &mandate_server::RunningServer) -> Result<(Vec<Event>, ChainCheck)> {
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/admin/audit?after=0&limit=10000",
        server.admin_addr
    );
    let mut events: Vec<Event> = Vec::new();
    for _ in 0..100 {
        events = http
            .get(&url)
            .bearer_auth(&server.admin_token)
            .send()
            .await
            .map_err(|e| format!("cannot read the audit trail: {e}"))?
            .json()
            .await
            .map_err(|e| format!("unexpected audit trail: {e}"))?;
        if events
            .iter()
            .filter(|e| e.event.kind.starts_with("gateway."))
            .count()
            >= 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut verifier = ChainVerifier::default();
    let mut broken = None;
    for e in &events {
        if let Err(b) = verifier.push(e) {
            broken = Some(format!("event {}: {}", b.seq, b.problem));
            break;
        }
    }
    let chain = ChainCheck {
        events: verifier.checked(),
        head: verifier.head_hash().to_owned(),
        broken,
    };
    Ok((events, chain))
}

fn short(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or(s)),
        None => s.to_owned(),
    }
}

/// What `mandate demo` prints.
pub(crate) fn render(r: &DemoReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Mandate demo: an orchestrator delegates to a research agent, which delegates to a\n\
         payment agent. Each hop is narrower; the last one asks for more and is refused.\n"
    );
    let _ = writeln!(
        o,
        "  {:<16} {}  (authorization server + gateway; SQLite in a temporary directory)",
        "Mandate", r.issuer
    );
    for (name, at, upstream) in &r.agents {
        let _ = writeln!(o, "  {name:<16} {at}  ->  {upstream}");
    }
    let _ = writeln!(
        o,
        "\nTask   you -> orchestrator: POST /agents/orchestrator/tasks (a public route in the demo) -> {}",
        r.task_status
    );
    let _ = writeln!(o, "       answer {}", r.answer);
    let mut previous: Option<&TokenView> = None;
    for (i, h) in r.hops.iter().enumerate() {
        let t = &h.token;
        let _ = writeln!(
            o,
            "\nHop {}  {} -> {}: {} -> {}",
            i + 1,
            h.from,
            h.to,
            h.call,
            h.status.map_or("?".to_owned(), |s| s.to_string())
        );
        let how = if t.act.is_empty() {
            "client_credentials (private_key_jwt)".to_owned()
        } else {
            "token exchange (RFC 8693) of the token it received".to_owned()
        };
        let bound = match &t.jkt {
            Some(j) => format!("{}, bound to key {}", t.scheme, short(j, 10)),
            None => t.scheme.clone(),
        };
        let _ = writeln!(o, "       token  {bound}; from {how}");
        let _ = writeln!(o, "       sub    {}", t.sub);
        let _ = writeln!(o, "       aud    {}", t.aud);
        let dropped: Vec<&str> = previous.map_or(Vec::new(), |p| {
            p.scopes()
                .into_iter()
                .filter(|s| !t.scopes().contains(s))
                .collect()
        });
        if dropped.is_empty() {
            let _ = writeln!(o, "       scope  {}", t.scope);
        } else {
            let _ = writeln!(
                o,
                "       scope  {}   (narrower: dropped {})",
                t.scope,
                dropped.join(" ")
            );
        }
        let _ = writeln!(
            o,
            "       jti    {}, exp {}{}",
            t.jti,
            t.exp,
            match previous {
                Some(p) if t.exp <= p.exp => " (no later than the token it came from)",
                _ => "",
            }
        );
        if t.act.is_empty() {
            let _ = writeln!(o, "       act    none: {} acts as itself", t.sub);
        } else {
            let _ = writeln!(
                o,
                "       act    {}, acting for {}",
                t.act.join(" <- "),
                t.sub
            );
        }
        previous = Some(t);
    }
    match &r.refusal {
        Some(f) => {
            let _ = writeln!(
                o,
                "\nHop {}  {} -> Mandate: token exchange for {}, scope {}",
                r.hops.len() + 1,
                f.agent,
                f.resource,
                f.asked_scope
            );
            let _ = writeln!(o, "       holds  {}", f.held_scope);
            let _ = writeln!(
                o,
                "       REFUSED {}: {}",
                f.error,
                f.description.as_deref().unwrap_or("")
            );
        }
        None => {
            let _ = writeln!(o, "\n(no refusal: this is a bug in the demo)");
        }
    }
    let _ = writeln!(o, "\nAudit trail ({} events):", r.audit.len());
    for e in &r.audit {
        let ev = &e.event;
        let reason = ev.reason.as_deref().unwrap_or("");
        let note = if ev.kind == "token.refused" && reason.contains("DPoP nonce") {
            "DPoP nonce challenge; the SDK retried with the server's nonce".to_owned()
        } else {
            short(reason, 90)
        };
        let _ = writeln!(
            o,
            "  #{:<3} {:<16} {:<8} client={} subject={} aud={} scope=\"{}\"{}",
            e.seq,
            ev.kind,
            ev.outcome.as_str(),
            ev.client_id.as_deref().unwrap_or("-"),
            ev.subject.as_deref().unwrap_or("-"),
            ev.audience.as_deref().unwrap_or("-"),
            ev.scopes.as_deref().unwrap_or(""),
            if note.is_empty() {
                String::new()
            } else {
                format!("\n        {note}")
            }
        );
    }
    match &r.chain.broken {
        None => {
            let _ = writeln!(
                o,
                "\nHash chain: intact ({} events, head {}), checked here as `mandate audit verify` does.",
                r.chain.events,
                short(&r.chain.head, 16)
            );
        }
        Some(b) => {
            let _ = writeln!(o, "\nHash chain: BROKEN at {b}");
        }
    }
    let _ = writeln!(
        o,
        "\nNext: README.md (Quick start) and crates/mandate-client/README.md (the SDK the agents use)."
    );
    o
}

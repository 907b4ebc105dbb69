//! Property tests of RFC 8693 token exchange: random sequences of exchanges
//! (clients with `may_act_for` relations, scopes within and beyond what the
//! subject held, resources the actor may and may not use, JWT or Biscuit,
//! revocations and clock advances) against one running server per backend.
//!
//! For every token issued, read independently of Mandate's verifier (the JWKS
//! as served with jsonwebtoken; Biscuits with the root keys the metadata
//! publishes): its scope lies within its subject token's, its audience is one
//! the actor may use, its expiry is no later than the subject token's, and its
//! `act` chain is at most `max_delegation_depth` (3, so the limit is hit)
//! long. Every refused request gets the RFC error the rules give, and nothing
//! is issued for it: no token in the body, no `token.issued` or
//! `token.exchanged` in the audit trail.
//!
//! A model of the rules (`expect`) also predicts each outcome, so a server that
//! refuses what it should grant fails as well.
//!
//! One server per backend serves every case: starting one per case would be
//! slow. Each case mints its own root tokens, so cases do not depend on each
//! other; the shared clock only moves forward. The runner is proptest's
//! `TestRunner`, run on a blocking thread that drives each case on the
//! test's runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use mandate_biscuit::{PublishedRootKey, RootKeys};
use mandate_jose::SigningAlg;
use mandate_testkit::{for_each_backend, TestDb};
use mandate_types::{FixedClock, SystemClock};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AT: &str = "urn:ietf:params:oauth:token-type:access_token";
const MAX_DEPTH: usize = 3;
const CASES: u32 = 48;

const DATA: &str = "https://data.example.com";
const UNKNOWN: &str = "https://unknown.example.com";
/// What a request may name as its `resource`: three known, one not.
const TARGETS: [&str; 4] = [API, OTHER, DATA, UNKNOWN];
/// What a request may ask for: the resources' scopes and one nobody has.
const UNIVERSE: [&str; 5] = ["read", "write", "admin", "export", "delete"];

struct Res {
    id: &'static str,
    scopes: &'static [&'static str],
    ttl: i64,
}

/// The resources as configured (`API` and `OTHER` by the base configuration).
const RESOURCES: [Res; 3] = [
    Res {
        id: API,
        scopes: &["read", "write", "admin"],
        ttl: 15 * 60,
    },
    Res {
        id: OTHER,
        scopes: &["read"],
        ttl: 5 * 60,
    },
    Res {
        id: DATA,
        scopes: &["read", "export"],
        ttl: 15 * 60,
    },
];

struct Agent {
    id: &'static str,
    /// Holds the token exchange grant (else only client_credentials).
    exchange: bool,
    scopes: &'static [&'static str],
    /// `None`: every resource.
    resources: Option<&'static [&'static str]>,
    may_act_for: &'static [&'static str],
    /// Already in the base configuration.
    in_base: bool,
}

/// The clients, as configured; the first two mint the root tokens.
const AGENTS: [Agent; 10] = [
    Agent {
        id: "orchestrator",
        exchange: false,
        scopes: &["read", "write", "admin", "export"],
        resources: Some(&[API, OTHER, DATA]),
        may_act_for: &[],
        in_base: false,
    },
    Agent {
        id: "agent-basic",
        exchange: false,
        scopes: &["read", "write"],
        resources: Some(&[API]),
        may_act_for: &[],
        in_base: true,
    },
    Agent {
        id: "planner",
        exchange: true,
        scopes: &["read", "write", "admin"],
        resources: Some(&[API, OTHER]),
        may_act_for: &["orchestrator"],
        in_base: false,
    },
    Agent {
        id: "coder",
        exchange: true,
        scopes: &["read", "write"],
        resources: Some(&[API]),
        may_act_for: &["planner", "agent-basic"],
        in_base: false,
    },
    Agent {
        id: "analyst",
        exchange: true,
        scopes: &["read", "export"],
        resources: None,
        may_act_for: &["coder", "planner"],
        in_base: false,
    },
    Agent {
        id: "broker",
        exchange: true,
        scopes: &["read", "write", "admin", "export"],
        resources: Some(&[API, DATA]),
        may_act_for: &["*"],
        in_base: false,
    },
    Agent {
        id: "relay",
        exchange: true,
        scopes: &["read", "write", "admin", "export"],
        resources: None,
        may_act_for: &["*"],
        in_base: false,
    },
    Agent {
        id: "exporter",
        exchange: true,
        scopes: &["export"],
        resources: Some(&[DATA]),
        may_act_for: &["*"],
        in_base: false,
    },
    Agent {
        id: "auditor",
        exchange: true,
        scopes: &["admin"],
        resources: None,
        may_act_for: &["*"],
        in_base: false,
    },
    Agent {
        id: "loner",
        exchange: true,
        scopes: &["read"],
        resources: None,
        may_act_for: &[],
        in_base: false,
    },
];
const ROOTS: usize = 2;

impl Agent {
    fn may_use(&self, resource: &str) -> bool {
        self.resources.is_none_or(|r| r.contains(&resource))
    }
}

fn quoted(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The configuration the model above describes.
fn config() -> String {
    let mut toml = format!(
        "[[resources]]\nid = \"{DATA}\"\nscopes = {{ read = \"Read data\", export = \"Export data\" }}\n"
    );
    for a in AGENTS.iter().filter(|a| !a.in_base) {
        let grant = if a.exchange {
            EXCHANGE
        } else {
            "client_credentials"
        };
        toml.push_str(&format!(
            "\n[[clients]]\nclient_id = \"{}\"\ngrant_types = [\"{grant}\"]\nscopes = [{}]\nsecret_env = \"AGENT_SECRET\"\nmay_act_for = [{}]\n",
            a.id,
            quoted(a.scopes),
            quoted(a.may_act_for),
        ));
        if let Some(r) = a.resources {
            toml.push_str(&format!("resources = [{}]\n", quoted(r)));
        }
    }
    toml
}

/// A token a case holds, as read back from the token itself.
#[derive(Debug, Clone)]
struct Held {
    token: String,
    biscuit: bool,
    sub: String,
    client_id: String,
    aud: String,
    scope: BTreeSet<String>,
    exp: i64,
    /// The actors, current first.
    chain: Vec<String>,
    revoked: bool,
    /// The pool index of the token this one was exchanged from.
    parent: Option<usize>,
}

#[derive(Debug, Clone)]
enum Ask {
    /// No `scope` parameter.
    Omit,
    /// These bits of the subject token's scopes.
    OfHeld(u8),
    /// These bits of [`UNIVERSE`]: often more than was held.
    Any(u8),
}

/// Who exchanges.
#[derive(Debug, Clone)]
enum Pick {
    /// One of the agents whose `may_act_for` admits the subject's client and
    /// who may use its audience (any agent when none does), so that chains
    /// grow to the depth limit.
    Fitting(usize),
    /// Any client, often one that may not act for the subject at all.
    Any(usize),
}

#[derive(Debug, Clone)]
enum Step {
    /// A new root token by client_credentials.
    Mint {
        root: usize,
        target: usize,
        mask: u8,
    },
    /// An exchange of a held token (`subject` counts back from the newest),
    /// or of garbage.
    Exchange {
        subject: Option<usize>,
        actor: Pick,
        ask: Ask,
        resource: Option<usize>,
        biscuit: bool,
    },
    /// The holder revokes a held JWT.
    Revoke { token: usize },
    /// The clock moves on.
    Advance(i64),
}

fn step() -> impl Strategy<Value = Step> {
    let mint = (0..ROOTS, 0..3usize, any::<u8>()).prop_map(|(root, target, mask)| Step::Mint {
        root,
        target,
        mask,
    });
    let ask = prop_oneof![
        Just(Ask::Omit),
        any::<u8>().prop_map(Ask::OfHeld),
        any::<u8>().prop_map(Ask::Any),
    ];
    // Mostly the newest tokens, so that chains grow to the depth limit.
    let subject = prop_oneof![
        6 => (0..2usize).prop_map(Some),
        2 => any::<usize>().prop_map(Some),
        1 => Just(None),
    ];
    let actor = prop_oneof![
        3 => any::<usize>().prop_map(Pick::Fitting),
        1 => (0..AGENTS.len()).prop_map(Pick::Any),
    ];
    let exchange = (
        subject,
        actor,
        ask,
        prop_oneof![
            3 => Just(None),
            2 => (0..TARGETS.len() - 1).prop_map(Some),
            1 => Just(Some(TARGETS.len() - 1)),
        ],
        proptest::bool::weighted(0.3),
    )
        .prop_map(|(subject, actor, ask, resource, biscuit)| Step::Exchange {
            subject,
            actor,
            ask,
            resource,
            biscuit,
        });
    prop_oneof![
        2 => mint,
        12 => exchange,
        1 => any::<usize>().prop_map(|token| Step::Revoke { token }),
        2 => prop_oneof![1i64..60, 100i64..400, 600i64..1000].prop_map(Step::Advance),
    ]
}

/// A case: a root token, a dive (exchanges of the newest token by fitting
/// actors, which reaches the depth limit in most cases), then anything.
fn case() -> impl Strategy<Value = Vec<Step>> {
    let dive = (any::<usize>(), any::<u8>(), any::<bool>()).prop_map(|(actor, mask, omit)| {
        Step::Exchange {
            subject: Some(0),
            actor: Pick::Fitting(actor),
            ask: if omit { Ask::Omit } else { Ask::OfHeld(mask) },
            resource: None,
            biscuit: false,
        }
    });
    (
        (0..ROOTS, 0..3usize, any::<u8>()),
        proptest::collection::vec(dive, 2..7),
        proptest::collection::vec(step(), 8..32),
    )
        .prop_map(|((root, target, mask), dive, rest)| {
            let mut steps = vec![Step::Mint { root, target, mask }];
            steps.extend(dive);
            steps.extend(rest);
            steps
        })
}

fn bits(names: &[&str], mask: u8) -> BTreeSet<String> {
    names
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, s)| (*s).to_owned())
        .collect()
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(" ")
}

fn known(id: &str) -> Option<&'static Res> {
    RESOURCES.iter().find(|r| r.id == id)
}

/// What the server should issue for an exchange.
#[derive(Debug)]
struct Expected {
    aud: String,
    scope: BTreeSet<String>,
    exp: i64,
    chain: Vec<String>,
}

/// A refusal the model predicts: the RFC error code, and which rule.
type Refusal = (&'static str, &'static str);

/// The rules of `exchange.rs`, in their order, as a model.
fn expect(
    subject: Option<&Held>,
    actor: &Agent,
    ask: Option<&BTreeSet<String>>,
    target: Option<&str>,
    now: i64,
) -> Result<Expected, Refusal> {
    if !actor.exchange {
        return Err(("unauthorized_client", "no exchange grant"));
    }
    // Only active JWTs of this server are subject tokens.
    let s = match subject {
        Some(s) if s.biscuit => return Err(("invalid_request", "biscuit subject")),
        Some(s) if s.revoked => return Err(("invalid_request", "revoked subject")),
        Some(s) if s.exp <= now => return Err(("invalid_request", "expired subject")),
        Some(s) => s,
        None => return Err(("invalid_request", "garbage subject")),
    };
    if !actor
        .may_act_for
        .iter()
        .any(|c| *c == "*" || *c == s.client_id)
    {
        return Err(("invalid_grant", "may not act for"));
    }
    let mut chain = vec![actor.id.to_owned()];
    chain.extend(s.chain.iter().cloned());
    if chain.len() > MAX_DEPTH {
        return Err(("invalid_request", "depth limit"));
    }
    let aud = target.unwrap_or(&s.aud);
    if !actor.may_use(aud) {
        return Err(("invalid_target", "resource not allowed"));
    }
    let res = known(aud).ok_or(("invalid_target", "unknown resource"))?;
    let ceiling: BTreeSet<String> = s
        .scope
        .iter()
        .filter(|x| actor.scopes.contains(&x.as_str()) && res.scopes.contains(&x.as_str()))
        .cloned()
        .collect();
    let scope = match ask {
        Some(a) if !a.is_empty() => {
            if !a.is_subset(&ceiling) {
                return Err(("invalid_scope", "wider scope"));
            }
            a.clone()
        }
        _ => ceiling,
    };
    if scope.is_empty() {
        return Err(("invalid_scope", "nothing applies"));
    }
    Ok(Expected {
        aud: aud.to_owned(),
        scope,
        exp: (now + res.ttl).min(s.exp),
        chain,
    })
}

/// Keys as published, to read tokens without Mandate's verifier.
struct Published {
    jwks: jsonwebtoken::jwk::JwkSet,
    roots: Vec<PublishedRootKey>,
}

impl Published {
    async fn fetch(h: &Harness) -> Self {
        let (_, _, jwks) = h.get_json("/jwks.json").await;
        let (_, _, meta) = h.get_json("/.well-known/oauth-authorization-server").await;
        Self {
            jwks: serde_json::from_value(jwks).unwrap(),
            roots: serde_json::from_value(meta["biscuit_root_keys"].clone()).unwrap(),
        }
    }

    /// A JWT's claims: signature, `typ`, issuer and required claims checked
    /// by jsonwebtoken. Expiry is checked by the caller against the test's
    /// clock, which runs ahead of the wall clock jsonwebtoken would use.
    fn jwt(&self, token: &str) -> Result<Value, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        if header.typ.as_deref() != Some("at+jwt") {
            return Err(format!("typ {:?}", header.typ));
        }
        let jwk = header
            .kid
            .as_deref()
            .and_then(|kid| self.jwks.find(kid))
            .ok_or("kid not in the JWKS")?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }

    /// Reads an issued token back into what a case holds.
    fn read(&self, token: &str, biscuit: bool) -> Result<Held, String> {
        if biscuit {
            let c = RootKeys::new(&self.roots)
                .verify(token)
                .map_err(|e| e.to_string())?
                .claims;
            if c.issuer != ISSUER {
                return Err(format!("issuer {}", c.issuer));
            }
            return Ok(Held {
                token: token.to_owned(),
                biscuit,
                sub: c.subject,
                client_id: c.client_id,
                aud: c.audience,
                scope: c.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
                exp: c.expires_at,
                chain: c.actors.into_iter().map(|a| a.sub).collect(),
                revoked: false,
                parent: None,
            });
        }
        let c = self.jwt(token)?;
        let mut chain = vec![];
        let mut act = &c["act"];
        while act.is_object() {
            // Without actor tokens, each actor is the client that exchanged.
            if act["client_id"] != act["sub"] {
                return Err(format!("act {act}"));
            }
            chain.push(act["sub"].as_str().unwrap_or_default().to_owned());
            act = &act["act"];
        }
        let text = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
        Ok(Held {
            token: token.to_owned(),
            biscuit,
            sub: text("sub"),
            client_id: text("client_id"),
            aud: text("aud"),
            scope: c["scope"]
                .as_str()
                .unwrap_or_default()
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            exp: c["exp"].as_i64().unwrap_or_default(),
            chain,
            revoked: false,
            parent: None,
        })
    }
}

/// What the cases covered, so a generator that stops reaching a rule fails.
#[derive(Default, Debug)]
struct Seen(BTreeMap<String, usize>);

impl Seen {
    fn add(&mut self, what: &str) {
        *self.0.entry(what.to_owned()).or_default() += 1;
    }
}

struct Ctx {
    h: Arc<Harness>,
    keys: Published,
    seen: Mutex<Seen>,
}

impl Ctx {
    fn saw(&self, what: &str) {
        self.seen.lock().unwrap().add(what);
    }

    /// The audit events since `after`, and the new `after`.
    async fn audit_since(&self, after: &mut i64) -> Vec<mandate_audit::Event> {
        let events = self.h.audit_after(*after).await;
        if let Some(last) = events.last() {
            *after = last.seq;
        }
        events
    }
}

fn describe(chain: &[String]) -> String {
    chain.join(" <- ")
}

impl Held {
    fn show(&self, i: usize) -> String {
        format!(
            "t{i} [{} of {} for {}, {} @ {}, chain {:?}, exp {}{}]",
            if self.biscuit { "biscuit" } else { "jwt" },
            self.sub,
            self.client_id,
            join(&self.scope),
            self.aud,
            self.chain,
            self.exp,
            if self.revoked { ", revoked" } else { "" }
        )
    }
}

/// Runs one case; a failure carries the transcript of what the case did.
async fn run_case(ctx: &Ctx, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut trace = vec![];
    let outcome = steps_of_case(ctx, steps, &mut trace).await;
    outcome.map_err(|e| TestCaseError::fail(format!("{e}\ntranscript:\n  {}", trace.join("\n  "))))
}

async fn steps_of_case(
    ctx: &Ctx,
    steps: Vec<Step>,
    trace: &mut Vec<String>,
) -> Result<(), TestCaseError> {
    let h = &ctx.h;
    let mut pool: Vec<Held> = vec![];
    let mut after = ctx.h.audit_after(0).await.last().map_or(0, |e| e.seq);
    let start = h.clock_now();
    for step in steps {
        let now = h.clock_now();
        match step {
            Step::Advance(secs) => {
                h.clock.advance(secs);
                trace.push(format!("clock +{secs}s (now +{})", now + secs - start));
            }
            Step::Mint { root, target, mask } => {
                let root = &AGENTS[root];
                let res = &RESOURCES[target];
                let res = if root.may_use(res.id) {
                    res
                } else {
                    &RESOURCES[0]
                };
                let allowed: Vec<&str> = res
                    .scopes
                    .iter()
                    .copied()
                    .filter(|s| root.scopes.contains(s))
                    .collect();
                let ask = bits(&allowed, mask);
                let scope = join(&ask);
                let mut form = vec![("resource", res.id)];
                if !scope.is_empty() {
                    form.push(("scope", &scope));
                }
                let (s, _, body) = h.token_basic(root.id, &form).await;
                prop_assert_eq!(s, StatusCode::OK, "mint: {}", body);
                let held = ctx
                    .keys
                    .read(body["access_token"].as_str().unwrap_or_default(), false)
                    .map_err(TestCaseError::fail)?;
                let want: BTreeSet<String> = if ask.is_empty() {
                    allowed.iter().map(|s| (*s).to_owned()).collect()
                } else {
                    ask
                };
                prop_assert_eq!(&held.scope, &want);
                prop_assert_eq!(held.exp, now + res.ttl);
                prop_assert!(held.chain.is_empty());
                trace.push(format!("{} mints {}", root.id, held.show(pool.len())));
                pool.push(held);
                ctx.audit_since(&mut after).await;
            }
            Step::Revoke { token } => {
                let Some(i) = (!pool.is_empty()).then(|| token % pool.len()) else {
                    continue;
                };
                if pool[i].biscuit {
                    continue;
                }
                let (s, _, body) = h
                    .post_form(
                        "/revoke",
                        &[("token", &pool[i].token)],
                        Some((&pool[i].client_id, SECRET)),
                    )
                    .await;
                prop_assert_eq!(s, StatusCode::OK, "revoke: {}", body);
                pool[i].revoked = true;
                // What was exchanged from it goes with it; a token always
                // comes after its parent in the pool, so one pass suffices.
                for j in i + 1..pool.len() {
                    if pool[j].parent.is_some_and(|p| pool[p].revoked) {
                        pool[j].revoked = true;
                    }
                }
                trace.push(format!("{} revokes t{i}", pool[i].client_id));
                ctx.audit_since(&mut after).await;
            }
            Step::Exchange {
                subject,
                actor,
                ask,
                resource,
                biscuit,
            } => {
                let subject = subject
                    .filter(|_| !pool.is_empty())
                    .map(|i| pool.len() - 1 - i % pool.len());
                let parent = subject;
                let held = subject.map(|i| &pool[i]);
                let actor = match actor {
                    Pick::Any(i) => &AGENTS[i],
                    Pick::Fitting(i) => {
                        let fit: Vec<&Agent> = AGENTS
                            .iter()
                            .filter(|a| {
                                held.is_some_and(|s| {
                                    a.exchange
                                        && a.may_use(&s.aud)
                                        && a.may_act_for
                                            .iter()
                                            .any(|c| *c == "*" || *c == s.client_id)
                                })
                            })
                            .collect();
                        if fit.is_empty() {
                            &AGENTS[i % AGENTS.len()]
                        } else {
                            fit[i % fit.len()]
                        }
                    }
                };
                let ask = match (ask, held) {
                    (Ask::Omit, _) => None,
                    (Ask::OfHeld(m), Some(s)) => Some(
                        s.scope
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| m & (1 << i) != 0)
                            .map(|(_, x)| x.clone())
                            .collect::<BTreeSet<_>>(),
                    ),
                    (Ask::OfHeld(m) | Ask::Any(m), _) => Some(bits(&UNIVERSE, m)),
                };
                let target = resource.map(|i| TARGETS[i]);
                let expected = expect(held, actor, ask.as_ref(), target, now);

                let scope = ask.as_ref().map(join).unwrap_or_default();
                let subject_token = held.map_or("not-a-token", |s| s.token.as_str());
                let mut form = vec![
                    ("grant_type", EXCHANGE),
                    ("subject_token", subject_token),
                    ("subject_token_type", AT),
                ];
                if !scope.is_empty() {
                    form.push(("scope", &scope));
                }
                if let Some(t) = target {
                    form.push(("resource", t));
                }
                if biscuit {
                    form.push(("requested_token_type", mandate_biscuit::TOKEN_TYPE));
                }
                let (s, headers, body) =
                    h.post_form("/token", &form, Some((actor.id, SECRET))).await;
                let events = ctx.audit_since(&mut after).await;
                let minted: Vec<_> = events
                    .iter()
                    .filter(|e| e.event.kind == "token.issued" || e.event.kind == "token.exchanged")
                    .collect();

                trace.push(format!(
                    "{} exchanges {} asking scope {ask:?} resource {target:?} as {}: {s} {}",
                    actor.id,
                    subject.map_or("garbage".to_owned(), |i| pool[i].show(i)),
                    if biscuit { "biscuit" } else { "jwt" },
                    body["error"].as_str().unwrap_or("issued"),
                ));
                let Some(issued) = body["access_token"].as_str() else {
                    // Refused: the RFC error, and nothing issued.
                    let code = body["error"].as_str().unwrap_or_default().to_owned();
                    ctx.saw(&code);
                    prop_assert_eq!(s, StatusCode::BAD_REQUEST, "{}", body);
                    prop_assert_eq!(
                        headers.get("cache-control").and_then(|v| v.to_str().ok()),
                        Some("no-store")
                    );
                    prop_assert!(minted.is_empty(), "a refused exchange minted {:?}", minted);
                    match expected {
                        Err((want, why)) => {
                            prop_assert_eq!(code.as_str(), want, "{}: {}", why, body);
                            ctx.saw(why);
                        }
                        Ok(want) => {
                            return Err(TestCaseError::fail(format!(
                                "refused ({body}) where {want:?} was expected"
                            )))
                        }
                    }
                    continue;
                };
                prop_assert_eq!(s, StatusCode::OK, "{}", body);
                let subject = held.ok_or_else(|| TestCaseError::fail("issued for garbage"))?;
                let got = ctx
                    .keys
                    .read(issued, biscuit)
                    .map_err(TestCaseError::fail)?;
                ctx.saw(if biscuit { "biscuit" } else { "jwt" });
                ctx.saw(&format!("depth {}", got.chain.len()));

                // The properties, against the subject token itself.
                prop_assert!(
                    got.scope.is_subset(&subject.scope),
                    "scope {:?} beyond the subject's {:?}",
                    got.scope,
                    subject.scope
                );
                prop_assert!(!got.scope.is_empty());
                prop_assert!(
                    actor.may_use(&got.aud) && known(&got.aud).is_some(),
                    "audience {} not usable by {}",
                    got.aud,
                    actor.id
                );
                prop_assert!(
                    got.exp <= subject.exp,
                    "exp {} after the subject's {}",
                    got.exp,
                    subject.exp
                );
                prop_assert!(got.exp > now);
                prop_assert!(
                    got.chain.len() <= MAX_DEPTH,
                    "chain {:?} deeper than {}",
                    got.chain,
                    MAX_DEPTH
                );
                prop_assert_eq!(&got.sub, &subject.sub, "sub stays the principal");
                prop_assert_eq!(got.client_id.as_str(), actor.id);
                prop_assert_eq!(
                    body["issued_token_type"].as_str(),
                    Some(if biscuit {
                        mandate_biscuit::TOKEN_TYPE
                    } else {
                        AT
                    })
                );
                let granted = join(&got.scope);
                prop_assert_eq!(body["scope"].as_str(), Some(granted.as_str()));
                prop_assert_eq!(body["expires_in"].as_i64(), Some(got.exp - now));

                // And what the model of the rules predicted.
                let want = expected.map_err(|(code, why)| {
                    TestCaseError::fail(format!("issued {got:?} where {code} ({why}) was expected"))
                })?;
                prop_assert_eq!(&got.aud, &want.aud);
                prop_assert_eq!(&got.scope, &want.scope);
                prop_assert_eq!(got.exp, want.exp);
                prop_assert_eq!(&got.chain, &want.chain);

                // Audited once, with the acting chain and the parent.
                prop_assert_eq!(minted.len(), 1, "{:?}", minted);
                let e = &minted[0].event;
                prop_assert_eq!(e.kind.as_str(), "token.exchanged");
                prop_assert_eq!(e.client_id.as_deref(), Some(actor.id));
                prop_assert_eq!(e.audience.as_deref(), Some(got.aud.as_str()));
                let reason = e.reason.as_deref().unwrap_or_default();
                let chain = format!(
                    "acting chain: {}; exchanged from jti ",
                    describe(&got.chain)
                );
                prop_assert!(
                    reason.contains(&chain)
                        && reason.starts_with(if biscuit { "biscuit; " } else { "acting" }),
                    "{}",
                    reason
                );
                trace.push(format!("  = {}", got.show(pool.len())));
                pool.push(Held { parent, ..got });
            }
        }
    }
    Ok(())
}

async fn exchanges_only_narrow(db: &TestDb) {
    let started = std::time::Instant::now();
    let key = Arc::new(ClientKey::new(SigningAlg::ES256));
    let clock = Arc::new(FixedClock::new(mandate_types::Clock::now(&SystemClock)));
    let extra: &'static str = Box::leak(config().into_boxed_str());
    let h = Arc::new(
        Harness::start_with_tokens(
            db,
            &format!("max_delegation_depth = {MAX_DEPTH}"),
            extra,
            &[],
            key,
            clock,
        )
        .await,
    );
    let ctx = Arc::new(Ctx {
        keys: Published::fetch(&h).await,
        h: h.clone(),
        seen: Mutex::default(),
    });
    let runtime = tokio::runtime::Handle::current();
    let cases = ctx.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases: CASES,
            failure_persistence: None,
            max_shrink_iters: 1024,
            ..Config::default()
        });
        runner
            .run(&case(), |steps| runtime.block_on(run_case(&cases, steps)))
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    if let Err(e) = outcome {
        panic!("{} exchange property failed: {e}", db.backend_name());
    }
    // Every rule was reached, the depth limit included.
    let seen = std::mem::take(&mut *ctx.seen.lock().unwrap());
    for what in [
        "jwt",
        "biscuit",
        "depth 1",
        "depth 3",
        "depth limit",
        "wider scope",
        "nothing applies",
        "resource not allowed",
        "unknown resource",
        "may not act for",
        "garbage subject",
        "biscuit subject",
        "expired subject",
        "revoked subject",
        "no exchange grant",
    ] {
        assert!(seen.0.contains_key(what), "no {what} in {seen:?}");
    }
    eprintln!(
        "{}: {CASES} cases in {:?}: {seen:?}",
        db.backend_name(),
        started.elapsed()
    );
}
for_each_backend!(exchanges_only_narrow, exchanges_only_narrow);

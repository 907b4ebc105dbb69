//! Three-hop delegation end to end, on two replicas of the server and gateway
//! sharing one database (and so one DPoP replay cache and one audit chain):
//! the orchestrator's DPoP-bound token, exchanged by the research agent
//! (narrower, bound to its own key), exchanged again by the payment agent
//! (narrower still), each hop calling through the gateway with a proof. The
//! last hop asking for more than it was given is refused; a proof spent at
//! one replica is refused at the other; the audit trail holds the chain.

use std::sync::Arc;

use mandate_jose::SigningAlg;
use mandate_testkit::{for_each_backend, TestDb};
use mandate_types::{FixedClock, SystemClock};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::upstream::Upstream;
use crate::common::*;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AT: &str = "urn:ietf:params:oauth:token-type:access_token";

fn config(up: &Upstream) -> &'static str {
    let mut toml = format!(
        r#"
[[clients]]
client_id = "orchestrator"
grant_types = ["client_credentials"]
scopes = ["read", "write", "admin"]
resources = ["{API}"]
secret_env = "AGENT_SECRET"
require_dpop = true

[[clients]]
client_id = "research"
grant_types = ["{EXCHANGE}"]
scopes = ["read", "write", "admin"]
resources = ["{API}"]
secret_env = "AGENT_SECRET"
may_act_for = ["orchestrator"]
require_dpop = true

[[clients]]
client_id = "payment"
grant_types = ["{EXCHANGE}"]
scopes = ["read", "write", "admin"]
resources = ["{API}"]
secret_env = "AGENT_SECRET"
may_act_for = ["research"]
require_dpop = true
"#
    );
    // Who calls what: the orchestrator the research agent, the research agent
    // the payment agent, the payment agent the ledger; `admin` is a route
    // only the orchestrator's full token may use.
    for (path, scope) in [
        ("/agents/research", "read"),
        ("/agents/payment", "write"),
        ("/agents/ledger", "read"),
        ("/agents/admin", "admin"),
    ] {
        toml.push_str(&format!(
            "\n[[gateway.routes]]\npath = \"{path}\"\nupstream = \"{}\"\nresource = \"{API}\"\nscopes = [\"{scope}\"]\n",
            up.url()
        ));
    }
    Box::leak(toml.into_boxed_str())
}

/// A token request from `client` with a DPoP proof by `key`.
async fn token(
    h: &Harness,
    client: &str,
    key: &ClientKey,
    nonce: Option<&str>,
    form: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let proof = key.dpop_proof(
        "POST",
        &format!("{ISSUER}/token"),
        h.clock_now(),
        nonce,
        None,
    );
    send_token(h, client, &proof, form).await
}

async fn send_token(
    h: &Harness,
    client: &str,
    proof: &str,
    form: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    into_parts(
        h.http
            .post(format!("{}/token", h.base))
            .basic_auth(client, Some(SECRET))
            .header("dpop", proof)
            .form(form)
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn exchange_form<'a>(subject: &'a str, scope: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("grant_type", EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", AT),
        ("scope", scope),
        ("resource", API),
    ]
}

/// A gateway call with `Authorization: DPoP` and a proof; status and challenge.
async fn call(h: &Harness, path: &str, token: &str, proof: &str) -> (StatusCode, String) {
    let resp = h
        .http
        .get(format!("{}{path}", h.base))
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", proof)
        .send()
        .await
        .unwrap();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (resp.status(), challenge)
}

/// A fresh proof for a GET of `path` through the gateway, carrying `ath`.
fn proof(h: &Harness, key: &ClientKey, path: &str, token: &str) -> String {
    key.dpop_proof(
        "GET",
        &format!("{ISSUER}{path}"),
        h.clock_now(),
        None,
        Some(token),
    )
}

fn scope_of(claims: &Value) -> Vec<&str> {
    let mut s: Vec<&str> = claims["scope"].as_str().unwrap().split(' ').collect();
    s.sort_unstable();
    s
}

async fn three_hops_across_replicas(db: &TestDb) {
    let up = Upstream::start().await;
    let key = Arc::new(ClientKey::new(SigningAlg::ES256));
    let clock = Arc::new(FixedClock::new(mandate_types::Clock::now(&SystemClock)));
    let a = Harness::start_full(db, config(&up), &[], key.clone(), clock.clone()).await;
    let b = Harness::start_full(db, config(&up), &[], key, clock).await;
    let orchestrator = ClientKey::new(SigningAlg::ES256);
    let research = ClientKey::new(SigningAlg::EdDSA);
    let payment = ClientKey::new(SigningAlg::ES256);

    // The token endpoint's nonce, from A; nonces are stateless, so B takes it.
    let first = token(
        &a,
        "orchestrator",
        &orchestrator,
        None,
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_oauth_error(&first, 400, "use_dpop_nonce");
    let nonce = first.1["dpop-nonce"].to_str().unwrap().to_owned();
    let nonce = Some(nonce.as_str());

    // Hop 0: the orchestrator's own token, bound to its key (at A).
    let (s, _, r0) = token(
        &a,
        "orchestrator",
        &orchestrator,
        nonce,
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r0}");
    assert_eq!(r0["token_type"], "DPoP");
    let t0 = r0["access_token"].as_str().unwrap().to_owned();
    let c0 = b.verify_independently(&t0, API).await;
    assert_eq!(
        c0["cnf"]["jkt"],
        orchestrator.public().thumbprint().unwrap()
    );
    assert_eq!(scope_of(&c0), ["admin", "read", "write"]);
    let (s, _) = call(
        &a,
        "/agents/research/task",
        &t0,
        &proof(&a, &orchestrator, "/agents/research/task", &t0),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the orchestrator calls the research agent"
    );

    // Hop 1: the research agent exchanges it (at B), narrower, bound to its own key.
    let (s, _, r1) = token(
        &b,
        "research",
        &research,
        nonce,
        &exchange_form(&t0, "read write"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r1}");
    assert_eq!(r1["token_type"], "DPoP");
    assert_eq!(r1["issued_token_type"], AT);
    let t1 = r1["access_token"].as_str().unwrap().to_owned();
    let c1 = a.verify_independently(&t1, API).await;
    assert_eq!(
        c1["sub"], "orchestrator",
        "sub stays the original principal"
    );
    assert_eq!(c1["client_id"], "research");
    assert_eq!(
        c1["act"],
        json!({"sub": "research", "client_id": "research"})
    );
    assert_eq!(c1["cnf"]["jkt"], research.public().thumbprint().unwrap());
    assert_ne!(c1["cnf"], c0["cnf"]);
    assert_eq!(scope_of(&c1), ["read", "write"]);
    assert!(c1["exp"].as_i64() <= c0["exp"].as_i64());
    let path = "/agents/payment/charge";
    let (s, _) = call(&b, path, &t1, &proof(&b, &research, path, &t1)).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the research agent calls the payment agent"
    );
    // Narrower: the admin route is closed to it; its key is its own.
    let path = "/agents/admin/x";
    let (s, c) = call(&a, path, &t1, &proof(&a, &research, path, &t1)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(c.contains("insufficient_scope"), "{c}");
    let path = "/agents/payment/charge";
    let (s, c) = call(&a, path, &t1, &proof(&a, &orchestrator, path, &t1)).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the orchestrator's key does not fit"
    );
    assert!(c.starts_with("DPoP "), "{c}");

    // Hop 2: the payment agent asks for more than the research agent holds: refused (at A).
    let refused = token(
        &a,
        "payment",
        &payment,
        nonce,
        &exchange_form(&t1, "read admin"),
    )
    .await;
    assert_oauth_error(&refused, 400, "invalid_scope");
    assert!(refused.2.get("access_token").is_none());
    // Within what it was given: issued (at A), narrower again.
    let (s, _, r2) = token(&a, "payment", &payment, nonce, &exchange_form(&t1, "read")).await;
    assert_eq!(s, StatusCode::OK, "{r2}");
    let t2 = r2["access_token"].as_str().unwrap().to_owned();
    let c2 = b.verify_independently(&t2, API).await;
    assert_eq!(c2["sub"], "orchestrator");
    assert_eq!(c2["client_id"], "payment");
    assert_eq!(
        c2["act"],
        json!({"sub": "payment", "client_id": "payment",
               "act": {"sub": "research", "client_id": "research"}})
    );
    assert_eq!(c2["cnf"]["jkt"], payment.public().thumbprint().unwrap());
    assert_eq!(scope_of(&c2), ["read"]);
    assert!(c2["exp"].as_i64() <= c1["exp"].as_i64());
    let path = "/agents/payment/charge";
    let (s, c) = call(&b, path, &t2, &proof(&b, &payment, path, &t2)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "write is no longer held");
    assert!(c.contains("insufficient_scope"), "{c}");

    // The payment agent calls the ledger: the proof works once, at A ...
    let path = "/agents/ledger/entries";
    let spent = proof(&a, &payment, path, &t2);
    let (s, c) = call(&a, path, &t2, &spent).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let seen = up.last();
    assert_eq!(seen.path, "/entries", "the route prefix is stripped");
    assert_eq!(seen.headers["x-mandate-subject"], "orchestrator");
    assert_eq!(seen.headers["x-mandate-client-id"], "payment");
    assert_eq!(seen.headers["x-mandate-actor-chain"], "payment, research");
    let reached = up.count();
    // ... and is refused at B: one replay cache for both replicas.
    let (s, c) = call(&b, path, &t2, &spent).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "replayed at the other replica");
    assert!(
        c.starts_with("DPoP ") && c.contains("error=\"invalid_dpop_proof\""),
        "{c}"
    );
    assert_eq!(up.count(), reached, "the replay never reached the upstream");
    // A fresh proof is fine at B.
    let (s, _) = call(&b, path, &t2, &proof(&b, &payment, path, &t2)).await;
    assert_eq!(s, StatusCode::OK);

    // The same holds at the token endpoint: a proof spent at B is refused at A.
    let once = research.dpop_proof(
        "POST",
        &format!("{ISSUER}/token"),
        b.clock_now(),
        nonce,
        None,
    );
    let form = exchange_form(&t0, "read");
    assert_eq!(
        send_token(&b, "research", &once, &form).await.0,
        StatusCode::OK
    );
    assert_oauth_error(
        &send_token(&a, "research", &once, &form).await,
        400,
        "invalid_dpop_proof",
    );

    // One audit trail, written by both replicas: the whole chain, the refusal,
    // the gateway's decisions (recorded without waiting, hence the polling).
    let jti = |c: &Value| c["jti"].as_str().unwrap().to_owned();
    let events = eventually(100, std::time::Duration::from_millis(20), || async {
        let events = b.audit().await;
        let allowed = events
            .iter()
            .filter(|e| e.event.kind == "gateway.allowed")
            .count();
        let replay = events.iter().any(|e| {
            e.event.kind == "gateway.denied"
                && e.event
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.contains("dpop_proof_replayed"))
        });
        (allowed >= 4 && replay).then_some(events)
    })
    .await
    .expect("both gateway decisions and the replay refusal are in the trail");
    let find = |kind: &str, client: &str| {
        events
            .iter()
            .filter(|e| e.event.kind == kind && e.event.client_id.as_deref() == Some(client))
            .collect::<Vec<_>>()
    };
    let issued = find("token.issued", "orchestrator");
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].event.jti, Some(jti(&c0)));
    let hop1 = find("token.exchanged", "research");
    let hop1 = hop1
        .iter()
        .find(|e| e.event.jti == Some(jti(&c1)))
        .expect("hop 1 audited");
    assert_eq!(
        hop1.event.reason.as_deref(),
        Some(format!("acting chain: research; exchanged from jti {}", jti(&c0)).as_str())
    );
    assert_eq!(hop1.event.subject.as_deref(), Some("orchestrator"));
    assert_eq!(hop1.event.scopes.as_deref(), Some("read write"));
    let hop2 = find("token.exchanged", "payment");
    assert_eq!(hop2.len(), 1, "only the allowed exchange minted");
    assert_eq!(hop2[0].event.jti, Some(jti(&c2)));
    assert_eq!(
        hop2[0].event.reason.as_deref(),
        Some(
            format!(
                "acting chain: payment <- research; exchanged from jti {}",
                jti(&c1)
            )
            .as_str()
        )
    );
    assert_eq!(hop2[0].event.scopes.as_deref(), Some("read"));
    assert!(
        find("token.refused", "payment").iter().any(|e| e
            .event
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("admin"))),
        "the refused hop is audited with what it asked beyond"
    );
    let gateway = |kind: &str| {
        events
            .iter()
            .filter(|e| e.event.kind == kind)
            .map(|e| (e.event.client_id.as_deref(), e.event.reason.as_deref()))
            .collect::<Vec<_>>()
    };
    let allowed = gateway("gateway.allowed");
    assert_eq!(
        allowed.len(),
        4,
        "one per allowed call, from both replicas: {allowed:?}"
    );
    for client in ["orchestrator", "research", "payment"] {
        assert!(
            allowed.iter().any(|(c, _)| *c == Some(client)),
            "{allowed:?}"
        );
    }
    let denied = gateway("gateway.denied");
    // A failed proof of possession proves nobody, so it names no client.
    assert!(
        denied.iter().any(
            |(_, r)| r.is_some_and(|r| r.contains("route=/agents/ledger")
                && r.contains("status=401 reason=dpop_proof_replayed"))
        ),
        "the replay is audited: {denied:?}"
    );
    assert!(
        denied.iter().any(|(c, r)| *c == Some("payment")
            && r.is_some_and(|r| r.contains("status=403 reason=insufficient_scope"))),
        "and the payment agent's call beyond its scope: {denied:?}"
    );
    assert_eq!(
        mandate_audit::verify_chain(&events),
        Ok(events.len() as i64),
        "both replicas wrote one unbroken chain"
    );
}
for_each_backend!(three_hops_across_replicas, three_hops_across_replicas);

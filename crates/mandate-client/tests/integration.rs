//! The SDK against a real Mandate server in process: client authentication,
//! the cache and its single flight, DPoP with nonces, token exchange, and the
//! authorizing client through the gateway.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use mandate_client::{
    AuthorizedClient, ClientCredentials, DpopKey, Endpoint, Error, Exchange, TokenType,
};
use mandate_types::OAuthErrorCode;
use serde_json::json;

use common::*;

const AT: &str = "urn:ietf:params:oauth:token-type:access_token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_client_caches_until_the_margin() {
    let h = Harness::start().await;
    let source = h.source(h.secret_client("agent-secret")).build().unwrap();
    let a = source
        .client_credentials(Some(API), Some("read"))
        .await
        .unwrap();
    assert_eq!(a.token_type(), TokenType::Bearer);
    assert_eq!(a.scope(), Some("read"));
    let claims = claims_of(a.secret());
    assert_eq!(claims["client_id"], "agent-secret");
    assert_eq!(claims["aud"], API);
    // A cache hit makes no request: the audit trail has one issuance.
    let b = source
        .client_credentials(Some(API), Some("read"))
        .await
        .unwrap();
    assert_eq!(a.secret(), b.secret());
    assert_eq!(h.count("token.issued", "agent-secret").await, 1);
    // Another scope is another token.
    let c = source
        .client_credentials(Some(API), Some("read write"))
        .await
        .unwrap();
    assert_ne!(a.secret(), c.secret());
    assert_eq!(h.count("token.issued", "agent-secret").await, 2);
    // Near expiry (900 s tokens, 30 s margin) the token is replaced.
    h.clock.advance(900 - 31);
    source
        .client_credentials(Some(API), Some("read"))
        .await
        .unwrap();
    assert_eq!(h.count("token.issued", "agent-secret").await, 2);
    h.clock.advance(2);
    let d = source
        .client_credentials(Some(API), Some("read"))
        .await
        .unwrap();
    assert_ne!(a.secret(), d.secret());
    assert_eq!(h.count("token.issued", "agent-secret").await, 3);
    // A wrong secret is a typed refusal that names no secret.
    let wrong = h
        .source(ClientCredentials::with_secret(
            Endpoint::token_url(&format!("{ISSUER}/token")).unwrap(),
            "agent-secret",
            mandate_types::ClientSecret::new("not-the-secret-at-all".into()),
        ))
        .build()
        .unwrap();
    let e = wrong.client_credentials(Some(API), None).await.unwrap_err();
    assert!(e.is_oauth(OAuthErrorCode::InvalidClient), "{e}");
    assert!(!e.to_string().contains("not-the-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_with_discovery() {
    let h = Harness::start().await;
    let key = h.jwt_key();
    let source = h
        .source(ClientCredentials::with_private_key(
            Endpoint::issuer(ISSUER).unwrap(),
            "agent-jwt",
            key,
        ))
        .build()
        .unwrap();
    assert_eq!(
        source.token_endpoint().await.unwrap().as_str(),
        format!("{ISSUER}/token")
    );
    // Two uncached requests: each assertion has its own jti, so neither is a replay.
    for _ in 0..2 {
        let t = source
            .fetch(&mandate_client::Grant::ClientCredentials {
                resource: Some(API.into()),
                scope: None,
            })
            .await
            .unwrap();
        assert_eq!(claims_of(t.secret())["client_id"], "agent-jwt");
        assert_eq!(t.scope(), Some("read"));
    }
    assert_eq!(h.count("token.issued", "agent-jwt").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_request() {
    let h = Harness::start().await;
    let source = h.dpop_source("agent-secret");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let s = source.clone();
            tokio::spawn(async move { s.client_credentials(Some(API), Some("read")).await })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap().unwrap().secret().to_owned());
    }
    assert!(tokens.iter().all(|t| t == &tokens[0]));
    assert_eq!(h.count("token.issued", "agent-secret").await, 1);
    // One nonce challenge for the one flight, too.
    assert_eq!(h.count("token.refused", "agent-secret").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_binding_with_the_servers_nonce() {
    let h = Harness::start().await;
    let source = h.dpop_source("agent-secret");
    let t = source
        .client_credentials(Some(API), Some("read"))
        .await
        .unwrap();
    assert_eq!(t.token_type(), TokenType::DPoP);
    let jkt = source.dpop_key().unwrap().thumbprint().to_owned();
    assert_eq!(claims_of(t.secret())["cnf"]["jkt"], jkt);
    // The first request met use_dpop_nonce and was retried once.
    let events = h.audit().await;
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e.event.kind == "token.refused")
        .collect();
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0]
            .event
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("nonce")),
        "{:?}",
        refused[0].event.reason
    );
    // The nonce is remembered: the next token costs one request.
    source
        .client_credentials(Some(API), Some("write"))
        .await
        .unwrap();
    assert_eq!(h.count("token.refused", "agent-secret").await, 1);
    assert_eq!(h.count("token.issued", "agent-secret").await, 2);
    // ES256 keys work the same.
    let es = h
        .source(h.secret_client("agent-secret"))
        .dpop(DpopKey::generate_with(mandate_jose::SigningAlg::ES256).unwrap())
        .build()
        .unwrap();
    let t = es.client_credentials(Some(API), None).await.unwrap();
    assert_eq!(t.token_type(), TokenType::DPoP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_narrows_and_widening_is_refused() {
    let h = Harness::start().await;
    let agent = h.dpop_source("agent-secret");
    let relay = h.dpop_source("relay");
    let subject = agent
        .client_credentials(Some(API), Some("read write"))
        .await
        .unwrap();
    let narrower = relay
        .exchange(Exchange::new(subject.secret()).resource(API).scope("read"))
        .await
        .unwrap();
    assert_eq!(narrower.issued_token_type(), Some(AT));
    assert_eq!(narrower.scope(), Some("read"));
    assert_eq!(narrower.token_type(), TokenType::DPoP);
    let c = claims_of(narrower.secret());
    assert_eq!(c["sub"], "agent-secret");
    assert_eq!(c["client_id"], "relay");
    assert_eq!(c["act"]["sub"], "relay");
    assert_eq!(
        c["cnf"]["jkt"],
        relay.dpop_key().unwrap().thumbprint(),
        "bound to the relay's key, not the subject's"
    );
    // Cached like any token: the same exchange again makes no request.
    let again = relay
        .exchange(Exchange::new(subject.secret()).resource(API).scope("read"))
        .await
        .unwrap();
    assert_eq!(again.secret(), narrower.secret());
    assert_eq!(h.count("token.exchanged", "relay").await, 1);
    // admin was never in the subject token: refused, typed, and nothing secret in it.
    let e = relay
        .exchange(
            Exchange::new(subject.secret())
                .resource(API)
                .scope("read admin"),
        )
        .await
        .unwrap_err();
    assert!(e.is_oauth(OAuthErrorCode::InvalidScope), "{e}");
    assert_eq!(e.oauth().unwrap().status, 400);
    assert!(!e.to_string().contains(subject.secret()));
    assert!(!format!("{e:?}").contains(subject.secret()));
    // agent-secret holds no exchange grant.
    let not_allowed = h.dpop_source("agent-secret");
    let e = not_allowed
        .exchange(Exchange::new(subject.secret()))
        .await
        .unwrap_err();
    assert!(e.is_oauth(OAuthErrorCode::UnauthorizedClient), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_for_a_biscuit_and_narrow_it_offline() {
    use mandate_client::biscuit::{attenuate, inspect, Attenuation, TOKEN_TYPE};
    let h = Harness::start().await;
    let agent = h.dpop_source("agent-secret");
    let relay = h.dpop_source("relay");
    let subject = agent
        .client_credentials(Some(API), Some("read write"))
        .await
        .unwrap();
    let biscuit = relay
        .exchange(
            Exchange::new(subject.secret())
                .resource(API)
                .scope("read")
                .biscuit(),
        )
        .await
        .unwrap();
    assert_eq!(biscuit.issued_token_type(), Some(TOKEN_TYPE));
    assert_eq!(
        biscuit.token_type(),
        TokenType::DPoP,
        "bound to the relay's key"
    );
    // A JWT for the same exchange is a different cache entry.
    let jwt = relay
        .exchange(Exchange::new(subject.secret()).resource(API).scope("read"))
        .await
        .unwrap();
    assert_eq!(jwt.issued_token_type(), Some(AT));
    let narrowed = attenuate(
        biscuit.secret(),
        &Attenuation {
            tools: vec!["search".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let blocks = inspect(&narrowed).unwrap();
    assert!(blocks[0].contains("client(\"relay\")"), "{}", blocks[0]);
    assert!(blocks[1].contains("tool"), "{}", blocks[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorized_client_through_the_gateway() {
    let h = Harness::start().await;
    let base = format!("{ISSUER}/agents/echo");
    let client = AuthorizedClient::new(h.dpop_source("agent-secret"))
        .target(&base, API, Some("read"))
        .unwrap();
    let r = client
        .send(client.get(&format!("{base}/hello?q=1")).build().unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = client
        .send(
            client
                .post(&format!("{base}/tasks"))
                .json(&json!({"task": "summarise"}))
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let seen = h.upstream.all();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/hello?q=1");
    assert_eq!(seen[0].headers["x-mandate-client-id"], "agent-secret");
    assert_eq!(seen[1].body, br#"{"task":"summarise"}"#);
    assert_eq!(
        h.count("token.issued", "agent-secret").await,
        1,
        "one token for both calls"
    );
    // No target, no token: nothing is sent.
    let e = client
        .send(client.get("http://elsewhere.test/x").build().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoTarget(_)), "{e}");
    assert!(client
        .send(
            client
                .get(&format!("{ISSUER}/agents/echoes"))
                .build()
                .unwrap()
        )
        .await
        .is_err());
    // Acting for agent-secret: the relay's calls carry an exchanged token.
    let subject = client
        .source()
        .client_credentials(Some(API), Some("read"))
        .await
        .unwrap();
    let relay = AuthorizedClient::new(h.dpop_source("relay"))
        .target(&base, API, Some("read"))
        .unwrap();
    let r = relay
        .on_behalf_of(subject.secret())
        .send(relay.get(&format!("{base}/delegated")).build().unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let last = h.upstream.all().pop().unwrap();
    assert_eq!(last.headers["x-mandate-subject"], "agent-secret");
    assert_eq!(last.headers["x-mandate-client-id"], "relay");
    assert_eq!(last.headers["x-mandate-actor-chain"], "relay");
    // A token without the route's scope: the gateway's refusal comes back
    // as a response, not an error.
    let writer = AuthorizedClient::new(h.dpop_source("agent-secret"))
        .target(&base, API, Some("write"))
        .unwrap();
    let r = writer
        .send(writer.get(&format!("{base}/x")).build().unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(h.upstream.all().len(), 3);
}

/// A resource server that demands its own DPoP nonce (RFC 9449 §9): the
/// client retries once with it, body and all, and remembers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_server_nonce_challenge_is_retried_once() {
    let h = Harness::start().await;
    let rs = Upstream::start(Arc::new(|seen: &Seen, addr| {
        let proof = seen
            .headers
            .get("dpop")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let token = seen.headers["authorization"]
            .to_str()
            .unwrap()
            .strip_prefix("DPoP ")
            .unwrap()
            .to_owned();
        let url = format!("http://{addr}{}", seen.path.split('?').next().unwrap());
        let nonces = vec!["rs-nonce-1".to_owned()];
        let ctx = mandate_jose::dpop::DpopContext {
            method: &seen.method,
            url: &url,
            now: mandate_types::Clock::now(&mandate_types::SystemClock),
            max_age: 300,
            leeway: 30,
            access_token: Some(&token),
            nonces: Some(&nonces),
        };
        match mandate_jose::dpop::verify_proof(&proof, &ctx) {
            Ok(_) => (StatusCode::OK, seen.body.clone()).into_response(),
            Err(mandate_jose::dpop::DpopError::Nonce) => (
                StatusCode::UNAUTHORIZED,
                [
                    (
                        "www-authenticate",
                        r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof""#,
                    ),
                    ("dpop-nonce", "rs-nonce-1"),
                ],
            )
                .into_response(),
            Err(e) => (StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
        }
    }))
    .await;
    let client = AuthorizedClient::new(h.dpop_source("agent-secret"))
        .target(&rs.url(), API, Some("read"))
        .unwrap();
    let r = client
        .send(
            client
                .post(&format!("{}/do?x=1", rs.url()))
                .body("payload")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "payload");
    assert_eq!(rs.all().len(), 2, "one challenge, one retry");
    // Remembered: the next request goes through at once.
    let r = client
        .send(client.get(&format!("{}/again", rs.url())).build().unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(rs.all().len(), 3);
}

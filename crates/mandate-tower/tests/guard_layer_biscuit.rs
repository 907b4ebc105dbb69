//! The guard layer accepts Biscuits from its configured root keys and runs
//! every block's checks against each request, as the gateway does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;

use ed25519_dalek::pkcs8::EncodePrivateKey;
use http::{Request, StatusCode};
use mandate_biscuit::{attenuate, mint, Attenuation, Grant, RootKey, RootKeys};
use mandate_tower::keys::StaticKeys;
use mandate_tower::{
    Guard, GuardLayer, NoRevocation, ProtectedResource, Protocol, StaticRoots, TokenVerifier,
    TrustedIssuer,
};
use mandate_types::{FixedClock, ScopeSet};
use tower::ServiceExt as _;

const ISSUER: &str = "https://mandate.test";
const API: &str = "https://api.example.com";
const NOW: i64 = 1_800_000_000;

fn root() -> RootKey {
    let der = ed25519_dalek::SigningKey::from_bytes(&[5; 32])
        .to_pkcs8_der()
        .unwrap();
    RootKey::from_ed25519_pkcs8("root-1", der.as_bytes()).unwrap()
}

fn biscuit(root: &RootKey, scope: &str) -> String {
    let scopes = ScopeSet::parse(scope).unwrap();
    mint(
        root,
        &Grant {
            issuer: ISSUER,
            subject: "alice",
            client_id: "agent",
            audience: API,
            scopes: &scopes,
            token_id: "t1",
            expires_at: NOW + 600,
            actors: &[],
            jkt: None,
        },
    )
    .unwrap()
}

async fn call(app: &axum::Router, method: &str, token: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri("/things/1")
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (resp.status(), challenge)
}

#[tokio::test]
async fn the_layer_runs_every_block() {
    let root = root();
    let verifier = TokenVerifier::new(
        [TrustedIssuer {
            issuer: ISSUER.into(),
            require_at_jwt: true,
        }],
        Arc::new(StaticKeys(HashMap::new())),
        Arc::new(NoRevocation),
        30,
    )
    .with_biscuit_roots(Arc::new(StaticRoots(Arc::new(RootKeys::new([
        &root.published()
    ])))));
    let resource = ProtectedResource {
        resource: API.into(),
        resource_metadata: format!("{ISSUER}/.well-known/oauth-protected-resource"),
        public_origin: ISSUER.into(),
        protocol: Protocol::Http,
        scopes: ScopeSet::parse("read").unwrap(),
        operations: HashMap::new(),
        public: false,
        mcp: None,
    };
    let app = axum::Router::new()
        .fallback(|| async { "ok" })
        .layer(GuardLayer::new(
            Arc::new(Guard::new(verifier)),
            resource,
            Arc::new(FixedClock::new(NOW)),
        ));

    let token = biscuit(&root, "read write");
    assert_eq!(call(&app, "POST", &token).await.0, StatusCode::OK);
    // Narrowed offline to reads: a POST is refused, naming the check.
    let get_only = attenuate(
        &token,
        &Attenuation {
            datalog: Some(r#"check if http_method("GET");"#.into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(call(&app, "GET", &get_only).await.0, StatusCode::OK);
    let (s, challenge) = call(&app, "POST", &get_only).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(challenge.contains("http_method"), "{challenge}");
    // Missing the route's scope: the standard insufficient_scope.
    let (s, challenge) = call(&app, "GET", &biscuit(&root, "write")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(challenge.contains("scope=\"read\""), "{challenge}");
    // Another root key: invalid_token.
    let other = {
        let der = ed25519_dalek::SigningKey::from_bytes(&[6; 32])
            .to_pkcs8_der()
            .unwrap();
        RootKey::from_ed25519_pkcs8("root-2", der.as_bytes()).unwrap()
    };
    let (s, challenge) = call(&app, "GET", &biscuit(&other, "read")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(challenge.contains("invalid_token"), "{challenge}");
}

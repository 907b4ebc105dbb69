//! An A2A agent that embeds Mandate's guard.
//!
//! The [`GuardLayer`] does what every call needs: a valid token from a trusted
//! issuer, for this agent's audience, with the agent's base scope, plus the
//! extra scope `SendMessage` needs. The handler then makes the finer,
//! per-skill decision only the agent can make: which skill a message asks for
//! is in the message, so the handler reads the verified token from the
//! request extensions and checks the skill's own scope.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::Extension;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use mandate_tower::{
    A2aOperation, Guard, GuardLayer, ProtectedResource, Protocol, VerifiedAccessToken,
};
use mandate_types::{Clock, Scope, ScopeSet};
use serde_json::{json, Value};

/// The scope each skill needs beyond `SendMessage`'s.
pub fn skill_scopes() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("submit-expense", "expense:submit"),
        ("list-expenses", "expense:read"),
    ])
}

/// The agent's policy: `expense:read` for anything, `expense:submit` to send messages.
pub fn policy(audience: &str, metadata_url: &str) -> ProtectedResource {
    let scope = |s: &str| ScopeSet::parse(s).unwrap_or_default();
    ProtectedResource {
        resource: audience.to_owned(),
        resource_metadata: metadata_url.to_owned(),
        public_origin: "http://127.0.0.1:9001".to_owned(),
        protocol: Protocol::A2a,
        scopes: scope("expense:read"),
        operations: HashMap::from([(A2aOperation::SendMessage, scope("expense:submit"))]),
        public: false,
        mcp: None,
    }
}

/// The agent's router, guarded.
pub fn app(guard: Arc<Guard>, resource: ProtectedResource, clock: Arc<dyn Clock>) -> Router {
    let card = json!({
        "name": "Expense agent",
        "description": "Submits and lists expenses",
        "version": "1.0.0",
        "supportedInterfaces": [{"url": "http://127.0.0.1:9001/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
        "capabilities": {"streaming": false},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [
            {"id": "submit-expense", "name": "Submit", "description": "Submit an expense", "tags": ["expense"]},
            {"id": "list-expenses", "name": "List", "description": "List expenses", "tags": ["expense"]}
        ]
    });
    let guarded = Router::new()
        .route("/", post(jsonrpc))
        .layer(GuardLayer::new(guard, resource, clock));
    Router::new()
        .route(
            "/.well-known/agent-card.json",
            get(move || async move { Json(card) }),
        )
        .merge(guarded)
}

async fn jsonrpc(
    Extension(token): Extension<Arc<VerifiedAccessToken>>,
    operation: Option<Extension<A2aOperation>>,
    Json(request): Json<Value>,
) -> impl IntoResponse {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    // The skill a message asks for, from its metadata (the agent's own convention).
    let skill = request
        .pointer("/params/message/metadata/skill")
        .and_then(Value::as_str)
        .unwrap_or("list-expenses");
    if operation.map(|Extension(op)| op) == Some(A2aOperation::SendMessage) {
        let needed = skill_scopes().get(skill).copied();
        let allowed =
            needed.is_some_and(|s| Scope::parse(s).is_ok_and(|s| token.scope.contains(&s)));
        if !allowed {
            return Json(json!({
                "jsonrpc": "2.0", "id": id,
                "error": {"code": -32004, "message": "skill not permitted",
                          "data": {"skill": skill, "required_scope": needed}}
            }));
        }
    }
    Json(json!({
        "jsonrpc": "2.0", "id": id,
        "result": {"kind": "message", "role": "agent",
                   "parts": [{"kind": "text", "text": format!("{skill} done for {}", token.subject)}]}
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mandate_jose::{JwkSet, PrivateKeyDer, SigningAlg, SigningKey};
    use mandate_tower::keys::StaticKeys;
    use mandate_tower::{NoRevocation, TokenVerifier, TrustedIssuer};
    use mandate_types::{FixedClock, SystemClock};
    use tower::ServiceExt as _;

    const ISSUER: &str = "https://mandate.example";
    const AUD: &str = "https://expense-agent.example.com";

    fn setup() -> (Router, SigningKey, i64) {
        let key = SigningKey::from_private(
            SigningAlg::EdDSA,
            &PrivateKeyDer::generate(SigningAlg::EdDSA).unwrap(),
        )
        .unwrap();
        let keys = StaticKeys(
            [(
                ISSUER.to_owned(),
                Arc::new(JwkSet {
                    keys: vec![key.public_jwk().clone()],
                }),
            )]
            .into(),
        );
        let verifier = TokenVerifier::new(
            [TrustedIssuer {
                issuer: ISSUER.into(),
                require_at_jwt: true,
            }],
            Arc::new(keys),
            Arc::new(NoRevocation),
            30,
        );
        let now = SystemClock.now();
        let app = app(
            Arc::new(Guard::new(verifier)),
            policy(
                AUD,
                "https://gw.example/.well-known/oauth-protected-resource",
            ),
            Arc::new(FixedClock::new(now)),
        );
        (app, key, now)
    }

    async fn send(
        app: &Router,
        key: &SigningKey,
        now: i64,
        scope: &str,
        skill: &str,
    ) -> (u16, Value) {
        let token = key
            .sign("at+jwt", &json!({"iss": ISSUER, "sub": "alice", "aud": AUD, "exp": now + 60, "iat": now, "scope": scope, "client_id": "c"}))
            .unwrap();
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
                          "params": {"message": {"metadata": {"skill": skill}}}});
        let req = axum::http::Request::post("/")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn the_layer_and_the_agent_each_decide_their_part() {
        let (app, key, now) = setup();
        // The layer: SendMessage needs expense:submit.
        assert_eq!(
            send(&app, &key, now, "expense:read", "list-expenses")
                .await
                .0,
            403
        );
        // The agent: the skill's own scope.
        let (s, body) = send(
            &app,
            &key,
            now,
            "expense:read expense:submit",
            "submit-expense",
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(
            body["result"]["parts"][0]["text"],
            "submit-expense done for alice"
        );
        let (s, body) = send(
            &app,
            &key,
            now,
            "expense:read expense:submit",
            "delete-everything",
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(body["error"]["data"]["skill"], "delete-everything");
        // The card is public.
        let resp = app
            .clone()
            .oneshot(
                axum::http::Request::get("/.well-known/agent-card.json")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
}

//! RFC 8693 token exchange: each hop narrower, the chain in `act`, the
//! policy of who may act for whom, and the chain at the upstream.

use mandate_testkit::{for_each_backend, TestDb};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::upstream::Upstream;
use crate::common::*;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AT: &str = "urn:ietf:params:oauth:token-type:access_token";

fn clients(up: &Upstream) -> &'static str {
    Box::leak(
        format!(
            r#"
[[clients]]
client_id = "orchestrator"
grant_types = ["client_credentials"]
scopes = ["read", "write"]
resources = ["{API}"]
secret_env = "AGENT_SECRET"

[[clients]]
client_id = "research"
grant_types = ["{EXCHANGE}"]
scopes = ["read", "write"]
secret_env = "AGENT_SECRET"
may_act_for = ["orchestrator"]

[[clients]]
client_id = "payment"
grant_types = ["{EXCHANGE}"]
scopes = ["read", "write"]
resources = ["{API}"]
secret_env = "AGENT_SECRET"
may_act_for = ["research"]

[[gateway.routes]]
path = "/agents/payment"
upstream = "{}"
resource = "{API}"
scopes = ["read"]
"#,
            up.url()
        )
        .into_boxed_str(),
    )
}

async fn exchange(
    h: &Harness,
    client: &str,
    subject: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut form = vec![
        ("grant_type", EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", AT),
    ];
    form.extend_from_slice(extra);
    h.post_form("/token", &form, Some((client, SECRET))).await
}

async fn three_hops_each_narrower(db: &TestDb) {
    let up = Upstream::start().await;
    let h = Harness::start_with(db, clients(&up), &[]).await;
    let (_, _, meta) = h.get_json("/.well-known/oauth-authorization-server").await;
    assert!(meta["grant_types_supported"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g == EXCHANGE));
    let (s, _, t0) = h.token_basic("orchestrator", &[]).await;
    assert_eq!(s, StatusCode::OK, "{t0}");
    let t0 = t0["access_token"].as_str().unwrap().to_owned();

    // Hop 1: the research agent acts for the orchestrator, read only.
    let (s, _, r1) = exchange(&h, "research", &t0, &[("scope", "read"), ("resource", API)]).await;
    assert_eq!(s, StatusCode::OK, "{r1}");
    assert_eq!(r1["issued_token_type"], AT);
    assert_eq!(r1["scope"], "read");
    let t1 = r1["access_token"].as_str().unwrap().to_owned();
    let c1 = h.verify_independently(&t1, API).await;
    assert_eq!(
        c1["sub"], "orchestrator",
        "sub stays the original principal"
    );
    assert_eq!(c1["client_id"], "research");
    assert_eq!(
        c1["act"],
        json!({"sub": "research", "client_id": "research"})
    );
    assert!(
        c1["exp"].as_i64() <= claims_of(&t0)["exp"].as_i64(),
        "never outlives its subject"
    );

    // Hop 2: the payment agent acts for research; asking for more than was given is refused.
    assert_oauth_error(
        &exchange(&h, "payment", &t1, &[("scope", "read write")]).await,
        400,
        "invalid_scope",
    );
    let (s, _, r2) = exchange(&h, "payment", &t1, &[]).await;
    assert_eq!(s, StatusCode::OK, "{r2}");
    assert_eq!(r2["scope"], "read");
    let t2 = r2["access_token"].as_str().unwrap().to_owned();
    let c2 = h.verify_independently(&t2, API).await;
    assert_eq!(c2["act"]["sub"], "payment");
    assert_eq!(
        c2["act"]["act"]["sub"], "research",
        "the earlier chain is nested"
    );

    // Who may act for whom: payment may not act for the orchestrator directly,
    // and the orchestrator (no exchange grant) may not exchange at all.
    assert_oauth_error(
        &exchange(&h, "payment", &t0, &[]).await,
        400,
        "invalid_grant",
    );
    assert_oauth_error(
        &exchange(&h, "orchestrator", &t1, &[]).await,
        400,
        "unauthorized_client",
    );
    // Bad subject tokens, and a resource the actor may not use.
    assert_oauth_error(
        &exchange(&h, "research", "garbage", &[]).await,
        400,
        "invalid_request",
    );
    assert_oauth_error(
        &exchange(&h, "payment", &t1, &[("resource", OTHER)]).await,
        400,
        "invalid_target",
    );
    let no_type = h
        .post_form(
            "/token",
            &[("grant_type", EXCHANGE), ("subject_token", &t0)],
            Some(("research", SECRET)),
        )
        .await;
    assert_oauth_error(&no_type, 400, "invalid_request");

    // The gateway passes the verified chain to the upstream.
    let resp = h
        .http
        .get(format!("{}/agents/payment/x", h.base))
        .bearer_auth(&t2)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = up.last();
    assert_eq!(seen.headers["x-mandate-subject"], "orchestrator");
    assert_eq!(seen.headers["x-mandate-client-id"], "payment");
    assert_eq!(seen.headers["x-mandate-actor-chain"], "payment, research");

    // Revoking the subject token stops further exchanges from it, and
    // revokes the tokens already exchanged from it, at every hop below.
    let active = |t: String| {
        let h = &h;
        async move {
            let (s, _, body) = h
                .post_form("/introspect", &[("token", &t)], Some(("payment", SECRET)))
                .await;
            assert_eq!(s, StatusCode::OK, "{body}");
            body["active"] == true
        }
    };
    assert!(active(t1.clone()).await && active(t2.clone()).await);
    assert_eq!(
        h.post_form("/revoke", &[("token", &t0)], Some(("orchestrator", SECRET)))
            .await
            .0,
        StatusCode::OK
    );
    assert_oauth_error(
        &exchange(&h, "research", &t0, &[]).await,
        400,
        "invalid_request",
    );
    assert!(!active(t1.clone()).await, "hop 1 revoked with its subject");
    assert!(
        !active(t2.clone()).await,
        "hop 2 revoked with its subject's subject"
    );
    assert_oauth_error(
        &exchange(&h, "payment", &t1, &[]).await,
        400,
        "invalid_request",
    );
    let events = h.audit().await;
    assert!(events.iter().any(|e| e.event.kind == "token.exchanged"
        && e.event.reason.as_deref().is_some_and(
            |r| r.starts_with("acting chain: payment <- research; exchanged from jti ")
        )));
}
for_each_backend!(three_hops_each_narrower, three_hops_each_narrower);

/// Random exchange sequences: no token ever holds a scope or lifetime its
/// subject did not, and the depth limit holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_exchange_sequences_only_narrow() {
    use rand::{Rng as _, SeedableRng as _};
    let up = Upstream::start().await;
    let db = TestDb::sqlite();
    let extra: &'static str = Box::leak(
        format!(
            "{}\n[[clients]]\nclient_id = \"relay\"\ngrant_types = [\"{EXCHANGE}\"]\nscopes = [\"read\", \"write\", \"admin\"]\nsecret_env = \"AGENT_SECRET\"\nmay_act_for = [\"*\"]\n",
            clients(&up)
        )
        .into_boxed_str(),
    );
    let h = Harness::start_with(&db, extra, &[("MANDATE_TEST_UNUSED", "")]).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(8693);
    let all = ["read", "write", "admin"];
    for _ in 0..20 {
        let mut token = h.token_basic("orchestrator", &[]).await.2["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut depth = 0;
        for _ in 0..10 {
            let prev = claims_of(&token);
            let prev_scope: Vec<String> = prev["scope"]
                .as_str()
                .unwrap()
                .split(' ')
                .map(str::to_owned)
                .collect();
            let ask: Vec<&str> = all.iter().copied().filter(|_| rng.gen_bool(0.5)).collect();
            let ask = ask.join(" ");
            let mut extra = vec![];
            if !ask.is_empty() {
                extra.push(("scope", ask.as_str()));
            }
            let (s, _, body) = exchange(&h, "relay", &token, &extra).await;
            let within = ask
                .split(' ')
                .filter(|s| !s.is_empty())
                .all(|s| prev_scope.iter().any(|p| p == s));
            if depth == 5 {
                assert_eq!(s, StatusCode::BAD_REQUEST, "depth limit (5): {body}");
                break;
            }
            if !within {
                assert_eq!(body["error"], "invalid_scope", "{ask} over {prev_scope:?}");
                continue;
            }
            assert_eq!(s, StatusCode::OK, "{body}");
            token = body["access_token"].as_str().unwrap().to_owned();
            depth += 1;
            let next = claims_of(&token);
            for s in next["scope"].as_str().unwrap().split(' ') {
                assert!(prev_scope.iter().any(|p| p == s), "{s} was not held before");
            }
            assert!(next["exp"].as_i64() <= prev["exp"].as_i64());
            assert_eq!(next["aud"], prev["aud"]);
        }
    }
}

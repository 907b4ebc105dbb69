//! Other trust domains: a trusted issuer's ID-JAGs and JWT grants redeemed
//! with the `jwt-bearer` grant, its ID tokens as token exchange subjects,
//! and grants this server issues for a peer (identity chaining, ID-JAG).

use mandate_jose::SigningAlg;
use mandate_testkit::{for_each_backend, TestDb};
use mandate_types::Clock as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const IDP: &str = "https://idp.example";
const PARTNER: &str = "https://as.partner.example";

fn config(idp: &ClientKey) -> &'static str {
    let jwk_toml = json_to_toml_inline(&serde_json::to_string(&idp.public()).unwrap());
    Box::leak(
        format!(
            r#"
[[clients]]
client_id = "mcp-client"
grant_types = ["{JWT_BEARER}", "{EXCHANGE}", "client_credentials"]
scopes = ["read", "write"]
resources = ["{API}"]
secret_env = "AGENT_SECRET"

[[clients]]
client_id = "stranger"
grant_types = ["{JWT_BEARER}"]
scopes = ["read"]
resources = ["{API}"]
secret_env = "AGENT_SECRET"

[[trust.issuers]]
issuer = "{IDP}"
jwks = {{ keys = [ {jwk_toml} ] }}
clients = ["mcp-client"]

[[trust.peers]]
issuer = "{PARTNER}"
client_ids = {{ "mcp-client" = "partner-id-of-mcp-client" }}
"#
        )
        .into_boxed_str(),
    )
}

fn signed(key: &ClientKey, typ: &str, claims: &Value) -> String {
    key.key.sign(typ, claims).unwrap()
}

async fn redeem(
    h: &Harness,
    client: &str,
    assertion: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut form = vec![("grant_type", JWT_BEARER), ("assertion", assertion)];
    form.extend_from_slice(extra);
    h.post_form("/token", &form, Some((client, SECRET))).await
}

async fn id_jags_and_jwt_grants_are_redeemed(db: &TestDb) {
    let idp = ClientKey::new(SigningAlg::EdDSA);
    let h = Harness::start_with(db, config(&idp), &[]).await;
    let now = h.clock.now();
    let (_, _, meta) = h.get_json("/.well-known/oauth-authorization-server").await;
    assert!(meta["grant_types_supported"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g == JWT_BEARER));
    assert_eq!(
        meta["authorization_grant_profiles_supported"],
        json!(["urn:ietf:params:oauth:grant-profile:id-jag"])
    );
    let jag = |overrides: Value| {
        let mut claims = json!({
            "iss": IDP, "sub": "alice@idp", "aud": ISSUER, "client_id": "mcp-client",
            "jti": mandate_types::random_token(12), "iat": now, "exp": now + 300,
            "scope": "read", "resource": API,
        });
        for (k, v) in overrides.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        signed(&idp, "oauth-id-jag+jwt", &claims)
    };

    // An ID-JAG: an access token for the IdP's user, for this client, no refresh token.
    let grant = jag(json!({}));
    let (s, _, body) = redeem(&h, "mcp-client", &grant, &[]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.get("refresh_token").is_none());
    assert_eq!(body["scope"], "read", "the grant's scope is a ceiling");
    let claims = h
        .verify_independently(body["access_token"].as_str().unwrap(), API)
        .await;
    assert_eq!(claims["sub"], "alice@idp");
    assert_eq!(claims["client_id"], "mcp-client");
    let events = h.audit().await;
    assert!(events.iter().any(|e| e.event.kind == "token.issued"
        && e.event
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("id-jag from https://idp.example"))));

    // Single use, across replicas (the store).
    assert_oauth_error(
        &redeem(&h, "mcp-client", &grant, &[]).await,
        400,
        "invalid_grant",
    );

    // Each rule of ID-JAG §4.3 and RFC 7523 §3.
    let other_key = ClientKey::new(SigningAlg::EdDSA);
    let refused = [
        (
            "aud elsewhere",
            jag(json!({"aud": "https://elsewhere.example"})),
        ),
        (
            "aud of two",
            jag(json!({"aud": [ISSUER, "https://elsewhere.example"]})),
        ),
        ("another client", jag(json!({"client_id": "someone-else"}))),
        ("no client_id", jag(json!({"client_id": null}))),
        ("no jti", jag(json!({"jti": null}))),
        ("no sub", jag(json!({"sub": null}))),
        ("expired", jag(json!({"exp": now - 60, "iat": now - 400}))),
        (
            "untrusted issuer",
            jag(json!({"iss": "https://evil.example"})),
        ),
        (
            "foreign key",
            signed(
                &other_key,
                "oauth-id-jag+jwt",
                &json!({
            "iss": IDP, "sub": "alice@idp", "aud": ISSUER, "client_id": "mcp-client",
            "jti": "x1", "iat": now, "exp": now + 300}),
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                base64_url(&json!({"alg": "none", "typ": "oauth-id-jag+jwt"})),
                base64_url(
                    &json!({"iss": IDP, "sub": "a", "aud": ISSUER, "client_id": "mcp-client", "jti": "n", "exp": now + 60})
                )
            ),
        ),
    ];
    for (what, assertion) in refused {
        let got = redeem(&h, "mcp-client", &assertion, &[]).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{what}: {}", got.2);
        assert_eq!(got.2["error"], "invalid_grant", "{what}: {}", got.2);
    }
    // A client the issuer's entry does not name may not present its grants.
    let for_stranger = jag(json!({"client_id": "stranger"}));
    assert_oauth_error(
        &redeem(&h, "stranger", &for_stranger, &[]).await,
        400,
        "invalid_grant",
    );
    // Narrowing only: more than the grant states is invalid_scope.
    assert_oauth_error(
        &redeem(
            &h,
            "mcp-client",
            &jag(json!({})),
            &[("scope", "read write")],
        )
        .await,
        400,
        "invalid_scope",
    );
    // A plain RFC 7523 JWT grant (identity chaining) needs no client_id.
    let chained = signed(
        &idp,
        "JWT",
        &json!({
            "iss": IDP, "sub": "bob@idp", "aud": format!("{ISSUER}/token"),
            "jti": "chain-1", "iat": now, "exp": now + 120,
        }),
    );
    let (s, _, body) = redeem(
        &h,
        "mcp-client",
        &chained,
        &[("resource", API), ("scope", "write")],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        h.verify_independently(body["access_token"].as_str().unwrap(), API)
            .await["sub"],
        "bob@idp"
    );
}

for_each_backend!(
    id_jags_and_jwt_grants_are_redeemed,
    id_jags_and_jwt_grants_are_redeemed
);

fn base64_url(v: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_id_token_can_be_exchanged_and_grants_issued_for_a_peer() {
    let idp = ClientKey::new(SigningAlg::ES256);
    let db = TestDb::sqlite();
    let h = Harness::start_with(&db, config(&idp), &[]).await;
    let now = h.clock.now();

    // The IdP's ID token for mcp-client becomes an access token here.
    let id_token = signed(
        &idp,
        "JWT",
        &json!({
            "iss": IDP, "sub": "carol@idp", "aud": "mcp-client", "iat": now, "exp": now + 600,
            "nonce": "n",
        }),
    );
    let exchange =
        |subject: String, subject_type: &'static str, extra: Vec<(&'static str, String)>| {
            let h = &h;
            async move {
                let mut form: Vec<(&str, String)> = vec![
                    ("grant_type", EXCHANGE.into()),
                    ("subject_token", subject),
                    ("subject_token_type", subject_type.into()),
                ];
                form.extend(extra);
                let refs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
                h.post_form("/token", &refs, Some(("mcp-client", SECRET)))
                    .await
            }
        };
    let (s, _, body) = exchange(
        id_token.clone(),
        ID_TOKEN,
        vec![("resource", API.into()), ("scope", "read".into())],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let claims = h
        .verify_independently(body["access_token"].as_str().unwrap(), API)
        .await;
    assert_eq!(claims["sub"], "carol@idp");
    assert_eq!(claims["act"]["sub"], "mcp-client");
    assert!(
        claims["exp"].as_i64().unwrap() <= now + 600,
        "never outlives the ID token"
    );
    // An ID token for another client is not this client's to exchange.
    let not_ours = signed(
        &idp,
        "JWT",
        &json!({"iss": IDP, "sub": "carol@idp", "aud": "someone-else", "iat": now, "exp": now + 600}),
    );
    assert_oauth_error(
        &exchange(not_ours, ID_TOKEN, vec![("resource", API.into())]).await,
        400,
        "invalid_request",
    );

    // Outbound: an ID-JAG for the partner's authorization server.
    let (_, _, meta) = h.get_json("/.well-known/oauth-authorization-server").await;
    assert_eq!(
        meta["identity_chaining_requested_token_types_supported"],
        json!([JWT, ID_JAG])
    );
    let (s, _, body) = exchange(
        id_token.clone(),
        ID_TOKEN,
        vec![
            ("requested_token_type", ID_JAG.into()),
            ("audience", PARTNER.into()),
            ("resource", "https://api.partner.example".into()),
            ("scope", "partner:read".into()),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["issued_token_type"], ID_JAG);
    assert_eq!(body["token_type"], "N_A");
    let jag = body["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(jag).unwrap();
    assert_eq!(header.typ.as_deref(), Some("oauth-id-jag+jwt"));
    let c = claims_of(jag);
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["aud"], PARTNER);
    assert_eq!(c["sub"], "carol@idp");
    assert_eq!(
        c["client_id"], "partner-id-of-mcp-client",
        "the client's id at the peer"
    );
    assert_eq!(c["resource"], "https://api.partner.example");
    assert_eq!(c["scope"], "partner:read");
    assert!(c["exp"].as_i64().unwrap() <= now + 300 && c["jti"].is_string());
    // Signed with a published key.
    let (_, _, jwks) = h.get_json("/jwks.json").await;
    assert!(jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["kid"] == header.kid.clone().unwrap()));

    // Identity chaining: a JWT grant named by resource alone, from the client's own access token.
    let (_, _, own) = h.token_basic("mcp-client", &[("resource", API)]).await;
    let (s, _, body) = exchange(
        own["access_token"].as_str().unwrap().into(),
        "urn:ietf:params:oauth:token-type:access_token",
        vec![
            ("requested_token_type", JWT.into()),
            ("resource", PARTNER.into()),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["issued_token_type"], JWT);
    assert_eq!(
        claims_of(body["access_token"].as_str().unwrap())["aud"],
        PARTNER
    );
    // An authorization server this one does not chain to: invalid_target.
    let (s, _, body) = exchange(
        id_token,
        ID_TOKEN,
        vec![
            ("requested_token_type", ID_JAG.into()),
            ("audience", "https://as.unknown.example".into()),
        ],
    )
    .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target"))
    );
    assert!(h
        .audit()
        .await
        .iter()
        .any(|e| e.event.kind == "grant.issued" && e.event.audience.as_deref() == Some(PARTNER)));
}

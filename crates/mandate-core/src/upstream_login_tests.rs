use std::sync::Arc;

use mandate_jose::{PrivateKeyDer, SigningAlg, SigningKey};
use serde_json::{json, Value};

use super::*;

const NOW: i64 = 1_800_000_000;

fn provider() -> UpstreamProvider {
    UpstreamProvider {
        id: "corp".into(),
        name: "Corp".into(),
        issuer: "https://idp.example".into(),
        client_id: "mandate".into(),
        client_secret: Arc::new(ClientSecret::new("s3cret:with spaces".into())),
        scopes: DEFAULT_SCOPES.into(),
        authorization_endpoint: None,
        token_endpoint: None,
        jwks_uri: None,
        claim_username: None,
    }
}

fn key() -> SigningKey {
    SigningKey::from_private(
        SigningAlg::ES256,
        &PrivateKeyDer::generate(SigningAlg::ES256).unwrap(),
    )
    .unwrap()
}

fn claims(overrides: Value) -> Value {
    let mut c = json!({
        "iss": "https://idp.example",
        "sub": "248289761001",
        "aud": "mandate",
        "exp": NOW + 300,
        "iat": NOW,
        "nonce": "n-0S6_WzA2Mj",
        "preferred_username": "jane.doe",
        "email": "jane@example.com",
    });
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn check(
    k: &SigningKey,
    token: &str,
    p: &UpstreamProvider,
) -> Result<UpstreamIdentity, IdTokenError> {
    verify_id_token(
        token,
        &[k.public_jwk().clone()],
        &IdTokenExpectations {
            provider: p,
            nonce: "n-0S6_WzA2Mj",
            now: NOW,
            leeway: 5,
        },
    )
}

fn with(overrides: Value) -> Result<UpstreamIdentity, IdTokenError> {
    let k = key();
    let token = k.sign("JWT", &claims(overrides)).unwrap();
    check(&k, &token, &provider())
}

#[test]
fn a_good_id_token_names_its_subject() {
    let id = with(json!({})).unwrap();
    assert_eq!(id.subject, "248289761001");
    assert_eq!(id.issuer, "https://idp.example");
    assert_eq!(id.suggested_username, "jane.doe");
    let id = with(json!({"preferred_username": null})).unwrap();
    assert_eq!(id.suggested_username, "jane@example.com");
    let id = with(json!({"preferred_username": null, "email": null})).unwrap();
    assert_eq!(id.suggested_username, "248289761001");
    // Several audiences need azp = this client.
    assert!(with(json!({"aud": ["mandate", "other"], "azp": "mandate"})).is_ok());
}

#[test]
fn each_check_of_section_3_1_3_7_refuses() {
    let cases = [
        (
            json!({"iss": "https://evil.example"}),
            IdTokenError::WrongIssuer,
        ),
        (json!({"aud": "someone-else"}), IdTokenError::WrongAudience),
        (json!({"aud": null}), IdTokenError::WrongAudience),
        (
            json!({"aud": ["mandate", "other"]}),
            IdTokenError::WrongAuthorizedParty,
        ),
        (json!({"azp": "other"}), IdTokenError::WrongAuthorizedParty),
        (json!({"exp": NOW - 10}), IdTokenError::Expired),
        (json!({"exp": null}), IdTokenError::Expired),
        (json!({"iat": null}), IdTokenError::BadIssuedAt),
        (json!({"iat": NOW + 60}), IdTokenError::BadIssuedAt),
        (json!({"iat": NOW - 3600}), IdTokenError::BadIssuedAt),
        (json!({"nonce": "other"}), IdTokenError::WrongNonce),
        (json!({"nonce": null}), IdTokenError::WrongNonce),
        (json!({"sub": ""}), IdTokenError::NoSubject),
        (json!({"sub": null}), IdTokenError::NoSubject),
    ];
    for (overrides, want) in cases {
        assert_eq!(with(overrides.clone()), Err(want), "{overrides}");
    }
}

#[test]
fn signature_key_and_algorithm_are_checked() {
    let k = key();
    let other = key();
    let token = k.sign("JWT", &claims(json!({}))).unwrap();
    assert_eq!(
        check(&other, &token, &provider()),
        Err(IdTokenError::UnknownKey)
    );
    let forged = other.sign("JWT", &claims(json!({}))).unwrap();
    let (head, _) = token.rsplit_once('.').unwrap();
    let (_, sig) = forged.rsplit_once('.').unwrap();
    assert_eq!(
        check(&k, &format!("{head}.{sig}"), &provider()),
        Err(IdTokenError::BadSignature)
    );
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(claims(json!({})).to_string())
    );
    assert_eq!(
        check(&k, &none, &provider()),
        Err(IdTokenError::AlgorithmNotAllowed)
    );
}

#[test]
fn the_authorization_url_carries_state_nonce_and_s256() {
    let p = provider();
    let m = ProviderMetadata::from_discovery(
        &p,
        br#"{"issuer":"https://idp.example","authorization_endpoint":"https://idp.example/auth",
             "token_endpoint":"https://idp.example/token","jwks_uri":"https://idp.example/jwks"}"#,
    )
    .unwrap();
    let login = UpstreamLoginState::new("corp", "binding", "pending", "https://as/cb".into());
    let url = url::Url::parse(&authorization_url(&p, &m, &login)).unwrap();
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "mandate");
    assert_eq!(q["state"], login.state);
    assert_eq!(q["nonce"], login.nonce);
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(crate::authorize::pkce_matches(
        &login.verifier,
        &q["code_challenge"]
    ));
    assert_eq!(q["scope"], "openid email profile");
}

#[test]
fn discovery_must_name_the_configured_issuer() {
    let p = provider();
    assert!(ProviderMetadata::from_discovery(
        &p,
        br#"{"issuer":"https://evil.example","authorization_endpoint":"https://a/","token_endpoint":"https://a/","jwks_uri":"https://a/"}"#
    )
    .is_err());
    assert!(ProviderMetadata::from_discovery(
        &p,
        br#"{"issuer":"https://idp.example","authorization_endpoint":"https://a/","token_endpoint":"https://a/","jwks_uri":"https://a/","code_challenge_methods_supported":["plain"]}"#
    )
    .is_err());
}

#[test]
fn client_secret_basic_form_encodes_both_parts() {
    let p = provider();
    let login = UpstreamLoginState::new("corp", "b", "p", "https://as/cb".into());
    let (header, body) = token_request(&p, &login, "the-code");
    let encoded = header.expose().strip_prefix("Basic ").unwrap();
    let decoded = String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap();
    assert_eq!(decoded, "mandate:s3cret%3Awith+spaces");
    assert!(body.contains("code_verifier="));
    assert!(body.contains("grant_type=authorization_code"));
    assert!(!format!("{login:?}").contains(&login.verifier));
}

#[test]
fn local_usernames_are_safe() {
    assert_eq!(local_username("jane doe/ü", 64), "jane_doe__");
    assert_eq!(local_username("", 64), "user");
    assert_eq!(local_username(&"a".repeat(100), 64).len(), 64);
}

//! Every parser that reads what a caller sends, fed arbitrary input: each
//! answers `Ok` or `Err` and never panics, and nothing unsigned verifies.
//! Random bytes, and inputs shaped like the real thing (three base64url
//! segments of JSON-like text, `name=value&...` forms), so the parsers get
//! past their first check.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mandate_biscuit::RootKeys;
use mandate_core::form::FormParams;
use mandate_jose::{JwkSet, SigningAlg, UnverifiedJwt};
use mandate_types::{ClientId, ResourceUri, ScopeSet};
use proptest::prelude::*;
use serde_json::Value;

use crate::common::ClientKey;

/// JSON-ish text: braces, quotes, the header and claim names, numbers.
fn jsonish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("\"".to_owned()),
            Just(":".to_owned()),
            Just(",".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just("\"alg\"".to_owned()),
            Just("\"EdDSA\"".to_owned()),
            Just("\"ES256\"".to_owned()),
            Just("\"none\"".to_owned()),
            Just("\"HS256\"".to_owned()),
            Just("\"kid\"".to_owned()),
            Just("\"typ\"".to_owned()),
            Just("\"at+jwt\"".to_owned()),
            Just("\"iss\"".to_owned()),
            Just("\"exp\"".to_owned()),
            Just("\"act\"".to_owned()),
            Just("\"kty\"".to_owned()),
            Just("\"OKP\"".to_owned()),
            Just("\"keys\"".to_owned()),
            Just("1e999".to_owned()),
            Just("-1".to_owned()),
            Just("null".to_owned()),
            ".{0,12}".prop_map(|s: String| s),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn jws_parsing_never_panics_and_never_verifies_unsigned(
        header in jsonish(), claims in jsonish(), sig in ".{0,40}", raw in ".{0,200}"
    ) {
        let key = ClientKey::new(SigningAlg::EdDSA);
        let keys = [key.public()];
        // A real header for the key we verify with, so verification runs.
        let kid = keys[0].kid.clone().unwrap_or_default();
        let real_header = format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}"}}"#);
        let well_formed = format!("{}.{}.{}", b64(&real_header), b64(&claims), b64(&sig));
        prop_assert!(UnverifiedJwt::parse(&well_formed).is_ok());
        for token in [format!("{}.{}.{}", b64(&header), b64(&claims), b64(&sig)), raw, well_formed] {
            if let Ok(jwt) = UnverifiedJwt::parse(&token) {
                let _ = (jwt.kid(), jwt.typ(), jwt.alg());
                let _ = jwt.insecure_peek_claims::<Value>();
                prop_assert!(jwt.verify::<Value>(&keys).is_err(), "{token}");
            }
        }
    }

    #[test]
    fn jwks_parsing_never_panics(json in jsonish(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = JwkSet::parse(json.as_bytes());
        let _ = JwkSet::parse(&bytes);
    }

    #[test]
    fn form_parsing_never_panics(
        pairs in prop::collection::vec(("[a-z_%+=&]{0,8}", "[ -~%+&=]{0,16}"), 0..80),
        bytes in prop::collection::vec(any::<u8>(), 0..256)
    ) {
        let body = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        for body in [body.as_bytes(), &bytes] {
            if let Ok(form) = FormParams::parse(body) {
                for (name, _) in form.pairs() {
                    let _ = form.single(name);
                }
                let _ = form.required("grant_type");
            }
        }
    }

    #[test]
    fn identifiers_and_scopes_never_panic(raw in "\\PC{0,300}") {
        let _ = ClientId::parse(&raw);
        let _ = ResourceUri::parse(&raw);
        if let Ok(scopes) = ScopeSet::parse(&raw) {
            let _ = scopes.to_string();
        }
    }

    #[test]
    fn biscuit_and_rpc_bodies_never_panic(
        raw in "[A-Za-z0-9_-]{0,400}", body in jsonish(), bytes in prop::collection::vec(any::<u8>(), 0..256)
    ) {
        prop_assert!(RootKeys::new([]).verify(&raw).is_err());
        for body in [body.as_bytes(), &bytes] {
            let _ = mandate_tower::a2a::parse_jsonrpc(body);
            let _ = mandate_tower::mcp::parse_message(body);
        }
    }
}

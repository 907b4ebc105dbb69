//! RFC 8414 authorization server metadata. Only what is implemented is
//! advertised: a client that trusts this document never hits a 404.

use mandate_biscuit::PublishedRootKey;
use mandate_jose::SigningAlg;
use serde::Serialize;

use crate::authority::Authority;
use crate::registration::RegistrationMode;
use crate::Error;

/// The metadata document.
#[derive(Debug, Serialize)]
pub struct ServerMetadata {
    issuer: String,
    authorization_endpoint: String,
    pushed_authorization_request_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    registration_endpoint: Option<String>,
    introspection_endpoint: String,
    revocation_endpoint: String,
    scopes_supported: Vec<String>,
    response_types_supported: Vec<&'static str>,
    grant_types_supported: Vec<&'static str>,
    token_endpoint_auth_methods_supported: Vec<&'static str>,
    token_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
    introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    introspection_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
    revocation_endpoint_auth_methods_supported: Vec<&'static str>,
    revocation_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
    access_token_signing_alg_values_supported: Vec<&'static str>,
    code_challenge_methods_supported: Vec<&'static str>,
    dpop_signing_alg_values_supported: Vec<&'static str>,
    client_id_metadata_document_supported: bool,
    authorization_response_iss_parameter_supported: bool,
    /// ID-JAG: the grant profiles the `jwt-bearer` grant accepts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authorization_grant_profiles_supported: Vec<&'static str>,
    /// Identity chaining: the token types token exchange issues for peers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    identity_chaining_requested_token_types_supported: Vec<&'static str>,
    /// Not registered: the token types token exchange can issue.
    mandate_token_types_supported: Vec<&'static str>,
    /// Not registered: the root keys Mandate Biscuits are signed with, by
    /// `root_key_id` (see `mandate_biscuit`).
    biscuit_root_keys: Vec<PublishedRootKey>,
}

const AUTH_METHODS: [&str; 3] = [
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
];

/// The token endpoint also serves public clients (PKCE-bound codes).
const TOKEN_AUTH_METHODS: [&str; 4] = [
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "none",
];

impl Authority {
    /// The RFC 8414 document.
    pub async fn metadata(&self) -> Result<ServerMetadata, Error> {
        let s = &self.settings;
        let algs: Vec<&'static str> = SigningAlg::ALL.iter().map(|a| a.as_str()).collect();
        let trusts_issuers = !s.trust.issuers.is_empty();
        let chains = !s.trust.peers.is_empty();
        let mut grant_types = vec![
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ];
        if trusts_issuers {
            grant_types.push("urn:ietf:params:oauth:grant-type:jwt-bearer");
        }
        Ok(ServerMetadata {
            issuer: s.issuer.clone(),
            authorization_endpoint: s.endpoint("/authorize"),
            pushed_authorization_request_endpoint: s.endpoint("/par"),
            token_endpoint: s.endpoint("/token"),
            jwks_uri: s.endpoint("/jwks.json"),
            registration_endpoint: (s.registration.mode != RegistrationMode::Closed)
                .then(|| s.endpoint("/register")),
            introspection_endpoint: s.endpoint("/introspect"),
            revocation_endpoint: s.endpoint("/revoke"),
            scopes_supported: self
                .known_scopes()
                .await?
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            response_types_supported: vec!["code"],
            grant_types_supported: grant_types,
            token_endpoint_auth_methods_supported: TOKEN_AUTH_METHODS.to_vec(),
            token_endpoint_auth_signing_alg_values_supported: algs.clone(),
            introspection_endpoint_auth_methods_supported: AUTH_METHODS.to_vec(),
            introspection_endpoint_auth_signing_alg_values_supported: algs.clone(),
            revocation_endpoint_auth_methods_supported: AUTH_METHODS.to_vec(),
            revocation_endpoint_auth_signing_alg_values_supported: algs,
            access_token_signing_alg_values_supported: vec![self.keys.settings().alg.as_str()],
            code_challenge_methods_supported: vec!["S256"],
            client_id_metadata_document_supported: self
                .documents
                .handles("https://client.example/metadata.json"),
            dpop_signing_alg_values_supported: SigningAlg::ALL.iter().map(|a| a.as_str()).collect(),
            authorization_response_iss_parameter_supported: true,
            authorization_grant_profiles_supported: if trusts_issuers {
                vec![crate::trust::ID_JAG_PROFILE]
            } else {
                vec![]
            },
            identity_chaining_requested_token_types_supported: if chains {
                vec![
                    crate::trust::JWT_TOKEN_TYPE,
                    crate::trust::ID_JAG_TOKEN_TYPE,
                ]
            } else {
                vec![]
            },
            mandate_token_types_supported: vec![
                crate::exchange::ISSUED_ACCESS_TOKEN,
                mandate_biscuit::TOKEN_TYPE,
            ],
            biscuit_root_keys: self.biscuit_keys.snapshot().published_roots().to_vec(),
        })
    }
}

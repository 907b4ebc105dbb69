//! The agent side of Mandate: get tokens, keep them, prove them, hand them on.
//!
//! An agent needs four things from an authorization server, and each is easy
//! to get subtly wrong by hand:
//!
//! 1. **Its own tokens** ([`TokenSource::client_credentials`]), with a secret
//!    or, better, a private key ([`ClientCredentials`]): no shared secret on
//!    the wire, a fresh single-use assertion per request.
//! 2. **Reuse without stampedes.** Tokens are cached per audience, scope and
//!    grant ([`TokenKey`]) until shortly before they expire; concurrent
//!    callers for one key share one request, and its failure.
//! 3. **Proof of possession** ([`DpopKey`], RFC 9449): tokens bound to a key
//!    that never leaves the process, a new proof per request, and the
//!    server's nonces remembered per origin with one retry when a server
//!    asks for a fresh one.
//! 4. **Delegation** ([`TokenSource::exchange`], RFC 8693): a sub-agent gets
//!    a token exchanged from the caller's, never wider (scope, audience,
//!    lifetime), naming each agent in its `act` chain. Asking for more is
//!    refused with `invalid_scope`, a typed [`Error::OAuth`].
//!
//! 5. **Offline narrowing** ([`biscuit`]): ask for a Biscuit
//!    ([`Exchange::biscuit`]) and append checks to it before handing it on,
//!    without asking the server.
//!
//! [`AuthorizedClient`] does all of it on every request: it picks the token
//! for the request's URL, attaches it (`Bearer`, or `DPoP` with a proof), and
//! retries once on a nonce challenge; [`AuthorizedClient::on_behalf_of`]
//! does the same with exchanged tokens.
//!
//! Errors never contain tokens, secrets or keys; [`AccessToken`],
//! [`Exchange`] and [`Credential`] print `[redacted]` in `Debug`.
//!
//! The protocol pieces are sans-IO in [`request`] (token requests as
//! `http::Request<Vec<u8>>`, responses parsed from bytes) and [`dpop`]
//! (proofs, nonce challenges); [`TokenSource`] and [`AuthorizedClient`] are
//! the reqwest adapters around them.
//!
//! # Example
//!
//! An orchestrator calls a research agent behind Mandate's gateway with a
//! DPoP-bound token; the research agent, acting for the orchestrator, calls a
//! payment agent with a narrower token exchanged from the one it received.
//! `mandate demo` runs this with real servers.
//!
//! ```no_run
//! use mandate_client::{AuthorizedClient, ClientCredentials, DpopKey, Endpoint, TokenSource};
//! use mandate_types::ClientSecret;
//!
//! # async fn run(orchestrator_key: mandate_jose::SigningKey, incoming_token: String)
//! #     -> Result<(), mandate_client::Error> {
//! // The orchestrator: private_key_jwt, tokens bound to an Ed25519 DPoP key.
//! let orchestrator = TokenSource::builder(ClientCredentials::with_private_key(
//!     Endpoint::issuer("https://auth.example.com")?, // RFC 8414 discovery
//!     "orchestrator",
//!     orchestrator_key,
//! ))
//! .dpop(DpopKey::generate()?)
//! .build()?;
//! let client = AuthorizedClient::new(orchestrator).target(
//!     "https://auth.example.com/agents/research",
//!     "https://agents.example/research",
//!     Some("research:read payments:quote"),
//! )?;
//! let answer = client
//!     .send(client.post("https://auth.example.com/agents/research/tasks").body("{}").build()?)
//!     .await?;
//! println!("research said {}", answer.status());
//!
//! // The research agent, inside its handler: hand on less than it was given.
//! let research = TokenSource::builder(ClientCredentials::with_secret(
//!     Endpoint::issuer("https://auth.example.com")?,
//!     "research",
//!     ClientSecret::new(std::env::var("RESEARCH_SECRET").unwrap_or_default()),
//! ))
//! .dpop(DpopKey::generate()?)
//! .build()?;
//! let to_payment = AuthorizedClient::new(research).target(
//!     "https://auth.example.com/agents/payment",
//!     "https://agents.example/payment",
//!     Some("payments:quote"),
//! )?;
//! let quote = to_payment
//!     .on_behalf_of(incoming_token)
//!     .send(to_payment.get("https://auth.example.com/agents/payment/quote").build()?)
//!     .await?;
//! println!("payment said {}", quote.status());
//! # Ok(())
//! # }
//! ```

mod authorized;
/// Biscuits: narrow a token offline before handing it to a sub-agent.
///
/// ```
/// use mandate_client::biscuit::{attenuate, Attenuation};
/// # fn narrow(biscuit: &str) -> Result<String, mandate_client::biscuit::BiscuitError> {
/// // Only the `search` tool, and only for ten minutes.
/// attenuate(biscuit, &Attenuation {
///     tools: vec!["search".into()],
///     not_after: Some(1_800_000_600),
///     ..Default::default()
/// })
/// # }
/// ```
pub mod biscuit {
    pub use mandate_biscuit::{attenuate, inspect, Attenuation, BiscuitError, TOKEN_TYPE};
}
mod cache;
mod credentials;
pub mod dpop;
mod error;
pub mod request;
mod source;
mod token;

pub use authorized::{AuthorizedClient, OnBehalfOf, Target};
pub use cache::MAX_ENTRIES as MAX_CACHED_TOKENS;
pub use credentials::{ClientCredentials, Credential, Endpoint, ASSERTION_LIFETIME};
pub use dpop::{DpopKey, NonceCache};
pub use error::{Error, OAuthError};
pub use request::{Exchange, Grant};
pub use source::{TokenSource, TokenSourceBuilder, DEFAULT_REFRESH_MARGIN, DEFAULT_TIMEOUT};
pub use token::{AccessToken, TokenKey, TokenKind, TokenType};

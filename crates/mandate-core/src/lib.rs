//! Mandate's protocol engine: the OAuth 2.1 authorization server without HTTP
//! or SQL.
//!
//! The HTTP layer (`mandate-server`) turns requests into a raw `Authorization`
//! header value and [`FormParams`] (or typed JSON), calls one [`Authority`]
//! method, and maps the [`Error`] to the wire in one place. Storage is the
//! [`Store`] trait; time is a `Clock`; outbound fetches are [`JwksFetcher`]. So
//! every rule here is testable with no network and no database server.
//!
//! Reading order: [`model`], [`store`], [`authority`] (client authentication),
//! [`token`] (the grant), [`introspection`], [`registration`], [`keyring`],
//! [`audit`].

pub mod admin;
pub mod audit;
pub mod authority;
pub mod authorize;
pub mod cache;
pub mod client_auth;
pub mod documents;
pub mod dpop;
mod error;
pub mod exchange;
pub mod form;
pub mod introspection;
pub mod keyring;
pub mod metadata;
pub mod model;
pub mod refresh;
pub mod registration;
pub mod store;
pub mod token;
pub mod trust;
pub mod upstream_login;
pub mod users;

pub use authority::{Authority, JwksFetcher, Settings};
pub use error::Error;
pub use form::FormParams;
pub use store::{Store, StoreError};

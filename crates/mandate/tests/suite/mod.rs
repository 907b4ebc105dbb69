mod admin;
mod client_auth;
mod introspection;
mod keys;
mod registration;
mod token;

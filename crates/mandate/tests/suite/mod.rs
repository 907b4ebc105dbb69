mod admin;
mod client_auth;
mod introspection;
mod keys;
mod process;
mod registration;
mod replicas;
mod token;

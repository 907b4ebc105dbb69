//! Runs the example agent on 127.0.0.1:9001, trusting the Mandate issuer in
//! `MANDATE_ISSUER` (default http://127.0.0.1:8080; keys are discovered from
//! its metadata) for the audience in `AGENT_AUDIENCE`.

use std::sync::Arc;

use mandate_example_a2a_agent::{app, policy};
use mandate_tower::keys::HttpKeys;
use mandate_tower::{Guard, NoRevocation, TokenVerifier, TrustedIssuer};
use mandate_types::SystemClock;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let issuer = std::env::var("MANDATE_ISSUER").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let audience = std::env::var("AGENT_AUDIENCE")
        .unwrap_or_else(|_| "https://expense-agent.example.com".into());
    let listen = std::env::var("AGENT_LISTEN").unwrap_or_else(|_| "127.0.0.1:9001".into());
    let verifier = TokenVerifier::new(
        [TrustedIssuer {
            issuer: issuer.clone(),
            require_at_jwt: true,
        }],
        Arc::new(HttpKeys::new()?),
        Arc::new(NoRevocation),
        30,
    );
    let metadata = format!("http://{listen}/.well-known/oauth-protected-resource");
    let router = app(
        Arc::new(Guard::new(verifier)),
        policy(&audience, &metadata),
        Arc::new(SystemClock),
    );
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("expense agent on http://{listen}, trusting {issuer} for {audience}");
    axum::serve(listener, router).await?;
    Ok(())
}

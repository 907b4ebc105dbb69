//! DPoP proofs for a load generator that cannot sign (wrk): gets one
//! DPoP-bound token with `client_credentials` through [`TokenSource`] (which
//! answers the token endpoint's nonce challenge), then signs `COUNT` proofs
//! for `POST <HTU>` with that token's `ath`, each with its own `jti`, and
//! writes them one per line, split evenly over `FILES` files (`<OUT>.0`,
//! `<OUT>.1`, ...) so that each wrk thread replays its own file in order and
//! no proof is sent twice. Prints the token and its scheme
//! (`DPoP <token>`) on standard output.
//!
//! A proof's `iat` is the time it was signed, and resource servers accept it
//! for 5 minutes (`DPOP_MAX_AGE` in mandate-tower), so proofs are made right
//! before the run that uses them. `bench/delegation.sh` runs this before each
//! DPoP run.
//!
//!     TOKEN_URL=http://127.0.0.1:4120/token CLIENT_ID=bench-agent CLIENT_SECRET=... \
//!     RESOURCE=https://agent.example.com SCOPE=agent:execute \
//!     HTU=http://127.0.0.1:4120/agents/bench COUNT=100000 FILES=2 OUT=/tmp/proofs \
//!     cargo run --release -p mandate-client --example dpop_proofs

// An example that cannot do its one job says why and stops.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write as _;

use mandate_client::{ClientCredentials, DpopKey, Endpoint, TokenSource, TokenType};
use mandate_types::{ClientSecret, Clock as _, SystemClock};
use url::Url;

type Result<T> = std::result::Result<T, String>;

fn env(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

fn number(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|e| format!("{name}={v:?}: {e}")),
        Err(_) => Ok(default),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("dpop_proofs: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let token_url = env("TOKEN_URL")?;
    let client_id = env("CLIENT_ID")?;
    let secret = ClientSecret::new(env("CLIENT_SECRET")?);
    let resource = env("RESOURCE")?;
    let scope = env("SCOPE")?;
    let htu = Url::parse(&env("HTU")?).map_err(|e| format!("HTU: {e}"))?;
    let count = number("COUNT", 10_000)?;
    let files = number("FILES", 1)?.max(1);
    let out = env("OUT")?;

    let source = TokenSource::builder(ClientCredentials::with_secret(
        Endpoint::token_url(&token_url).map_err(|e| e.to_string())?,
        &client_id,
        secret,
    ))
    .dpop(DpopKey::generate().map_err(|e| e.to_string())?)
    .build()
    .map_err(|e| e.to_string())?;
    let token = source
        .client_credentials(Some(&resource), Some(&scope))
        .await
        .map_err(|e| format!("token request: {e}"))?;
    if token.token_type() != TokenType::DPoP {
        return Err("the server issued a bearer token, not a DPoP-bound one".into());
    }
    let key = source.dpop_key().ok_or("no DPoP key")?;
    let now = SystemClock.now();

    // Signing is the slow part: one thread per file.
    let chunks: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..files)
            .map(|f| {
                let (htu, token) = (&htu, token.secret());
                s.spawn(move || {
                    let n = count / files + usize::from(f < count % files);
                    let mut buf = Vec::with_capacity(n * 512);
                    for _ in 0..n {
                        let proof = key
                            .proof("POST", htu, now, None, Some(token))
                            .map_err(|e| e.to_string())?;
                        buf.extend_from_slice(proof.as_bytes());
                        buf.push(b'\n');
                    }
                    Ok(buf)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| "a signing thread failed".to_owned())?)
            .collect()
    });
    for (f, chunk) in chunks.into_iter().enumerate() {
        let path = format!("{out}.{f}");
        std::fs::write(&path, chunk?).map_err(|e| format!("{path}: {e}"))?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{} {}", token.token_type().scheme(), token.secret())
        .map_err(|e| e.to_string())?;
    Ok(())
}

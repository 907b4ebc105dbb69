//! The `mandate` binary as operators run it: start-up errors, the CLI against
//! a running server, and a SIGKILL under load.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_mandate");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `mandate serve` child process on SQLite in a temporary directory.
struct Served {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    #[allow(dead_code)] // kept for debugging a failed run
    admin_port: u16,
}

impl Served {
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("mandate.toml")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn write_config(dir: &Path, port: u16, admin_port: u16, extra: &str) {
        let config = format!(
            r#"
listen = "127.0.0.1:{port}"
[admin]
listen = "127.0.0.1:{admin_port}"
[[resources]]
id = "{API}"
scopes = {{ read = "Read" }}
[[clients]]
client_id = "agent"
grant_types = ["client_credentials"]
scopes = ["read"]
secret_env = "AGENT_SECRET"
{extra}
"#
        );
        std::fs::write(dir.join("mandate.toml"), config).unwrap();
    }

    async fn start() -> Self {
        Self::start_with("").await
    }

    /// A port found free may be taken by another test before the child binds
    /// it (and `/readyz` would then answer from that other server), so the
    /// child's start-up banner, printed once both listeners are bound, is
    /// what says the ports are its own; on a bind failure, other ports.
    async fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let (port, admin_port) = (free_port(), free_port());
            Self::write_config(dir.path(), port, admin_port, extra);
            if let Some(child) = Self::spawn(dir.path()) {
                let mut s = Self {
                    child,
                    dir,
                    port,
                    admin_port,
                };
                s.wait_ready().await;
                return s;
            }
        }
        panic!("mandate serve could not bind its ports in five tries");
    }

    /// Starts `mandate serve`; `None` when it exits before it is listening.
    fn spawn(dir: &Path) -> Option<Child> {
        use std::io::BufRead as _;
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(dir.join("mandate.toml"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("AGENT_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let listening = lines.any(|l| l.is_ok_and(|l| l.starts_with("Admin API on")));
        // Keep the pipe drained so the child never blocks writing to it.
        std::thread::spawn(move || lines.for_each(drop));
        if listening {
            Some(child)
        } else {
            let _ = child.wait();
            None
        }
    }

    async fn restart(&mut self) {
        self.child = Self::spawn(self.dir.path()).expect("mandate serve restarts on its ports");
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let url = format!("{}/readyz", self.base());
        let child = &mut self.child;
        eventually(300, Duration::from_millis(50), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("mandate serve exited early: {status}");
            }
            let url = &url;
            async move {
                let r = reqwest::get(url).await.ok()?;
                (r.status() == StatusCode::OK).then_some(())
            }
        })
        .await
        .expect("mandate serve did not become ready");
    }

    /// Runs a CLI command against this server.
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(self.config_path())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .env("AGENT_SECRET", SECRET)
            .env_remove("MANDATE_ADMIN_TOKEN")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn bad_configuration_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[tokens]\naccess_token_ttl = \"fortnight\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tokens.access_token_ttl"), "{stderr}");
    std::fs::write(&config, "listen = \"127.0.0.1:1\"\nsurprise = true\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("surprise"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_drives_a_running_server() {
    let served = Served::start().await;
    // First start: key material is private to the owner.
    for file in ["master.key", "admin.token"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(served.data_dir().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let (ok, out, err) = served.cli(&[
        "resource",
        "create",
        "--id",
        "https://cli.example",
        "--scope",
        "go=Go places",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("Go places"));
    let (ok, out, err) = served.cli(&[
        "client",
        "create",
        "--name",
        "cli agent",
        "--grant-type",
        "client_credentials",
        "--scope",
        "go",
        "--resource",
        "https://cli.example",
    ]);
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let id = created["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(served.config_path())
        .args(["token", "--client-id", &id, "--scope", "go"])
        .env("MANDATE_CLIENT_SECRET", &secret)
        .env("AGENT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        claims_of(token["access_token"].as_str().unwrap())["aud"],
        "https://cli.example"
    );
    let (ok, out, _) = served.cli(&["client", "rotate-secret", &id, "--overlap", "1h"]);
    assert!(ok);
    assert!(out.contains("client_secret"));
    let (ok, out, _) = served.cli(&["client", "list"]);
    assert!(ok && out.contains(&id) && !out.contains(&secret));
    let (ok, out, _) = served.cli(&["keys", "rotate"]);
    assert!(ok && out.contains("pending"), "{out}");
    let (ok, out, _) = served.cli(&["keys", "list"]);
    assert!(ok && out.contains("active") && out.contains("pending"));
    let (ok, out, _) = served.cli(&["audit", "tail", "--once", "-n", "3"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 3, "{out}");
    let (ok, out, err) = served.cli(&["audit", "verify"]);
    assert!(ok, "{err}");
    assert!(out.contains("audit chain intact"), "{out}");
    let (ok, _, _) = served.cli(&["client", "delete", &id]);
    assert!(ok);
    let (ok, _, err) = served.cli(&["client", "show", &id]);
    assert!(!ok && err.contains("404"), "{err}");
    // A wrong admin token is refused.
    let out = Command::new(BIN)
        .arg("--config")
        .arg(served.config_path())
        .args(["client", "list"])
        .env("MANDATE_ADMIN_TOKEN", "x".repeat(40))
        .env("AGENT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// SIGKILL under load: after restart the chain verifies and every token a
/// client received has its `token.issued` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_audited_token() {
    let mut served = Served::start().await;
    let received: Arc<Mutex<HashSet<String>>> = Arc::default();
    let url = format!("{}/token", served.base());
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (url, received) = (url.clone(), received.clone());
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            // Bounded: at most 2000 requests per worker; stops at the first failure (the kill).
            for _ in 0..2000 {
                let resp = http
                    .post(&url)
                    .basic_auth("agent", Some(SECRET))
                    .form(&[("grant_type", "client_credentials")])
                    .send()
                    .await;
                let Ok(resp) = resp else { return };
                let Ok(body) = resp.json::<Value>().await else {
                    return;
                };
                if let Some(t) = body["access_token"].as_str() {
                    let jti = claims_of(t)["jti"].as_str().unwrap().to_owned();
                    received.lock().unwrap().insert(jti);
                }
            }
        }));
    }
    // Let load build up (300 tokens or 2 s, whichever comes first), then
    // kill without warning.
    let _ = eventually(200, Duration::from_millis(10), || async {
        (received.lock().unwrap().len() >= 300).then_some(())
    })
    .await;
    served.child.kill().unwrap();
    served.child.wait().unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let received = received.lock().unwrap().clone();
    assert!(
        !received.is_empty(),
        "load reached the server before the kill"
    );

    served.restart().await;
    let (ok, out, err) = served.cli(&["audit", "verify"]);
    assert!(ok, "chain verifies after a crash: {out}{err}");
    let (ok, out, _) = served.cli(&["audit", "tail", "--once", "-n", "1000000"]);
    assert!(ok);
    let audited: HashSet<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "token.issued")
        .filter_map(|e| e["jti"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<_> = received.difference(&audited).collect();
    assert!(
        missing.is_empty(),
        "{} of {} received tokens have no audit event",
        missing.len(),
        received.len()
    );
}

/// `mandate audit chain` prints where a token came from and what was made of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_chain_prints_the_delegation_tree() {
    let exchange = "urn:ietf:params:oauth:grant-type:token-exchange";
    let extra = format!(
        "[[clients]]\nclient_id = \"research\"\ngrant_types = [\"{exchange}\"]\nscopes = [\"read\"]\nsecret_env = \"AGENT_SECRET\"\nmay_act_for = [\"agent\"]\n\
         [[clients]]\nclient_id = \"payment\"\ngrant_types = [\"{exchange}\"]\nscopes = [\"read\"]\nsecret_env = \"AGENT_SECRET\"\nmay_act_for = [\"research\"]\n"
    );
    let served = Served::start_with(&extra).await;
    let http = reqwest::Client::new();
    let token = |client: &'static str, form: Vec<(&'static str, String)>| {
        let http = http.clone();
        let url = format!("{}/token", served.base());
        async move {
            let v: Value = http
                .post(url)
                .basic_auth(client, Some(SECRET))
                .form(&form)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("{v}"))
                .to_owned()
        }
    };
    let exchange_form = |subject: &str| {
        vec![
            ("grant_type", exchange.to_owned()),
            ("subject_token", subject.to_owned()),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token".to_owned(),
            ),
        ]
    };
    let t0 = token(
        "agent",
        vec![("grant_type", "client_credentials".to_owned())],
    )
    .await;
    let t1 = token("research", exchange_form(&t0)).await;
    let t2 = token("payment", exchange_form(&t1)).await;
    let jti = |t: &str| claims_of(t)["jti"].as_str().unwrap().to_owned();
    let (ok, out, err) = served.cli(&["audit", "chain", &jti(&t1)]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with(&jti(&t0)) && lines[0].contains("client agent"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!("  > {}", jti(&t1))) && lines[1].contains("acting: research"),
        "{out}"
    );
    assert!(
        lines[2].starts_with(&format!("    {}", jti(&t2)))
            && lines[2].contains("acting: payment <- research"),
        "{out}"
    );
    let (ok, _, err) = served.cli(&["audit", "chain", "no-such-jti"]);
    assert!(!ok && err.contains("no issued token"), "{err}");
}

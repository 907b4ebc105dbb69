use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn defaults_with_no_file() {
    let c = Config::load(None, &Overrides::default(), &no_env).unwrap();
    assert_eq!(c.issuer, "http://127.0.0.1:8080");
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.admin_listen.to_string(), "127.0.0.1:8081");
    assert_eq!(c.access_token_ttl, 900);
    assert_eq!(c.signing_alg, SigningAlg::EdDSA);
    assert_eq!(c.registration_mode, RegistrationMode::Closed);
    assert!(c
        .effective_database_url()
        .starts_with("sqlite://./mandate-data/mandate.db"));
}

#[test]
fn timeouts_default_to_30_s_and_are_bounded() {
    let no_env = |_: &str| None;
    let c = Config::load(None, &Overrides::default(), &no_env).unwrap();
    assert_eq!((c.request_timeout, c.header_read_timeout), (30, 30));
    let c = Config::load(
        Some("[limits]\nrequest_timeout = \"2m\"\nheader_read_timeout = \"5s\""),
        &Overrides::default(),
        &no_env,
    )
    .unwrap();
    assert_eq!((c.request_timeout, c.header_read_timeout), (120, 5));
    for key in ["request_timeout", "header_read_timeout"] {
        for bad in ["0s", "6m", "soon"] {
            let e = Config::load(
                Some(&format!("[limits]\n{key} = \"{bad}\"")),
                &Overrides::default(),
                &no_env,
            )
            .unwrap_err();
            assert_eq!(e.key, format!("limits.{key}"), "{bad}");
        }
    }
}

#[test]
fn listener_threads_default_to_one_per_cpu_and_are_bounded() {
    let c = Config::load(None, &Overrides::default(), &no_env).unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(c.listener_threads, cpus);
    let c = Config::load(Some("listener_threads = 3"), &Overrides::default(), &no_env).unwrap();
    assert_eq!(c.listener_threads, 3);
    for bad in ["listener_threads = 0", "listener_threads = 257"] {
        let e = Config::load(Some(bad), &Overrides::default(), &no_env).unwrap_err();
        assert_eq!(e.key, "listener_threads", "{bad}");
    }
}

#[test]
fn audit_retention_is_off_by_default_and_at_least_an_hour() {
    let c = Config::load(None, &Overrides::default(), &no_env).unwrap();
    assert_eq!(c.audit_retention, None);
    let c = Config::load(
        Some("[audit]\nretention = \"90days\""),
        &Overrides::default(),
        &no_env,
    )
    .unwrap();
    assert_eq!(c.audit_retention, Some(90 * 86_400));
    for bad in ["59m", "0s", "soon"] {
        let toml = format!("[audit]\nretention = \"{bad}\"");
        let e = Config::load(Some(&toml), &Overrides::default(), &no_env).unwrap_err();
        assert_eq!(e.key, "audit.retention", "{bad}");
    }
}

#[test]
fn precedence_is_flag_then_env_then_file() {
    let file = "listen = \"127.0.0.1:1000\"\nissuer = \"https://file.example\"";
    let env = |k: &str| (k == "MANDATE_ISSUER").then(|| "https://env.example/".to_owned());
    let flags = Overrides {
        listen: Some("127.0.0.1:2000".into()),
        ..Overrides::default()
    };
    let c = Config::load(Some(file), &flags, &env).unwrap();
    assert_eq!(c.listen.port(), 2000);
    assert_eq!(c.issuer, "https://env.example");
}

#[test]
fn errors_name_the_key() {
    let e = Config::load(
        Some("[tokens]\naccess_token_ttl = \"soon\""),
        &Overrides::default(),
        &no_env,
    )
    .unwrap_err();
    assert_eq!(e.key, "tokens.access_token_ttl");
    let e = Config::load(Some("bogus = 1"), &Overrides::default(), &no_env).unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
    let file = r#"
[[resources]]
id = "https://api.example"
scopes = { read = "Read" }
[[clients]]
client_id = "agent"
grant_types = ["client_credentials"]
scopes = ["read"]
secret_env = "AGENT_SECRET"
"#;
    let e = Config::load(Some(file), &Overrides::default(), &no_env).unwrap_err();
    assert_eq!(e.key, "clients[0].secret_env");
    assert!(e.problem.contains("AGENT_SECRET"));
    let env = |k: &str| (k == "AGENT_SECRET").then(|| "s".repeat(32));
    let c = Config::load(Some(file), &Overrides::default(), &env).unwrap();
    assert_eq!(
        c.clients[0].auth_method,
        ClientAuthMethod::ClientSecretBasic
    );
    assert_eq!(c.resources[0].name, "https://api.example");
}

#[test]
fn impossible_combinations_are_refused() {
    let cases = [
        ("[[clients]]\nclient_id = \"a\"\ngrant_types = [\"client_credentials\"]", "clients[0].grant_types"),
        ("[[clients]]\nclient_id = \"a\"\ngrant_types = [\"client_credentials\"]\nresources = [\"https://nope\"]\nsecret_sha256 = \"00\"", "clients[0].resources"),
        ("[tokens]\nsigning_alg = \"HS256\"", "tokens.signing_alg"),
        ("[registration]\nmode = \"initial_access_token\"", "registration.initial_access_token_env"),
        ("issuer = \"https://a.example/?x=1\"", "issuer"),
        ("listen = \"nowhere\"", "listen"),
        ("[[clients]]\nclient_id = \"a\"\ngrant_types = [\"authorization_code\"]\ntoken_endpoint_auth_method = \"none\"\nredirect_uris = [\"http://app.example/cb\"]", "clients[0].redirect_uris[0]"),
        ("[[clients]]\nclient_id = \"a\"\ngrant_types = [\"authorization_code\"]\ntoken_endpoint_auth_method = \"none\"\nredirect_uris = [\"https://app.example/cb#x\"]", "clients[0].redirect_uris[0]"),
        ("[[trust.issuers]]\nissuer = \"https://idp.example\"", "trust.issuers[0].jwks_uri"),
        ("[[trust.peers]]\nissuer = \"http://127.0.0.1:8080\"", "trust.peers[0].issuer"),
    ];
    for (file, key) in cases {
        let e = Config::load(Some(file), &Overrides::default(), &no_env).unwrap_err();
        assert_eq!(e.key, key, "{file}: {e}");
    }
}

#[test]
fn gateway_routes() {
    let file = r#"
[[gateway.routes]]
path = "/agents/expense/"
upstream = "http://127.0.0.1:9001"
protocol = "a2a"
resource = "https://expense-agent.example.com"
scopes = ["expense:read"]
[gateway.routes.operations]
SendMessage = ["expense:submit"]
CancelTask = ["expense:submit"]
"#;
    let c = Config::load(Some(file), &Overrides::default(), &no_env).unwrap();
    let r = &c.gateway.routes[0];
    assert_eq!(r.path, "/agents/expense");
    assert_eq!(r.operations.len(), 2);
    assert_eq!(c.gateway.public_url, "http://127.0.0.1:8080");
    let bad = [
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"http://a\"\nresource = \"https://r\"\nprotocol = \"mcp\"", "gateway.routes[0].levels"),
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"http://a\"\nresource = \"https://r\"\nprotocol = \"smtp\"", "gateway.routes[0].protocol"),
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"http://a\"\nresource = \"https://r\"\n[gateway.routes.levels]\nread = [\"a\"]", "gateway.routes[0].levels"),
        ("[[gateway.routes]]\npath = \"/token\"\nupstream = \"http://a\"\nresource = \"https://r\"", "gateway.routes[0].path"),
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"http://a\"", "gateway.routes[0].resource"),
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"http://a\"\nresource = \"https://r\"\npublic = true\nscopes = [\"a\"]", "gateway.routes[0].public"),
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"http://a\"\nresource = \"https://r\"\nprotocol = \"a2a\"\n[gateway.routes.operations]\nSend = [\"a\"]", "gateway.routes[0].operations"),
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"http://a\"\nresource = \"https://r\"\n[gateway.routes.operations]\nSendMessage = [\"a\"]", "gateway.routes[0].operations"),
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"ftp://a\"\nresource = \"https://r\"", "gateway.routes[0].upstream"),
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"http://a\"\nresource = \"https://r\"\nupstream_ca_file = \"Cargo.toml\"", "gateway.routes[0].upstream_ca_file"),
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"https://a\"\nresource = \"https://r\"\nupstream_ca_file = \"/no/such/ca.pem\"", "gateway.routes[0].upstream_ca_file"),
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"https://a\"\nresource = \"https://r\"\nupstream_client_cert_file = \"Cargo.toml\"", "gateway.routes[0].upstream_client_cert_file"),
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"https://a\"\nresource = \"https://r\"\nupstream_client_key_file = \"Cargo.toml\"", "gateway.routes[0].upstream_client_cert_file"),
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"http://a\"\nresource = \"https://r\"\nupstream_client_cert_file = \"Cargo.toml\"\nupstream_client_key_file = \"Cargo.toml\"", "gateway.routes[0].upstream_client_cert_file"),
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"https://a\"\nresource = \"https://r\"\nupstream_client_cert_file = \"/no/such/cert.pem\"\nupstream_client_key_file = \"Cargo.toml\"", "gateway.routes[0].upstream_client_cert_file"),
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"https://a\"\nresource = \"https://r\"\nupstream_client_cert_file = \"Cargo.toml\"\nupstream_client_key_file = \"/no/such/key.pem\"", "gateway.routes[0].upstream_client_key_file"),
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"http://a\"\nresource = \"https://r\"\nrate_limit = 0", "gateway.routes[0].rate_limit"),
        ("[gateway]\ndefault_route = \"/nope\"", "gateway.default_route"),
    ];
    for (file, key) in bad {
        let e = Config::load(Some(file), &Overrides::default(), &no_env).unwrap_err();
        assert_eq!(e.key, key, "{file}: {e}");
    }
    let e = Config::load(Some("[[gateway.routes]]\npath = \"/x\"\nupstream = \"http://a\"\nresource = \"https://r\"\nbogus = 1"), &Overrides::default(), &no_env).unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
}

#[test]
fn mcp_prompt_and_resource_rules() {
    let route = "[[gateway.routes]]\npath = \"/mcp\"\nupstream = \"http://a\"\nresource = \"https://r\"\nprotocol = \"mcp\"\n";
    let route = |keys: &str| {
        format!("{route}{keys}\n[gateway.routes.levels]\nread = [\"r\"]\nwrite = [\"w\"]\ndestructive = [\"d\"]\n")
    };
    let file = format!(
        "{}\
         [gateway.routes.prompts.summarize]\nscopes = [\"p:sum\"]\n\
         [gateway.routes.resources.\"file:///secret/*\"]\nscopes = [\"s\"]\n",
        route("prompt_scopes = [\"p\"]\nresource_scopes = [\"r\"]")
    );
    let c = Config::load(Some(&file), &Overrides::default(), &no_env).unwrap();
    let r = &c.gateway.routes[0];
    assert_eq!(r.prompts.scopes_for("summarize").to_string(), "p p:sum");
    assert_eq!(r.prompts.scopes_for("other").to_string(), "p");
    assert_eq!(
        r.resources.scopes_for("file:///secret/a").to_string(),
        "r s"
    );
    assert_eq!(r.resources.scopes_for("file:///public").to_string(), "r");
    let bad = [
        (format!("{}[gateway.routes.resources.\"file:///*/x\"]\nscopes = [\"s\"]", route("")), "gateway.routes[0].resources.\"file:///*/x\""),
        (format!("{}[gateway.routes.prompts.\"\"]\nscopes = [\"s\"]", route("")), "gateway.routes[0].prompts.\"\""),
        (route("prompt_scopes = [\"café\"]"), "gateway.routes[0].prompt_scopes"),
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"http://a\"\nresource = \"https://r\"\nresource_scopes = [\"r\"]".to_owned(), "gateway.routes[0].prompts"),
        ("[[gateway.routes]]\npath = \"/x\"\nupstream = \"http://a\"\nresource = \"https://r\"\nprotocol = \"mcp\"\npublic = true\n[gateway.routes.prompts.p]\nscopes = [\"p\"]".to_owned(), "gateway.routes[0].public"),
    ];
    for (file, key) in bad {
        let e = Config::load(Some(&file), &Overrides::default(), &no_env).unwrap_err();
        assert_eq!(e.key, key, "{file}: {e}");
    }
}

#[test]
fn refresh_requires_offline_access_from_file_or_env() {
    let c = Config::load(None, &Overrides::default(), &no_env).unwrap();
    assert!(!c.refresh_requires_offline_access, "off by default");
    let file = "[tokens]\nrefresh_requires_offline_access = true";
    let c = Config::load(Some(file), &Overrides::default(), &no_env).unwrap();
    assert!(c.refresh_requires_offline_access);
    let env =
        |k: &str| (k == "MANDATE_REFRESH_REQUIRES_OFFLINE_ACCESS").then(|| "false".to_owned());
    let c = Config::load(Some(file), &Overrides::default(), &env).unwrap();
    assert!(
        !c.refresh_requires_offline_access,
        "the environment beats the file"
    );
    let env = |k: &str| (k == "MANDATE_REFRESH_REQUIRES_OFFLINE_ACCESS").then(|| "yes".to_owned());
    let e = Config::load(None, &Overrides::default(), &env).unwrap_err();
    assert_eq!(e.key, "tokens.refresh_requires_offline_access");
}

#[test]
fn login_oidc_providers_are_validated() {
    let env = |k: &str| (k == "CORP_SECRET").then(|| "corp-secret".to_owned());
    let load = |file: &str| Config::load(Some(file), &Overrides::default(), &env);
    let good = r#"
[[login.oidc]]
id = "corp"
name = "Corp SSO"
issuer = "https://idp.corp.example"
client_id = "mandate"
client_secret_env = "CORP_SECRET"
"#;
    let c = load(good).unwrap();
    let p = &c.login.oidc[0];
    assert_eq!(p.id, "corp");
    assert_eq!(p.scopes, "openid email profile");
    assert_eq!(p.client_secret.expose(), "corp-secret");
    assert!(!c.login.insecure_allow_http_oidc_on_loopback);
    assert!(
        !format!("{c:?}").contains("corp-secret"),
        "the secret is redacted"
    );

    let bad = |from: &str, to: &str, key: &str| {
        let e = load(&good.replace(from, to)).unwrap_err();
        assert_eq!(e.key, key, "{e}");
    };
    bad("\"corp\"", "\"Corp/x\"", "login.oidc[0].id");
    bad("name = \"Corp SSO\"\n", "", "login.oidc[0].name");
    bad(
        "CORP_SECRET",
        "MISSING_SECRET",
        "login.oidc[0].client_secret_env",
    );
    bad("https://idp", "http://idp", "login.oidc[0].issuer");
    bad("client_id = \"mandate\"\n", "", "login.oidc[0].client_id");
    bad(
        "client_id = \"mandate\"\n",
        "client_id = \"mandate\"\nscopes = \"email\"\n",
        "login.oidc[0].scopes",
    );
    bad(
        "client_id = \"mandate\"\n",
        "client_id = \"mandate\"\njwks_uri = \"ftp://x\"\n",
        "login.oidc[0].jwks_uri",
    );
    let twice = format!("{good}{good}");
    assert_eq!(load(&twice).unwrap_err().key, "login.oidc[1].id");
    // http on loopback only with the named danger setting.
    let local = good.replace("https://idp.corp.example", "http://127.0.0.1:9999");
    assert_eq!(load(&local).unwrap_err().key, "login.oidc[0].issuer");
    let allowed = format!("[login]\ninsecure_allow_http_oidc_on_loopback = true\n{local}");
    assert!(
        load(&allowed)
            .unwrap()
            .login
            .insecure_allow_http_oidc_on_loopback
    );
}

#[test]
fn https_upstreams_with_and_without_their_own_ca() {
    let no_env = |_: &str| None;
    let ca = std::env::temp_dir().join(format!("mandate-config-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let file = format!(
        "[[gateway.routes]]\npath = \"/public-pki\"\nupstream = \"https://agent.example.com\"\nresource = \"https://r\"\n\
         [[gateway.routes]]\npath = \"/private-pki\"\nupstream = \"https://10.0.0.7:8443\"\nresource = \"https://r\"\nupstream_ca_file = {:?}\n",
        ca.display().to_string()
    );
    let c = Config::load(Some(&file), &Overrides::default(), &no_env).unwrap();
    std::fs::remove_file(&ca).unwrap();
    let routes = &c.gateway.routes;
    assert!(routes[0].upstream_ca.is_none());
    let own = routes[1].upstream_ca.as_ref().unwrap();
    assert_eq!(own.pem, b"-----BEGIN CERTIFICATE-----\n");
    assert_eq!(own.file, ca.display().to_string());
}

#[test]
fn an_https_upstream_with_a_client_certificate() {
    let no_env = |_: &str| None;
    let dir = std::env::temp_dir();
    let cert = dir.join(format!("mandate-config-client-{}.pem", std::process::id()));
    let key = dir.join(format!("mandate-config-client-{}.key", std::process::id()));
    std::fs::write(&cert, "cert").unwrap();
    std::fs::write(&key, "key").unwrap();
    let file = format!(
        "[[gateway.routes]]\npath = \"/mtls\"\nupstream = \"https://10.0.0.7:8443\"\nresource = \"https://r\"\n\
         upstream_client_cert_file = {:?}\nupstream_client_key_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let c = Config::load(Some(&file), &Overrides::default(), &no_env).unwrap();
    std::fs::remove_file(&cert).unwrap();
    std::fs::remove_file(&key).unwrap();
    let own = c.gateway.routes[0].upstream_client_cert.as_ref().unwrap();
    assert_eq!(own.cert_file, cert.display().to_string());
    assert_eq!(own.key_file, key.display().to_string());
}

#[test]
fn a_route_rate_limit_is_per_minute_and_optional() {
    let no_env = |_: &str| None;
    let route =
        "[[gateway.routes]]\npath = \"/x\"\nupstream = \"http://a\"\nresource = \"https://r\"\n";
    let c = Config::load(Some(route), &Overrides::default(), &no_env).unwrap();
    assert_eq!(c.gateway.routes[0].rate_limit, None);
    let limited = format!("{route}rate_limit = 600\n");
    let c = Config::load(Some(&limited), &Overrides::default(), &no_env).unwrap();
    assert_eq!(c.gateway.routes[0].rate_limit, Some(600));
}

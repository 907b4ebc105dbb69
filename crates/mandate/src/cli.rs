//! Command-line syntax.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Authorization for AI agents: an OAuth 2.1 server with an audit trail.
#[derive(Debug, Parser)]
#[command(name = "mandate", version, about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where the configuration and the server are; shared by every command.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "MANDATE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// State directory (SQLite database, master key, admin token).
    #[arg(long, global = true)]
    pub(crate) data_dir: Option<String>,
    /// Admin API base URL (default: from the configuration's admin.listen).
    #[arg(long, global = true, env = "MANDATE_ADMIN_URL")]
    pub(crate) admin_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the authorization server.
    Serve(ServeArgs),
    /// Manage OAuth clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage the people who sign in and consent.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage protected resources (token audiences) and their scopes.
    #[command(subcommand)]
    Resource(ResourceCommand),
    /// List and rotate signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Read and verify the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Fetch an access token with client credentials (for trying things
    /// out), or narrow and read a Biscuit offline (`token attenuate`,
    /// `token inspect`).
    Token(TokenArgs),
    /// Run Mandate, its gateway and three agents in this process, delegate
    /// a task down the chain, and print each hop, the refusal and the audit
    /// trail. Needs no set-up; leaves nothing behind.
    Demo,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address of the public listener.
    #[arg(long)]
    pub(crate) listen: Option<String>,
    /// Issuer URL.
    #[arg(long)]
    pub(crate) issuer: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    pub(crate) log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClientCommand {
    /// Create a client; prints its id and one-time secret as JSON.
    Create {
        /// Human-readable name.
        #[arg(long)]
        name: String,
        /// Grant type (repeatable), e.g. client_credentials.
        #[arg(long = "grant-type", required = true)]
        grant_types: Vec<String>,
        /// The most the client may ever get, space-delimited.
        #[arg(long)]
        scope: String,
        /// A resource it may use (repeatable; default all).
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// File with its public JWK Set (makes it a private_key_jwt client).
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// URL of its JWK Set (private_key_jwt).
        #[arg(long)]
        jwks_uri: Option<String>,
        /// Choose the client id instead of generating one.
        #[arg(long)]
        client_id: Option<String>,
        /// token_endpoint_auth_method (default client_secret_basic).
        #[arg(long)]
        auth_method: Option<String>,
    },
    /// List clients.
    List,
    /// Show one client.
    Show {
        /// Client id.
        client_id: String,
    },
    /// Issue a new secret; the old one keeps working for the overlap.
    RotateSecret {
        /// Client id.
        client_id: String,
        /// How long the previous secret stays valid, e.g. "1h" (default from config).
        #[arg(long)]
        overlap: Option<String>,
    },
    /// Delete a client.
    Delete {
        /// Client id.
        client_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Create a user; the password comes from --password-env, else standard input.
    Create {
        /// Sign-in name.
        #[arg(long)]
        username: String,
        /// Name of an environment variable holding the password.
        #[arg(long)]
        password_env: Option<String>,
    },
    /// List users.
    List,
    /// Disable a user (sign-in refused).
    Disable {
        /// Sign-in name.
        username: String,
    },
    /// Enable a disabled user.
    Enable {
        /// Sign-in name.
        username: String,
    },
    /// Set a user's password (from --password-env, else standard input); unlocks the account.
    SetPassword {
        /// Sign-in name.
        username: String,
        /// Name of an environment variable holding the password.
        #[arg(long)]
        password_env: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ResourceCommand {
    /// Create or replace a resource.
    Create {
        /// Resource identifier URL (the token audience).
        #[arg(long)]
        id: String,
        /// Human-readable name.
        #[arg(long)]
        name: Option<String>,
        /// A scope as NAME or NAME=DESCRIPTION (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Access token lifetime for this audience, e.g. "5m".
        #[arg(long)]
        access_token_ttl: Option<String>,
    },
    /// List resources.
    List,
    /// Delete a resource.
    Delete {
        /// Resource identifier.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// List signing keys and their states.
    List,
    /// Publish a new key that signs after the pre-publication window.
    Rotate {
        /// Rotate the Biscuit root key instead of the JWS signing key.
        #[arg(long)]
        biscuit: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Print recent events and follow new ones.
    Tail {
        /// How many past events to print first.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: i64,
        /// Print and exit instead of following.
        #[arg(long)]
        once: bool,
    },
    /// Check the whole hash chain; names the first broken link. Starts at
    /// the anchor retention left (the last event it removed), if any.
    Verify,
    /// Remove the events recorded longer ago than `--older-than` from the
    /// front of the chain now (`audit.retention` does it every ten minutes).
    /// Export first what must be kept: `audit tail --once -n N`.
    Prune {
        /// Age of the newest event to remove, like "90days" (at least 1h).
        #[arg(long)]
        older_than: String,
    },
    /// The delegation tree of a token: where it came from (token exchange)
    /// and what was exchanged from it — who, for whom, with what, when.
    Chain {
        /// The token's `jti` (one that starts with `-` is taken as is).
        #[arg(allow_hyphen_values = true)]
        jti: String,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct TokenArgs {
    /// Work on a Biscuit offline instead of fetching a token.
    #[command(subcommand)]
    pub(crate) offline: Option<TokenOffline>,
    /// Client id.
    #[arg(long, required = true)]
    pub(crate) client_id: Option<String>,
    /// Client secret.
    #[arg(
        long,
        env = "MANDATE_CLIENT_SECRET",
        hide_env_values = true,
        required = true
    )]
    pub(crate) client_secret: Option<String>,
    /// Resource (audience).
    #[arg(long)]
    pub(crate) resource: Option<String>,
    /// Scope, space-delimited.
    #[arg(long)]
    pub(crate) scope: Option<String>,
    /// Token endpoint (default: the configured issuer's).
    #[arg(long)]
    pub(crate) token_url: Option<String>,
}

/// Biscuit work that needs no server: only the token.
#[derive(Debug, Subcommand)]
pub(crate) enum TokenOffline {
    /// Append a block of checks to a Biscuit, narrowing it; prints the new
    /// token. Each option adds one check; all of them must hold.
    Attenuate {
        /// The Biscuit (base64url); `-` reads it from standard input.
        token: String,
        /// Only calls of these MCP tools (repeat for several).
        #[arg(long = "tool")]
        tools: Vec<String>,
        /// Only requests needing at most these scopes (space-delimited).
        #[arg(long)]
        scope: Option<String>,
        /// Only at this resource.
        #[arg(long)]
        resource: Option<String>,
        /// Only until this time: RFC 3339 (`2026-12-01T00:00:00Z`) or a
        /// duration from now (`10m`).
        #[arg(long)]
        expires: Option<String>,
        /// Further Datalog, e.g. `check if operation("tools/call");`.
        #[arg(long)]
        check: Option<String>,
        /// Seal the token: no block can be added after this one.
        #[arg(long)]
        seal: bool,
    },
    /// Print each block of a Biscuit as Datalog (signatures not checked).
    Inspect {
        /// The Biscuit (base64url); `-` reads it from standard input.
        token: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `jti` is random base64url: one in 64 starts with `-`.
    #[test]
    fn a_jti_that_starts_with_a_hyphen_is_an_argument_not_an_option() {
        let cli = Cli::try_parse_from(["mandate", "audit", "chain", "-Xy_1"]).unwrap();
        match cli.command {
            Command::Audit(AuditCommand::Chain { jti }) => assert_eq!(jti, "-Xy_1"),
            other => panic!("parsed as {other:?}"),
        }
    }
}

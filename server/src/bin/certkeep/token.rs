//! `certkeep token ...`: API tokens, through the API.

use certkeep_api_types::api::{CreateTokenRequest, CreatedTokenResponse, TokenResponse};
use certkeep_api_types::enums::Scope;
use clap::Subcommand;
use reqwest::Method;

use crate::client::CliError;
use crate::session::Session;
use crate::table::{Table, list, time};

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCommand {
    /// Create an API token; prints its secret once.
    #[command(
        after_help = "Example:\n  certkeep token create --name ci --scope issuer --domain '*.ci.example.edu' --expires-in 90d"
    )]
    Create {
        #[arg(long)]
        name: String,
        /// Scope; repeatable.
        #[arg(long = "scope", required = true, value_enum)]
        scopes: Vec<Scope>,
        /// Domain pattern of an issuer token; repeatable.
        #[arg(long = "domain", value_name = "PATTERN")]
        domain_patterns: Vec<String>,
        /// Lifetime: 90d, 12h.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List tokens.
    #[command(after_help = "Example:\n  certkeep token list")]
    List,
    /// Revoke a token.
    #[command(after_help = "Example:\n  certkeep token revoke 01912345-...")]
    Revoke { id: uuid::Uuid },
}

fn token_table(tokens: Vec<TokenResponse>) {
    let mut t = Table::new([
        "NAME",
        "SCOPES",
        "DOMAINS",
        "EXPIRES",
        "REVOKED",
        "LAST USED",
        "ID",
    ]);
    for k in tokens {
        t.row([
            k.name,
            list(&k.scopes),
            list(&k.domain_patterns),
            time(k.expires_at),
            time(k.revoked_at),
            time(k.last_used_at),
            k.id.to_string(),
        ]);
    }
    t.print();
}

/// Runs `certkeep token ...`.
pub(crate) async fn run(s: &Session, command: TokenCommand) -> Result<(), CliError> {
    match command {
        TokenCommand::Create {
            name,
            scopes,
            domain_patterns,
            expires_in,
        } => {
            let expires_at = expires_in
                .map(|e| {
                    let span = certkeep_server::domain::span::parse_span(&e)
                        .map_err(|err| CliError::Usage(format!("--expires-in {e}: {err}")))?;
                    if !span.is_positive() {
                        return Err(CliError::Usage(format!(
                            "--expires-in {e}: must be longer than zero"
                        )));
                    }
                    Ok(certkeep_server::now() + span)
                })
                .transpose()?;
            let req = CreateTokenRequest {
                name,
                scopes,
                domain_patterns,
                expires_at,
            };
            s.print(
                s.client.json(Method::POST, "/tokens", Some(&req)).await?,
                |c: CreatedTokenResponse| {
                    token_table(vec![c.token]);
                    println!("\nsecret (shown once; store it now):\n{}", c.secret);
                },
            );
        }
        TokenCommand::List => s.print(s.client.get("/tokens").await?, token_table),
        TokenCommand::Revoke { id } => {
            s.print(s.client.post(&format!("/tokens/{id}/revoke")).await?, |t| {
                token_table(vec![t])
            });
        }
    }
    Ok(())
}

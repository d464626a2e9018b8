//! `certkeep cert edit`: lifecycle commands of the `cert` resource, through the API.

use certkeep_api_types::api::CertificateResponse;
use certkeep_api_types::enums::KeyType;
use certkeep_api_types::lifecycle::EditCertificateRequest;
use clap::Subcommand;
use reqwest::Method;

use crate::cert::cert_table;
use crate::client::{CliError, encode};
use crate::session::Session;

#[derive(Subcommand, Debug)]
pub(crate) enum LifecycleCommand {
    /// Change a certificate's names, key type or key reuse. A change of names or key type is
    /// issued through a new order; the current version stays installed until then.
    #[command(
        after_help = "Example:\n  certkeep cert edit www --add-dns api.example.edu --remove-dns old.example.edu\n  certkeep cert edit www --key-type rsa3072 --no-reuse-key"
    )]
    Edit {
        /// Certificate name or id.
        certificate: String,
        /// DNS name to add; repeatable.
        #[arg(long = "add-dns", value_name = "NAME")]
        add_dns_names: Vec<String>,
        /// DNS name to remove; repeatable.
        #[arg(long = "remove-dns", value_name = "NAME")]
        remove_dns_names: Vec<String>,
        /// New key type.
        #[arg(long, value_enum, ignore_case = true)]
        key_type: Option<KeyType>,
        /// Renewals reuse the current key while its type matches.
        #[arg(long, conflicts_with = "no_reuse_key")]
        reuse_key: bool,
        /// Renewals make a new key (the default).
        #[arg(long)]
        no_reuse_key: bool,
    },
}

/// Runs the lifecycle commands of `certkeep cert`.
pub(crate) async fn run(s: &Session, command: LifecycleCommand) -> Result<(), CliError> {
    match command {
        LifecycleCommand::Edit {
            certificate,
            add_dns_names,
            remove_dns_names,
            key_type,
            reuse_key,
            no_reuse_key,
        } => {
            let req = EditCertificateRequest {
                add_dns_names,
                remove_dns_names,
                key_type,
                reuse_key: (reuse_key || no_reuse_key).then_some(reuse_key),
            };
            let path = format!("/certificates/{}", encode(&certificate));
            let answer: (CertificateResponse, _) =
                s.client.json(Method::PATCH, &path, Some(&req)).await?;
            s.print(answer, |c| cert_table(vec![c]));
        }
    }
    Ok(())
}

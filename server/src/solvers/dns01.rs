//! dns-01 through RFC 2136 dynamic updates signed with TSIG (RFC 8945). hickory-proto builds,
//! signs, verifies and parses every message; this module only carries them over UDP, finds the
//! zone (SOA) and its authoritative servers (NS), and waits until each of them answers the new
//! TXT record before the CA is told to look. Errors name the server and the TSIG key, never the
//! secret.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use hickory_proto::op::{Message, Query, ResponseCode, update_message};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::rdata::tsig::{TSIG, TsigAlgorithm};
use hickory_proto::rr::{Name, RData, Record, RecordSet, RecordType, TSigner};
use sha2::{Digest as _, Sha256};
use tokio::net::UdpSocket;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::acme::CaChallenge;
use crate::config::{self, Dns01Config};
use crate::engine::challenge::{ChallengeSolver, DNS01};

/// TTL of the challenge records, in seconds.
const TXT_TTL: u32 = 60;
/// Clock difference the server may accept on a TSIG signature, in seconds.
const TSIG_FUDGE: u16 = 300;
/// Pause between two rounds of asking the authoritative servers for a new record.
const PROPAGATION_POLL: Duration = Duration::from_millis(200);
/// Largest DNS message accepted over UDP.
const MAX_UDP: usize = 65_535;

/// A dns-01 solver for one DNS suffix: updates go to one primary server, signed with one key.
pub struct Dns01Solver {
    server: SocketAddr,
    signer: TSigner,
    algorithm: config::TsigAlgorithm,
    zone: Option<Name>,
    nameserver_port: u16,
    timeout: Duration,
    propagation_timeout: Duration,
}

/// Timeouts shared by every dns-01 solver.
#[derive(Debug, Clone, Copy)]
pub struct DnsTimeouts {
    /// One request (update or query).
    pub request: Duration,
    /// Until every authoritative server answers a new record.
    pub propagation: Duration,
}

impl Dns01Solver {
    /// A solver for `config` with the TSIG `secret` (raw key bytes).
    pub fn new(config: &Dns01Config, secret: &[u8], timeouts: DnsTimeouts) -> Result<Self, String> {
        let key_name = Name::from_ascii(&config.key_name)
            .map_err(|e| format!("TSIG key name `{}`: {e}", config.key_name))?;
        let algorithm = match config.algorithm {
            config::TsigAlgorithm::HmacSha256 => TsigAlgorithm::HmacSha256,
            config::TsigAlgorithm::HmacSha384 => TsigAlgorithm::HmacSha384,
            config::TsigAlgorithm::HmacSha512 => TsigAlgorithm::HmacSha512,
        };
        let signer = TSigner::new(secret.to_vec(), algorithm, key_name, TSIG_FUDGE)
            .map_err(|e| format!("TSIG key `{}`: {e}", config.key_name))?;
        let zone = config
            .zone
            .as_deref()
            .map(|z| fqdn(z).map_err(|e| format!("zone `{z}`: {e}")))
            .transpose()?;
        Ok(Self {
            server: config.server,
            signer,
            algorithm: config.algorithm,
            zone,
            nameserver_port: config.nameserver_port,
            timeout: timeouts.request,
            propagation_timeout: timeouts.propagation,
        })
    }

    fn key_name(&self) -> &Name {
        self.signer.signer_name()
    }

    /// The zone holding `record`: configured, or the owner of the SOA the primary returns.
    async fn zone_for(&self, record: &Name) -> Result<Name, String> {
        let zone = match &self.zone {
            Some(zone) => zone.clone(),
            None => {
                let response = query(self.server, record, RecordType::SOA, self.timeout).await?;
                response
                    .answers
                    .iter()
                    .chain(&response.authorities)
                    .find(|r| matches!(r.data, RData::SOA(_)))
                    .map(|r| r.name.clone())
                    .ok_or_else(|| {
                        format!(
                            "{} named no zone (SOA) for {record}; set `zone` for this solver",
                            self.server
                        )
                    })?
            }
        };
        if zone.zone_of(record) {
            Ok(zone)
        } else {
            Err(format!("{record} is not in zone {zone}"))
        }
    }

    /// The authoritative servers of `zone` (its NS records, asked of the primary), at
    /// `nameserver_port`. Addresses come from the primary's glue, else from the system resolver.
    async fn nameservers(&self, zone: &Name) -> Result<Vec<(Name, SocketAddr)>, String> {
        let response = query(self.server, zone, RecordType::NS, self.timeout).await?;
        let hosts: Vec<Name> = response
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::NS(ns) => Some(ns.0.clone()),
                _ => None,
            })
            .collect();
        if hosts.is_empty() {
            return Err(format!("{} lists no NS records for {zone}", self.server));
        }
        let mut servers = Vec::new();
        for host in hosts {
            let glue: Vec<SocketAddr> = response
                .additionals
                .iter()
                .filter(|r| r.name == host)
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(SocketAddr::from((a.0, self.nameserver_port))),
                    RData::AAAA(a) => Some(SocketAddr::from((a.0, self.nameserver_port))),
                    _ => None,
                })
                .collect();
            let addresses = if glue.is_empty() {
                let ascii = host.to_ascii();
                tokio::net::lookup_host((ascii.trim_end_matches('.'), self.nameserver_port))
                    .await
                    .map_err(|e| format!("cannot resolve name server {host} of {zone}: {e}"))?
                    .collect()
            } else {
                glue
            };
            servers.extend(addresses.into_iter().map(|a| (host.clone(), a)));
        }
        Ok(servers)
    }

    /// Sends a signed update and checks the signed answer.
    async fn update(&self, mut message: Message, what: &str) -> Result<(), String> {
        let context = format!("DNS update ({what})");
        let signed_at = u64::try_from(crate::now().unix_timestamp()).unwrap_or_default();
        let verifier = message
            .finalize(&self.signer, signed_at)
            .map_err(|e| format!("{context}: cannot sign: {e}"))?;
        let (response, bytes) = exchange(self.server, &message, self.timeout)
            .await
            .map_err(|e| format!("{context}: {e}"))?;
        if response.metadata.response_code != ResponseCode::NoError {
            return Err(format!(
                "{context} failed: {}",
                update_failure(response.metadata.response_code, response.signature())
            ));
        }
        match verifier {
            Some(mut verifier) => verifier.verify(&bytes).map(drop).map_err(|e| {
                format!("{context}: the answer's TSIG signature does not verify ({e})")
            }),
            None => Err(format!("{context}: the update was not signed")),
        }
    }

    /// Asks every server until each answers `value` at `record`, or the propagation timeout.
    async fn wait_visible(
        &self,
        record: &Name,
        value: &str,
        servers: &[(Name, SocketAddr)],
    ) -> Result<(), String> {
        let deadline = Instant::now() + self.propagation_timeout;
        let mut missing: Vec<&(Name, SocketAddr)> = servers.iter().collect();
        loop {
            let mut still = Vec::new();
            let mut last_error = None;
            for server in missing {
                match lookup_txt(server.1, &record.to_ascii(), self.timeout).await {
                    Ok(values) if values.iter().any(|v| v == value) => {}
                    Ok(_) => still.push(server),
                    Err(e) => {
                        last_error = Some(e);
                        still.push(server);
                    }
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let names: Vec<String> = still.iter().map(|(n, a)| format!("{n} ({a})")).collect();
                return Err(format!(
                    "TXT {record} was added but {} did not answer it within {} s{}",
                    names.join(", "),
                    self.propagation_timeout.as_secs(),
                    last_error
                        .map(|e| format!("; last error: {e}"))
                        .unwrap_or_default()
                ));
            }
            missing = still;
            tokio::time::sleep(PROPAGATION_POLL).await;
        }
    }

    /// The TXT record set for `challenge` of `name`.
    fn record_set(
        name: &str,
        challenge: &CaChallenge,
    ) -> Result<(Name, String, RecordSet), String> {
        let record = fqdn(&format!(
            "_acme-challenge.{}",
            name.strip_prefix("*.").unwrap_or(name)
        ))?;
        let value = txt_value(&challenge.key_authorization);
        let rrset = RecordSet::from(Record::from_rdata(
            record.clone(),
            TXT_TTL,
            RData::TXT(TXT::new(vec![value.clone()])),
        ));
        Ok((record, value, rrset))
    }

    /// `error` with the primary server and key name that were used.
    fn with_server(&self, error: String) -> String {
        format!(
            "{error} (primary server {}, TSIG key {})",
            self.server,
            self.key_name()
        )
    }

    async fn publish(&self, name: &str, challenge: &CaChallenge) -> Result<String, String> {
        let (record, value, rrset) = Self::record_set(name, challenge)?;
        let zone = self.zone_for(&record).await?;
        let started = Instant::now();
        self.update(
            update_message::append(rrset, zone.clone(), false, false),
            &format!("add TXT {record}"),
        )
        .await?;
        let servers = self.nameservers(&zone).await?;
        self.wait_visible(&record, &value, &servers).await?;
        let names: Vec<String> = servers.iter().map(|(n, a)| format!("{n} ({a})")).collect();
        Ok(format!(
            "TXT {record} added to zone {zone} at {} with TSIG key {}; answered by {} after {} ms",
            self.server,
            self.key_name(),
            names.join(", "),
            started.elapsed().as_millis()
        ))
    }

    async fn remove(&self, name: &str, challenge: &CaChallenge) -> Result<String, String> {
        let (record, _, rrset) = Self::record_set(name, challenge)?;
        let zone = self.zone_for(&record).await?;
        self.update(
            update_message::delete_by_rdata(rrset, zone.clone(), false),
            &format!("delete TXT {record}"),
        )
        .await?;
        Ok(format!(
            "TXT {record} removed from zone {zone} at {} with TSIG key {}",
            self.server,
            self.key_name()
        ))
    }
}

#[async_trait]
impl ChallengeSolver for Dns01Solver {
    fn kinds(&self) -> &[&'static str] {
        &[DNS01]
    }

    fn describe(&self) -> String {
        format!(
            "dns-01 by RFC 2136 update to {} with TSIG key {} ({})",
            self.server,
            self.key_name(),
            self.algorithm.name()
        )
    }

    async fn present(&self, name: &str, challenge: &CaChallenge) -> Result<String, String> {
        self.publish(name, challenge)
            .await
            .map_err(|e| self.with_server(e))
    }

    async fn cleanup(&self, name: &str, challenge: &CaChallenge) -> Result<String, String> {
        self.remove(name, challenge)
            .await
            .map_err(|e| self.with_server(e))
    }
}

/// The dns-01 TXT value: base64url (unpadded) SHA-256 of the key authorization (RFC 8555 8.4).
pub fn txt_value(key_authorization: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(key_authorization.as_bytes()))
}

/// Decodes a TSIG secret as BIND writes it (standard base64, whitespace ignored).
pub fn decode_secret(text: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let cleaned: Zeroizing<String> =
        Zeroizing::new(text.chars().filter(|c| !c.is_whitespace()).collect());
    if cleaned.is_empty() {
        return Err("the TSIG secret is empty".into());
    }
    base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| "the TSIG secret is not base64 (as in BIND's `secret \"...\"`)".into())
}

/// The TXT strings `server` holds at `name` (empty when the name does not exist). Unsigned,
/// non-recursive: meant for authoritative servers.
pub async fn lookup_txt(
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let response = query(server, &fqdn(name)?, RecordType::TXT, timeout).await?;
    Ok(response
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|part| String::from_utf8_lossy(part))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// `name` as an absolute DNS name.
fn fqdn(name: &str) -> Result<Name, String> {
    let mut parsed = Name::from_ascii(name).map_err(|e| format!("`{name}`: {e}"))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// One non-recursive query; NXDOMAIN is an empty answer, other failures are errors.
async fn query(
    server: SocketAddr,
    name: &Name,
    kind: RecordType,
    timeout: Duration,
) -> Result<Message, String> {
    let mut message = Message::query();
    message.metadata.recursion_desired = false;
    message.add_query(Query::query(name.clone(), kind));
    let (response, _) = exchange(server, &message, timeout)
        .await
        .map_err(|e| format!("{kind} query for {name} at {server}: {e}"))?;
    match response.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => Ok(response),
        code => Err(format!(
            "{kind} query for {name} at {server} failed: {}",
            rcode_text(code)
        )),
    }
}

/// Sends `request` to `server` over UDP; returns the answer with the same id, parsed and raw.
async fn exchange(
    server: SocketAddr,
    request: &Message,
    timeout: Duration,
) -> Result<(Message, Vec<u8>), String> {
    let bytes = request
        .to_vec()
        .map_err(|e| format!("cannot encode the request: {e}"))?;
    let local = if server.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let io = |e: std::io::Error| format!("no DNS answer ({e})");
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(server).await.map_err(io)?;
    socket.send(&bytes).await.map_err(io)?;
    let receive = async {
        let mut buffer = vec![0u8; MAX_UDP];
        loop {
            let n = socket.recv(&mut buffer).await.map_err(io)?;
            let Ok(response) = Message::from_vec(&buffer[..n]) else {
                continue;
            };
            if response.metadata.id == request.metadata.id {
                if response.metadata.truncation {
                    return Err("the answer was truncated (too large for UDP)".to_owned());
                }
                buffer.truncate(n);
                return Ok((response, buffer));
            }
        }
    };
    tokio::time::timeout(timeout, receive)
        .await
        .map_err(|_| format!("no DNS answer within {} ms", timeout.as_millis()))?
}

/// A response code as its RFC mnemonic and meaning: `REFUSED (Query Refused)`.
fn rcode_text(code: ResponseCode) -> String {
    format!("{} ({})", format!("{code:?}").to_uppercase(), code.to_str())
}

/// A failed update's response code, with the TSIG error when the server sent one, and a hint.
fn update_failure(code: ResponseCode, tsig: Option<&Record<TSIG>>) -> String {
    let hint = match (code, tsig.and_then(|r| r.data.error)) {
        (_, Some(e)) => {
            let e = format!("{e:?}").to_uppercase();
            let why = match e.as_str() {
                "BADSIG" => "the server rejects the signature: check the TSIG secret and algorithm",
                "BADKEY" => "the server does not know this TSIG key name and algorithm",
                "BADTIME" => "the clocks of this host and the server differ too much",
                _ => "TSIG error",
            };
            format!(", TSIG {e}: {why}")
        }
        (ResponseCode::Refused, None) => {
            ": the server refuses this update (check its update-policy or allow-update for the key and name)".into()
        }
        (ResponseCode::NotAuth, None) => {
            ": the server is not authoritative for the zone or does not accept the key".into()
        }
        (ResponseCode::NotZone, None) => ": the name is not in the zone given".into(),
        _ => String::new(),
    };
    format!("{}{hint}", rcode_text(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_value_is_the_rfc_8555_digest() {
        // RFC 8555 section 8.4: base64url(SHA-256(key authorization)), no padding.
        let value = txt_value("token.thumbprint");
        assert_eq!(value.len(), 43);
        assert!(!value.contains('='));
        assert_eq!(value, txt_value("token.thumbprint"));
        assert_ne!(value, txt_value("token.other"));
    }

    #[test]
    fn secrets_decode_like_bind_and_errors_do_not_echo_them() {
        let raw = decode_secret(" c2VjcmV0c2VjcmV0c2VjcmV0\nc2VjcmV0c2VjcmV0MTI= ").unwrap();
        assert_eq!(&raw[..], b"secretsecretsecretsecretsecret12");
        let err = decode_secret("not base64 at all!").unwrap_err();
        assert!(!err.contains("not base64 at all"), "{err}");
        assert!(decode_secret(" \n").is_err());
    }

    #[test]
    fn failures_name_the_code_and_the_tsig_error() {
        let refused = update_failure(ResponseCode::Refused, None);
        assert!(refused.starts_with("REFUSED (Query Refused)"), "{refused}");
        assert!(refused.contains("update-policy"), "{refused}");
        assert!(update_failure(ResponseCode::NotAuth, None).starts_with("NOTAUTH"));
        assert_eq!(
            rcode_text(ResponseCode::ServFail),
            "SERVFAIL (Server Failure)"
        );
    }

    #[test]
    fn record_names_strip_the_wildcard() {
        let challenge = CaChallenge {
            kind: DNS01.into(),
            url: "u".into(),
            token: "t".into(),
            pending: true,
            key_authorization: "t.k".into(),
            error: None,
        };
        let (plain, value, _) = Dns01Solver::record_set("example.test", &challenge).unwrap();
        let (wild, _, _) = Dns01Solver::record_set("*.example.test", &challenge).unwrap();
        assert_eq!(plain, wild);
        assert_eq!(plain.to_ascii(), "_acme-challenge.example.test.");
        assert_eq!(value, txt_value("t.k"));
    }
}

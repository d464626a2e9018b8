//! Revocation done outside certkeep, read from a CRL: where a leaf's CRLs are, and whether a
//! CRL that verifies against the leaf's issuer lists the leaf. Pure: bytes in, verdict out.

use time::OffsetDateTime;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer as _;
use x509_parser::revocation_list::CertificateRevocationList;

/// What a verified CRL says about one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrlVerdict {
    /// `Some(reason)` (RFC 5280 code; 0 when the entry gives none) when the serial is listed.
    pub revoked: Option<u8>,
    /// When the CA publishes the next CRL (the cached one is used until then).
    pub next_update: Option<OffsetDateTime>,
}

/// The http(s) URIs of a leaf's CRL distribution points, in order.
pub fn crl_urls(leaf_der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(leaf_der) else {
        return Vec::new();
    };
    let mut urls = Vec::new();
    for ext in cert.extensions() {
        let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() else {
            continue;
        };
        for point in points.iter() {
            if let Some(DistributionPointName::FullName(names)) = &point.distribution_point {
                for name in names {
                    if let GeneralName::URI(uri) = name
                        && (uri.starts_with("http://") || uri.starts_with("https://"))
                    {
                        urls.push((*uri).to_owned());
                    }
                }
            }
        }
    }
    urls
}

/// Reads `crl` (DER, or PEM `X509 CRL`), checks it was issued and signed by `issuer_der` (the
/// leaf's issuer from the stored chain), and looks up `leaf_der`'s serial. A CRL that does not
/// verify is an error: it is never trusted.
pub fn check_crl(crl: &[u8], issuer_der: &[u8], leaf_der: &[u8]) -> Result<CrlVerdict, String> {
    let pem;
    let der = if crl.starts_with(b"-----BEGIN") {
        pem = x509_parser::pem::parse_x509_pem(crl)
            .map_err(|e| format!("the CRL is not valid PEM: {e}"))?
            .1;
        pem.contents.as_slice()
    } else {
        crl
    };
    let (_, list) = CertificateRevocationList::from_der(der)
        .map_err(|e| format!("the CRL does not parse: {e}"))?;
    let (_, issuer) = x509_parser::certificate::X509Certificate::from_der(issuer_der)
        .map_err(|e| format!("the stored issuer does not parse: {e}"))?;
    let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(leaf_der)
        .map_err(|e| format!("the stored leaf does not parse: {e}"))?;
    if list.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(format!(
            "the CRL was issued by `{}`, not by the certificate's issuer `{}`",
            list.issuer(),
            issuer.subject()
        ));
    }
    list.verify_signature(issuer.public_key()).map_err(|e| {
        format!(
            "the CRL's signature does not verify against the issuer `{}` in the stored chain ({e})",
            issuer.subject()
        )
    })?;
    let revoked = list
        .iter_revoked_certificates()
        .find(|r| r.raw_serial() == leaf.raw_serial())
        .map(|r| r.reason_code().map_or(0, |(_, code)| code.0));
    Ok(CrlVerdict {
        revoked,
        next_update: list.next_update().map(|t| t.to_datetime()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::CrlCa;

    #[test]
    fn a_verified_crl_listing_the_serial_revokes_with_its_reason() {
        let ca = CrlCa::new("certkeep CRL test CA");
        let url = "http://127.0.0.1:9/ca.crl";
        let (leaf, _) = ca.leaf(&["www.example.edu"], 0x1234, url);
        assert_eq!(crl_urls(&leaf), [url]);

        let verdict = check_crl(&ca.crl(&[0x1234, 7], crate::now()), &ca.der, &leaf).unwrap();
        assert_eq!(verdict.revoked, Some(1), "key compromise");
        assert!(verdict.next_update.is_some());
        let clean = check_crl(&ca.crl(&[7], crate::now()), &ca.der, &leaf).unwrap();
        assert_eq!(clean.revoked, None);
        // PEM works too.
        let pem = certkeep_api_types::pem::encode("X509 CRL", &ca.crl(&[0x1234], crate::now()));
        assert_eq!(
            check_crl(pem.as_bytes(), &ca.der, &leaf).unwrap().revoked,
            Some(1)
        );
    }

    #[test]
    fn a_crl_that_does_not_verify_is_not_trusted() {
        let ca = CrlCa::new("certkeep CRL test CA");
        let (leaf, _) = ca.leaf(&["www.example.edu"], 0x1234, "http://127.0.0.1:9/ca.crl");
        // Same name, other key: the signature fails.
        let impostor = CrlCa::new("certkeep CRL test CA");
        let err = check_crl(&impostor.crl(&[0x1234], crate::now()), &ca.der, &leaf).unwrap_err();
        assert!(err.contains("signature does not verify"), "{err}");
        let other = CrlCa::new("another CA");
        let err = check_crl(&other.crl(&[0x1234], crate::now()), &ca.der, &leaf).unwrap_err();
        assert!(err.contains("not by the certificate's issuer"), "{err}");
        assert!(check_crl(b"garbage", &ca.der, &leaf).is_err());
        assert!(crl_urls(b"garbage").is_empty());
    }
}

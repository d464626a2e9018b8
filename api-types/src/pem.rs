//! PEM encoding of DER blocks (certificates, PKCS#8 keys); decoding is x509-parser's job.

use base64::{Engine, engine::general_purpose::STANDARD};
use zeroize::Zeroizing;

/// A PEM block with 64-column base64 lines, built without reallocating since it may hold a key.
pub fn encode(label: &str, der: &[u8]) -> String {
    let body = Zeroizing::new(STANDARD.encode(der));
    let mut out = String::with_capacity(body.len() + body.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
mod tests {
    use x509_parser::pem::Pem;

    #[test]
    fn round_trips_through_x509_parser() {
        let der: Vec<u8> = (0..=255).collect();
        let text = super::encode("CERTIFICATE", &der);
        assert!(text.lines().all(|l| l.len() <= 64));
        let block = Pem::iter_from_buffer(text.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(block.label, "CERTIFICATE");
        assert_eq!(block.contents, der);
    }
}

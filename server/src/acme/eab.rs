//! Lenient decoding of the EAB HMAC key a CA hands out (base64url text, often copied with
//! padding, line breaks or the standard alphabet).

use base64::Engine as _;
use zeroize::Zeroizing;

use super::AcmeError;

/// Shortest accepted EAB HMAC key, in bytes.
pub const MIN_EAB_KEY_BYTES: usize = 32;

/// Decodes an EAB HMAC key leniently: surrounding and inner whitespace, `=` padding and both
/// base64 alphabets are accepted. Keys under [`MIN_EAB_KEY_BYTES`] bytes are refused.
pub fn decode_eab_hmac(text: &str) -> Result<Zeroizing<Vec<u8>>, AcmeError> {
    let cleaned: Zeroizing<String> = Zeroizing::new(
        text.chars()
            .filter(|c| !c.is_whitespace() && *c != '=')
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect(),
    );
    if cleaned.is_empty() {
        return Err(AcmeError::Config("the EAB HMAC key is empty".into()));
    }
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cleaned.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| {
            AcmeError::Config(
                "the EAB HMAC key is not valid base64 (base64url or standard alphabet, padding optional)".into(),
            )
        })?;
    if key.len() < MIN_EAB_KEY_BYTES {
        return Err(AcmeError::Config(format!(
            "the EAB HMAC key decodes to {} bytes; at least {MIN_EAB_KEY_BYTES} are required (check that the whole key was copied)",
            key.len()
        )));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eab_keys_decode_leniently() {
        let raw: Vec<u8> = (0u8..64)
            .map(|i| i.wrapping_mul(37).wrapping_add(250))
            .collect();
        let url_nopad = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        let url_pad = base64::engine::general_purpose::URL_SAFE.encode(&raw);
        let std_pad = base64::engine::general_purpose::STANDARD.encode(&raw);
        assert!(
            std_pad.contains('+') || std_pad.contains('/'),
            "the sample must exercise the alphabets"
        );
        let spaced = format!("  {}\n {} \t", &url_nopad[..20], &url_nopad[20..]);
        for text in [&url_nopad, &url_pad, &std_pad, &spaced] {
            assert_eq!(&decode_eab_hmac(text).unwrap()[..], &raw[..], "{text:?}");
        }
        let key32 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 32]);
        assert_eq!(decode_eab_hmac(&key32).unwrap().len(), 32);
    }

    #[test]
    fn short_or_garbage_eab_keys_are_refused_clearly() {
        let short = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([1u8; 16]);
        let err = decode_eab_hmac(&short).unwrap_err().to_string();
        assert!(err.contains("16 bytes") && err.contains("32"), "{err}");
        assert!(!err.contains(&short), "the key must not be echoed: {err}");
        assert!(
            decode_eab_hmac("   ")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(
            decode_eab_hmac("not*base64!")
                .unwrap_err()
                .to_string()
                .contains("base64")
        );
    }
}

//! DNS names: validation, IDN normalisation (A-labels for ACME, Unicode for display) and the
//! domain patterns (`example.edu`, `*.example.edu`) that scope accounts and tokens.

/// Most names one certificate may carry (ACME CAs allow about 100).
pub const MAX_NAMES: usize = 100;

/// Why a DNS name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("`{0}` is empty or has an empty label")]
    EmptyLabel(String),
    #[error("`{0}` is longer than 253 characters")]
    TooLong(String),
    #[error("`{0}` has a label longer than 63 characters")]
    LabelTooLong(String),
    #[error("`{0}` is an IP address; a DNS name is required")]
    IpAddress(String),
    #[error("`{0}` contains characters not allowed in a DNS name")]
    BadCharacter(String),
    #[error("`{0}`: a wildcard is allowed only as the whole first label (`*.example.com`)")]
    BadWildcard(String),
    #[error("`{0}` is not a valid internationalised domain name")]
    Idna(String),
    #[error("`{0}` needs at least two labels")]
    SingleLabel(String),
    #[error("too many names: {0} (at most {MAX_NAMES})")]
    TooMany(usize),
    #[error("no names given")]
    NoNames,
    #[error("`{0}` is listed twice")]
    Duplicate(String),
}

/// Normalises one name to its lower-case A-label form, refusing anything that is not a plain
/// DNS name (optionally with a leading `*.` wildcard label).
pub fn normalize(name: &str) -> Result<String, NameError> {
    let original = name;
    let name = name.trim().trim_end_matches('.');
    if name.len() > 1024 {
        return Err(NameError::TooLong(truncate(original)));
    }
    let bracketless = name.trim_start_matches('[').trim_end_matches(']');
    if bracketless.parse::<std::net::IpAddr>().is_ok() {
        return Err(NameError::IpAddress(original.into()));
    }
    let (wildcard, rest) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    if rest.contains('*') {
        return Err(NameError::BadWildcard(original.into()));
    }
    if rest.is_empty() || rest.split('.').any(str::is_empty) {
        return Err(NameError::EmptyLabel(original.into()));
    }
    if rest
        .chars()
        .any(|c| c.is_ascii() && !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    {
        return Err(NameError::BadCharacter(original.into()));
    }
    if rest.is_ascii() && rest.split('.').any(|l| l.len() > 63) {
        return Err(NameError::LabelTooLong(original.into()));
    }
    if rest.is_ascii() && rest.len() > 253 {
        return Err(NameError::TooLong(truncate(original)));
    }
    let ascii = idna::domain_to_ascii_strict(rest).map_err(|_| NameError::Idna(original.into()))?;
    if ascii.len() > 253 - if wildcard { 2 } else { 0 } {
        return Err(NameError::TooLong(truncate(original)));
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return Err(NameError::EmptyLabel(original.into()));
    }
    if labels.iter().any(|l| l.len() > 63) {
        return Err(NameError::LabelTooLong(original.into()));
    }
    if labels
        .iter()
        .any(|l| l.starts_with('-') || l.ends_with('-'))
    {
        return Err(NameError::BadCharacter(original.into()));
    }
    if labels.len() < 2 {
        return Err(NameError::SingleLabel(original.into()));
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(NameError::IpAddress(original.into()));
    }
    Ok(if wildcard {
        format!("*.{ascii}")
    } else {
        ascii
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(40).chain("…".chars()).collect()
}

/// Normalises a list of names for one certificate: each valid, no duplicates, 1..=MAX_NAMES.
pub fn normalize_all(names: &[String]) -> Result<Vec<String>, NameError> {
    if names.is_empty() {
        return Err(NameError::NoNames);
    }
    if names.len() > MAX_NAMES {
        return Err(NameError::TooMany(names.len()));
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let n = normalize(name)?;
        if out.contains(&n) {
            return Err(NameError::Duplicate(name.clone()));
        }
        out.push(n);
    }
    Ok(out)
}

/// The Unicode display form of an A-label name.
pub fn to_unicode(name: &str) -> String {
    let (prefix, rest) = match name.strip_prefix("*.") {
        Some(rest) => ("*.", rest),
        None => ("", name),
    };
    let (unicode, result) = idna::domain_to_unicode(rest);
    match result {
        Ok(()) => format!("{prefix}{unicode}"),
        Err(_) => name.to_owned(),
    }
}

/// Validates and normalises a domain pattern: an exact name or `*.suffix`.
pub fn normalize_pattern(pattern: &str) -> Result<String, NameError> {
    normalize(pattern)
}

/// Whether normalised `name` is covered by normalised `pattern`. `*.example.edu` covers
/// `a.example.edu`, `a.b.example.edu` and the wildcard `*.example.edu`, but not `example.edu`.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return pattern == name;
    };
    let below = |n: &str| {
        n.strip_suffix(suffix)
            .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
    };
    match name.strip_prefix("*.") {
        Some(rest) => rest == suffix || below(rest),
        None => below(name),
    }
}

/// Whether every name is covered by at least one of the patterns.
pub fn all_covered(patterns: &[String], names: &[String]) -> Result<(), String> {
    match names
        .iter()
        .find(|n| !patterns.iter().any(|p| pattern_matches(p, n)))
    {
        Some(outside) => Err(outside.clone()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_wildcard_and_idn() {
        assert_eq!(normalize("WWW.Example.EDU.").unwrap(), "www.example.edu");
        assert_eq!(normalize("*.example.edu").unwrap(), "*.example.edu");
        let ascii = normalize("Мороженое.РФ").unwrap();
        assert!(
            ascii.starts_with("xn--") && ascii.ends_with(".xn--p1ai"),
            "{ascii}"
        );
        assert_eq!(to_unicode(&ascii), "мороженое.рф");
        assert_eq!(to_unicode("*.xn--p1ai.xn--p1ai"), "*.рф.рф");
    }

    #[test]
    fn refuses_bad_names() {
        for bad in [
            "",
            "../x",
            "a..b",
            ".a.b",
            "a/b.com",
            "192.168.1.1",
            "::1",
            "[::1]",
            "*.*.a.com",
            "a.*.com",
            "foo",
            "-a.com",
            "a-.com",
            "a b.com",
            "x\\y.com",
            "a.123",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} was accepted");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert_eq!(
            normalize(&long_label),
            Err(NameError::LabelTooLong(long_label.clone()))
        );
        let long = format!("{}com", "abcdefghi.".repeat(26));
        assert!(matches!(normalize(&long), Err(NameError::TooLong(_))));
    }

    #[test]
    fn lists_are_bounded_and_unique() {
        let many: Vec<String> = (0..10_000).map(|i| format!("h{i}.example.com")).collect();
        assert_eq!(normalize_all(&many), Err(NameError::TooMany(10_000)));
        assert_eq!(normalize_all(&[]), Err(NameError::NoNames));
        let dup = vec!["a.example.com".to_owned(), "A.example.com".to_owned()];
        assert!(matches!(normalize_all(&dup), Err(NameError::Duplicate(_))));
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("*.example.edu", "a.example.edu"));
        assert!(pattern_matches("*.example.edu", "a.b.example.edu"));
        assert!(pattern_matches("*.example.edu", "*.example.edu"));
        assert!(pattern_matches("*.example.edu", "*.a.example.edu"));
        assert!(!pattern_matches("*.example.edu", "example.edu"));
        assert!(!pattern_matches("*.example.edu", "badexample.edu"));
        assert!(pattern_matches("example.edu", "example.edu"));
        assert!(!pattern_matches("example.edu", "a.example.edu"));
        let pats = vec!["example.edu".to_owned(), "*.example.edu".to_owned()];
        assert_eq!(
            all_covered(&pats, &["www.example.edu".into(), "example.edu".into()]),
            Ok(())
        );
        assert_eq!(
            all_covered(&pats, &["www.other.edu".into()]),
            Err("www.other.edu".into())
        );
    }
}

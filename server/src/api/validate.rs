//! Field checks shared by the resource handlers. Each failure names the field.

use super::error::ApiError;
use crate::domain::names::normalize_pattern;

/// Longest accepted secret (password, HMAC key) in bytes.
const MAX_SECRET: usize = 1024;

/// Default and largest page size of the paged lists (certificates, audit events).
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

/// The page size of a list: `limit` when given, 1 to 1000, else 100.
pub fn page_limit(field: &str, limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::field(field, format!("must be 1 to {MAX_PAGE}")))
    }
}

/// A resource name: 1 to 64 of letters, digits, `.`, `_`, `-`, starting with a letter or digit.
pub fn name(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            "must be 1 to 64 letters, digits, `.`, `_` or `-`, starting with a letter or digit",
        ))
    }
}

/// Free text such as a token description: 1 to 100 characters, no control characters.
pub fn label(field: &str, value: &str) -> Result<(), ApiError> {
    let n = value.chars().count();
    if (1..=100).contains(&n) && !value.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            "must be 1 to 100 characters without control characters",
        ))
    }
}

/// A secret given by the caller: not empty, at most 1 KiB, no NUL.
pub fn secret(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_SECRET || value.contains('\0') {
        return Err(ApiError::field(
            field,
            format!("must be 1 to {MAX_SECRET} bytes without NUL"),
        ));
    }
    Ok(())
}

/// Domain patterns (`example.edu`, `*.example.edu`), normalised; at most 100.
pub fn patterns(field: &str, values: &[String]) -> Result<Vec<String>, ApiError> {
    if values.len() > 100 {
        return Err(ApiError::field(
            field,
            format!("at most 100 patterns, got {}", values.len()),
        ));
    }
    values
        .iter()
        .map(|p| normalize_pattern(p).map_err(|e| ApiError::field(field, e.to_string())))
        .collect()
}

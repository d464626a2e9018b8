//! The served OpenAPI document states every constraint the server enforces, so a request valid
//! by the spec is not refused by a field check (what schemathesis reports as "schema-valid
//! request rejected"). Reads the generated document and the handlers' `validate::` call sites.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test: a panic is the failure report"
)]

use std::path::Path;

use serde_json::Value;

/// Keywords that constrain a value.
const CONSTRAINTS: &[&str] = &[
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "enum",
];

/// Constraints the handlers enforce beyond the `validate::` helpers: (schema, field, keywords
/// it must carry).
const REQUEST_FIELDS: &[(&str, &str, &[&str])] = &[
    (
        "CreateAccountRequest",
        "name",
        &["minLength", "maxLength", "pattern"],
    ),
    ("CreateAccountRequest", "directory_url", &["pattern"]),
    (
        "CreateAccountRequest",
        "contact",
        &["maxItems", "items.pattern", "items.maxLength"],
    ),
    (
        "CreateAccountRequest",
        "allowed_domains",
        &["minItems", "maxItems"],
    ),
    (
        "CreateAccountRequest",
        "eab_kid",
        &["minLength", "maxLength", "pattern"],
    ),
    (
        "CreateAccountRequest",
        "eab_hmac_key",
        &["minLength", "maxLength"],
    ),
    (
        "CreateCertificateRequest",
        "name",
        &["minLength", "maxLength", "pattern"],
    ),
    (
        "CreateCertificateRequest",
        "dns_names",
        &["minItems", "maxItems"],
    ),
    ("CreateCertificateRequest", "key_type", &["enum"]),
    (
        "CreateCertificateRequest",
        "renew_fraction",
        &["exclusiveMinimum", "exclusiveMaximum"],
    ),
    (
        "CreateCertificateRequest",
        "renew_days",
        &["minimum", "maximum"],
    ),
    ("DownloadRequest", "password", &["minLength", "maxLength"]),
    ("DownloadRequest", "format", &["enum"]),
    ("DownloadRequest", "encryption", &["enum"]),
    ("RevokeCertificateRequest", "reason", &["enum"]),
    (
        "CreateAgentRequest",
        "name",
        &["minLength", "maxLength", "pattern"],
    ),
    (
        "CreateAgentRequest",
        "ccs_password",
        &["minLength", "maxLength"],
    ),
    ("CreateAgentRequest", "pfx_encryption", &["enum"]),
    (
        "UpdateAgentRequest",
        "ccs_password",
        &["minLength", "maxLength"],
    ),
    (
        "CreateTokenRequest",
        "name",
        &["minLength", "maxLength", "pattern"],
    ),
    ("CreateTokenRequest", "scopes", &["minItems", "items.enum"]),
    ("CreateTokenRequest", "domain_patterns", &["maxItems"]),
];

/// Query parameters the handlers check: (path, parameter, keywords).
const QUERY_PARAMS: &[(&str, &str, &[&str])] = &[
    ("/api/v1/certificates", "limit", &["minimum", "maximum"]),
    ("/api/v1/certificates", "state", &["enum"]),
    ("/api/v1/certificates", "expiring_within", &["pattern"]),
    ("/api/v1/audit-events", "limit", &["minimum", "maximum"]),
];

fn spec() -> Value {
    serde_json::from_str(&certkeep_server::api::openapi_json()).unwrap()
}

/// The keywords constraining `schema`, following `$ref`, `oneOf` (nullable), `allOf` and
/// array items (as `items.<keyword>`).
fn keywords(spec: &Value, schema: &Value) -> Vec<String> {
    let mut out: Vec<String> = schema
        .as_object()
        .map(|o| {
            o.keys()
                .filter(|k| CONSTRAINTS.contains(&k.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        out.extend(keywords(spec, &spec["components"]["schemas"][name]));
    }
    for key in ["oneOf", "allOf", "anyOf"] {
        for s in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.extend(keywords(spec, s));
        }
    }
    if let Some(items) = schema.get("items") {
        out.extend(
            keywords(spec, items)
                .into_iter()
                .map(|k| format!("items.{k}")),
        );
    }
    out
}

/// Names of the schemas used as JSON request bodies.
fn request_schemas(spec: &Value) -> Vec<String> {
    let mut names = Vec::new();
    for item in spec["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            if let Some(r) = op
                .pointer("/requestBody/content/application~1json/schema/$ref")
                .and_then(Value::as_str)
            {
                names.push(r.trim_start_matches("#/components/schemas/").to_owned());
            }
        }
    }
    names
}

/// `(helper, field)` of every `validate::helper("field", ...)` in the API handlers.
fn validate_call_sites() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (at, prefix) in text.match_indices("validate::") {
                    let rest = &text[at + prefix.len()..];
                    let Some((helper, args)) = rest.split_once('(') else {
                        continue;
                    };
                    if !helper
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        continue;
                    }
                    let Some(field) = args
                        .trim_start()
                        .strip_prefix('"')
                        .and_then(|a| a.split_once('"'))
                        .map(|(f, _)| f)
                    else {
                        continue;
                    };
                    out.push((helper.to_owned(), field.to_owned()));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api"),
        &mut out,
    );
    out.sort();
    out.dedup();
    out
}

/// Every place in the spec a field named `field` appears: `(where, schema)` for request-body
/// properties and query parameters.
fn occurrences<'a>(spec: &'a Value, requests: &[String], field: &str) -> Vec<(String, &'a Value)> {
    let mut out = Vec::new();
    for name in requests {
        if let Some(property) = spec["components"]["schemas"][name]["properties"].get(field) {
            out.push((format!("{name}.{field}"), property));
        }
    }
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "query" && p["name"] == field {
                    out.push((format!("{method} {path} ?{field}"), &p["schema"]));
                }
            }
        }
    }
    out
}

#[test]
fn every_validated_field_is_constrained_in_the_spec() {
    let spec = spec();
    let requests = request_schemas(&spec);
    let sites = validate_call_sites();
    assert!(
        sites.len() >= 8,
        "the source scan found too few validate:: call sites: {sites:?}"
    );
    for (helper, field) in &sites {
        let places = occurrences(&spec, &requests, field);
        assert!(
            !places.is_empty(),
            "validate::{helper} checks `{field}`, which no request schema or query has"
        );
        for (place, schema) in places {
            assert!(
                !keywords(&spec, schema).is_empty(),
                "validate::{helper} checks `{field}`, but {place} has no constraint in the spec: {schema}"
            );
        }
    }
}

#[test]
fn handler_checks_are_in_the_spec() {
    let spec = spec();
    for (schema, field, wanted) in REQUEST_FIELDS {
        let property = &spec["components"]["schemas"][schema]["properties"][field];
        assert!(!property.is_null(), "{schema}.{field} is not in the spec");
        let have = keywords(&spec, property);
        for w in *wanted {
            assert!(
                have.iter().any(|h| h == w),
                "{schema}.{field} lacks `{w}` (has {have:?}): {property}"
            );
        }
    }
    for (path, param, wanted) in QUERY_PARAMS {
        let params = spec["paths"][path]["get"]["parameters"].as_array().unwrap();
        let p = params
            .iter()
            .find(|p| p["name"] == *param)
            .unwrap_or_else(|| panic!("GET {path} has no parameter {param}"));
        let have = keywords(&spec, &p["schema"]);
        for w in *wanted {
            assert!(
                have.iter().any(|h| h == w),
                "GET {path} ?{param} lacks `{w}` (has {have:?})"
            );
        }
    }
}

#[test]
fn limits_and_names_match_the_server() {
    let spec = spec();
    for path in ["/api/v1/certificates", "/api/v1/audit-events"] {
        let params = spec["paths"][path]["get"]["parameters"].as_array().unwrap();
        let limit = &params.iter().find(|p| p["name"] == "limit").unwrap()["schema"];
        assert_eq!(
            (limit["minimum"].as_i64(), limit["maximum"].as_i64()),
            (Some(1), Some(1000)),
            "{path}"
        );
    }
    let name = &spec["components"]["schemas"]["ResourceName"];
    assert_eq!(name["minLength"], 1);
    assert_eq!(name["maxLength"], 64);
    let validate = certkeep_server::api::validate::name;
    assert!(validate("name", "").is_err() && validate("name", &"a".repeat(65)).is_err());
    assert!(validate("name", &"a".repeat(64)).is_ok());
    let label = &spec["components"]["schemas"]["Label"];
    assert_eq!(
        (label["minLength"].as_u64(), label["maxLength"].as_u64()),
        (Some(1), Some(100))
    );
    let secret = &spec["components"]["schemas"]["Secret"];
    assert_eq!(
        (secret["minLength"].as_u64(), secret["maxLength"].as_u64()),
        (Some(1), Some(1024))
    );
    // The vocabularies list their values, as the server stores and returns them.
    let states = spec["components"]["schemas"]["CertificateState"]["enum"]
        .as_array()
        .unwrap();
    assert!(states.iter().any(|s| s == "renewing"), "{states:?}");
    let scopes = spec["components"]["schemas"]["Scope"]["enum"]
        .as_array()
        .unwrap();
    assert_eq!(scopes.len(), 5, "{scopes:?}");
}

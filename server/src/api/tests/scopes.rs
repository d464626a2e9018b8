//! Every scope against every endpoint: the expected status for each pair, each on a fresh
//! database so allowed state changes cannot affect other pairs. A final check proves the table
//! covers every operation of the OpenAPI document.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::testapp::TestApp;
use crate::model::Scope;

/// Callers, in the column order of [`ROWS`], then the two that never authenticate.
const CALLERS: [&[Scope]; 7] = [
    &[Scope::Admin],
    &[Scope::Admin, Scope::Export],
    &[Scope::Operator],
    &[Scope::Operator, Scope::Export],
    &[Scope::Issuer],
    &[Scope::Reader],
    &[Scope::Export],
];
/// Who calls: `None` sends no token, `Some(None)` an unknown one.
type Caller = Option<Option<&'static [Scope]>>;

/// Expected status of a public endpoint for every caller.
const PUBLIC: [u16; 7] = [200; 7];

/// (method, path template, body, expected for admin, admin+export, operator, operator+export,
/// issuer, reader, export). Callers without a token, or with an unknown one, get 401 unless the
/// row is public.
///
/// The custody rule: every act that lets a private key reach a party (a `pem-key` or `pfx`
/// download, creating an agent, a join token, assigning a certificate to an agent, setting an
/// agent's CCS password) needs `export` (downloads) or `admin` or `export` (agent acts) on top
/// of the endpoint's scope; `operator` alone keeps renew, revoke, retire, unassign and reads.
fn rows(v0: &str) -> Vec<(&'static str, &'static str, Option<Value>, [u16; 7])> {
    let new_account = json!({"name": "new", "directory_url": "https://acme.invalid/dir", "allowed_domains": ["*.example.com"]});
    let new_cert = json!({"name": "new", "dns_names": ["api.example.com"], "account": "acme"});
    let mute_until = (crate::now() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    vec![
        ("GET", "/healthz", None, PUBLIC),
        ("GET", "/readyz", None, PUBLIC),
        ("GET", "/openapi.json", None, PUBLIC),
        ("GET", "/metrics", None, [200, 200, 200, 200, 403, 200, 403]),
        (
            "POST",
            "/api/v1/acme-accounts",
            Some(new_account),
            [201, 201, 403, 403, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/acme-accounts",
            None,
            [200, 200, 200, 200, 403, 200, 403],
        ),
        (
            "GET",
            "/api/v1/acme-accounts/{account}",
            None,
            [200, 200, 200, 200, 403, 200, 403],
        ),
        (
            "POST",
            "/api/v1/acme-accounts/{account}/deactivate",
            None,
            [200, 200, 403, 403, 403, 403, 403],
        ),
        (
            "POST",
            "/api/v1/certificates",
            Some(new_cert),
            [202, 202, 202, 202, 202, 403, 403],
        ),
        (
            "GET",
            "/api/v1/certificates",
            None,
            [200, 200, 200, 200, 200, 200, 403],
        ),
        (
            "GET",
            "/api/v1/certificates/{certificate}",
            None,
            [200, 200, 200, 200, 200, 200, 403],
        ),
        (
            "GET",
            "/api/v1/certificates/{certificate}/versions",
            None,
            [200, 200, 200, 200, 200, 200, 403],
        ),
        (
            "POST",
            "/api/v1/certificates/{certificate}/renew",
            None,
            [202, 202, 202, 202, 202, 403, 403],
        ),
        (
            "POST",
            "/api/v1/certificates/import",
            Some(
                json!({"name": "imported", "account": "acme", "pfx_base64": "AA==", "pfx_password": "pw"}),
            ),
            [422, 422, 422, 422, 422, 403, 403],
        ),
        (
            "PATCH",
            "/api/v1/certificates/{certificate}",
            Some(json!({"add_dns_names": ["api.example.com"]})),
            [202, 202, 202, 202, 202, 403, 403],
        ),
        (
            "POST",
            "/api/v1/certificates/{certificate}/revoke",
            Some(json!({"version_id": v0})),
            [409, 409, 409, 409, 403, 403, 403],
        ),
        (
            "POST",
            "/api/v1/certificates/{certificate}/retire",
            None,
            [200, 200, 200, 200, 403, 403, 403],
        ),
        (
            "POST",
            "/api/v1/certificates/{certificate}/download",
            Some(json!({"format": "pem-chain"})),
            [200, 200, 200, 200, 200, 200, 403],
        ),
        (
            "POST",
            "/api/v1/certificates/{certificate}/download",
            Some(json!({"format": "pem-key"})),
            [403, 200, 403, 200, 403, 403, 403],
        ),
        (
            "POST",
            "/api/v1/certificates/{certificate}/download",
            Some(json!({"format": "pfx", "password": "pw"})),
            [403, 200, 403, 200, 403, 403, 403],
        ),
        (
            "POST",
            "/api/v1/agents",
            Some(json!({"name": "web2", "ccs_password": "pw"})),
            [201, 201, 403, 201, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/agents",
            None,
            [200, 200, 200, 200, 403, 200, 403],
        ),
        (
            "GET",
            "/api/v1/agents/{agent}",
            None,
            [200, 200, 200, 200, 403, 200, 403],
        ),
        (
            "PATCH",
            "/api/v1/agents/{agent}",
            Some(json!({"pfx_encryption": "aes256"})),
            [200, 200, 200, 200, 403, 403, 403],
        ),
        (
            "PATCH",
            "/api/v1/agents/{agent}",
            Some(json!({"ccs_password": "new-pw"})),
            [200, 200, 403, 200, 403, 403, 403],
        ),
        (
            "PUT",
            "/api/v1/agents/{agent}/certificates/{certificate}",
            None,
            [204, 204, 403, 204, 403, 403, 403],
        ),
        (
            "DELETE",
            "/api/v1/agents/{agent}/certificates/{certificate}",
            None,
            [204, 204, 204, 204, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/agents/{agent}/targets",
            None,
            [200, 200, 200, 200, 403, 200, 403],
        ),
        (
            "POST",
            "/api/v1/agents/{agent}/targets",
            Some(
                json!({"name": "nginx", "settings": {"kind": "directory", "path": "/etc/ssl/ck"}}),
            ),
            [201, 201, 403, 201, 403, 403, 403],
        ),
        (
            "DELETE",
            "/api/v1/agents/{agent}/targets/{target}",
            None,
            [204, 204, 204, 204, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/agents/{agent}/rollout",
            None,
            [200, 200, 200, 200, 403, 200, 403],
        ),
        (
            "PUT",
            "/api/v1/agents/{agent}/rollout",
            Some(json!({"change_window": "Sat 02:00-04:00 +01:00", "canary": true})),
            [200, 200, 200, 200, 403, 403, 403],
        ),
        (
            "POST",
            "/api/v1/agents/{agent}/revoke",
            None,
            [200, 200, 200, 200, 403, 403, 403],
        ),
        (
            "POST",
            "/api/v1/agents/{agent}/join-token",
            None,
            [200, 200, 403, 200, 403, 403, 403],
        ),
        (
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "t", "scopes": ["reader"]})),
            [201, 201, 403, 403, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/tokens",
            None,
            [200, 200, 403, 403, 403, 403, 403],
        ),
        (
            "POST",
            "/api/v1/tokens/{id}/revoke",
            None,
            [200, 200, 403, 403, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/audit-events",
            None,
            [200, 200, 403, 403, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/audit-events/verify",
            None,
            [200, 200, 403, 403, 403, 403, 403],
        ),
        (
            "POST",
            "/api/v1/notification-channels",
            Some(json!({"name": "hook", "webhook": {"url": "https://hooks.example/x"}})),
            [201, 201, 403, 403, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/notification-channels",
            None,
            [200, 200, 200, 200, 403, 403, 403],
        ),
        // No channel in the fixture: allowed callers reach the lookup (404).
        (
            "DELETE",
            "/api/v1/notification-channels/{channel}",
            None,
            [404, 404, 403, 403, 403, 403, 403],
        ),
        (
            "POST",
            "/api/v1/notification-channels/{channel}/test",
            None,
            [404, 404, 403, 403, 403, 403, 403],
        ),
        (
            "POST",
            "/api/v1/subscriptions",
            Some(json!({"name": "s", "channel": "none", "events": ["certificate.issued"]})),
            [422, 422, 422, 422, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/subscriptions",
            None,
            [200, 200, 200, 200, 403, 200, 403],
        ),
        (
            "DELETE",
            "/api/v1/subscriptions/{id}",
            None,
            [404, 404, 404, 404, 403, 403, 403],
        ),
        (
            "POST",
            "/api/v1/notification-mutes",
            Some(json!({"certificate": "www", "until": mute_until, "reason": "maintenance"})),
            [201, 201, 201, 201, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/notification-mutes",
            None,
            [200, 200, 200, 200, 403, 200, 403],
        ),
        (
            "DELETE",
            "/api/v1/notification-mutes/{id}",
            None,
            [404, 404, 404, 404, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/notifications",
            None,
            [200, 200, 200, 200, 403, 200, 403],
        ),
        (
            "GET",
            "/api/v1/moves",
            None,
            [200, 200, 200, 200, 403, 403, 403],
        ),
        (
            "POST",
            "/api/v1/moves",
            Some(json!({"certificates": ["www"], "to_account": "acme", "dry_run": true})),
            [200, 200, 200, 200, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/domains",
            None,
            [200, 200, 200, 200, 200, 200, 403],
        ),
    ]
}

/// One request by one caller (`None`: no token; `Some(None)`: an unknown token) on a fresh
/// fixture: account `acme`, certificate `www` (a revoked and a current version), agent `web1`
/// with target `ccs` and `www` assigned, and a reader token to revoke.
async fn run(
    method: &'static str,
    template: &'static str,
    body: Option<Value>,
    caller: Caller,
) -> (u16, String) {
    let app = TestApp::sqlite().await;
    let acc = app.account("acme").await;
    let cert = app.certificate(&acc, "www", &["www.example.com"]).await;
    let (v0, _) = app.issue(&cert, 90).await;
    app.issue(&cert, 90).await;
    // The older version is revoked, so revoking it again is a 409 that needs no CA.
    app.state.db.execute_raw("UPDATE certificate_versions SET revoked_at = created_at, revocation_reason = 4 WHERE id = (SELECT MIN(id) FROM certificate_versions)").await.unwrap();
    let agent = app.agent("web1").await;
    app.state
        .db
        .assign_certificate(agent.id, cert.id, crate::now())
        .await
        .unwrap();
    app.state
        .db
        .insert_target(
            &crate::db::targets::NewTarget {
                agent_id: agent.id,
                name: "ccs",
                settings: &certkeep_api_types::target::TargetSettings::Ccs {
                    path: "/srv/ccs".into(),
                },
                probe: &[],
            },
            crate::now(),
        )
        .await
        .unwrap();
    app.token(&[Scope::Reader], &[]).await;
    let victim = app.state.db.list_tokens().await.unwrap()[0].id;
    let token = match caller {
        Some(Some(scopes)) => Some(
            app.token(
                scopes,
                if scopes.contains(&Scope::Issuer) {
                    &["*.example.com"]
                } else {
                    &[]
                },
            )
            .await,
        ),
        Some(None) => Some("ck_unknown".to_owned()),
        None => None,
    };
    let path = template
        .replace("{account}", "acme")
        .replace("{certificate}", "www")
        .replace("{agent}", "web1")
        .replace("{target}", "ccs")
        .replace("{id}", &victim.to_string());
    let body = body.map(|b| {
        let text = b.to_string().replace("V0", &v0.id.to_string());
        serde_json::from_str(&text).unwrap()
    });
    let r = app.call(method, &path, token.as_deref(), body).await;
    (
        r.status.as_u16(),
        String::from_utf8_lossy(&r.body).chars().take(200).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scope_against_every_endpoint() {
    let mut set = tokio::task::JoinSet::new();
    for (method, template, body, expected) in rows("V0") {
        let public = expected == PUBLIC;
        let mut cases: Vec<(Caller, u16, String)> = CALLERS
            .iter()
            .zip(expected)
            .map(|(scopes, want)| (Some(Some(*scopes)), want, format!("{scopes:?}")))
            .collect();
        cases.push((None, if public { 200 } else { 401 }, "no token".into()));
        cases.push((
            Some(None),
            if public { 200 } else { 401 },
            "unknown token".into(),
        ));
        for (caller, want, who) in cases {
            let body = body.clone();
            set.spawn(async move {
                let (got, text) = run(method, template, body, caller).await;
                (got == want).then_some(()).ok_or(format!(
                    "{method} {template} as {who}: expected {want}, got {got}: {text}"
                ))
            });
        }
    }
    let mut failures = Vec::new();
    while let Some(result) = set.join_next().await {
        if let Err(e) = result.unwrap() {
            failures.push(e);
        }
    }
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} scope/endpoint pairs wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_table_covers_every_operation() {
    let spec: Value = serde_json::from_str(&crate::api::openapi_json()).unwrap();
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let tested: BTreeSet<(String, String)> = rows("V0")
        .into_iter()
        .map(|(m, p, _, _)| (m.to_owned(), p.to_owned()))
        .collect();
    let missing: Vec<_> = documented.difference(&tested).collect();
    assert!(
        missing.is_empty(),
        "operations without a row in the scope table: {missing:?}"
    );
}

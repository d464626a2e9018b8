//! The words of a notification as mail (subject, plain text, HTML) and as a chat line: what
//! happened, to which names, what certkeep does next, and the one command that fixes it.

use certkeep_api_types::notification::NotificationPayload;

/// Subject line of a mail.
pub fn subject(p: &NotificationPayload) -> String {
    let one_line: String = p
        .summary
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(180)
        .collect();
    format!("[certkeep] {one_line}")
}

/// Plain-text body of a mail.
pub fn text(p: &NotificationPayload) -> String {
    let mut out = format!("{}\n\n", p.summary);
    if !p.dns_names.is_empty() {
        out.push_str(&format!("Names: {}\n", p.dns_names.join(", ")));
    }
    if let Some(agent) = &p.agent_name {
        out.push_str(&format!("Agent: {agent}\n"));
    }
    if !p.next_step.is_empty() {
        out.push_str(&format!("What certkeep does next: {}\n", p.next_step));
    }
    if !p.fix.is_empty() {
        out.push_str(&format!("To fix it: {}\n", p.fix));
    }
    if let Some(detail) = &p.detail {
        out.push_str(&format!("\n{detail}\n"));
    }
    out.push_str(&format!(
        "\n-- \nevent {} ({}) at {}\n",
        p.id, p.kind, p.occurred_at
    ));
    out
}

/// HTML body of a mail: the same content as [`text`].
pub fn html(p: &NotificationPayload) -> String {
    let mut rows = String::new();
    let mut row = |label: &str, value: &str| {
        rows.push_str(&format!(
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
            escape(label),
            escape(value)
        ));
    };
    if !p.dns_names.is_empty() {
        row("Names", &p.dns_names.join(", "));
    }
    if let Some(agent) = &p.agent_name {
        row("Agent", agent);
    }
    if !p.next_step.is_empty() {
        row("What certkeep does next", &p.next_step);
    }
    let fix = if p.fix.is_empty() {
        String::new()
    } else {
        format!("<p>To fix it: <code>{}</code></p>", escape(&p.fix))
    };
    let detail = p
        .detail
        .as_ref()
        .map(|d| format!("<pre>{}</pre>", escape(d)))
        .unwrap_or_default();
    format!(
        "<html><body><p><strong>{}</strong></p><table>{rows}</table>{fix}{detail}<p><small>event {} ({}) at {}</small></p></body></html>",
        escape(&p.summary),
        p.id,
        p.kind,
        p.occurred_at
    )
}

/// The `text` of a Slack, Mattermost or Teams workflow webhook.
pub fn chat(p: &NotificationPayload) -> String {
    let mut out = format!("*{}*", p.summary);
    if !p.dns_names.is_empty() {
        out.push_str(&format!("\nNames: {}", p.dns_names.join(", ")));
    }
    if !p.next_step.is_empty() {
        out.push_str(&format!("\nNext: {}", p.next_step));
    }
    if !p.fix.is_empty() {
        out.push_str(&format!("\nFix: `{}`", p.fix));
    }
    if let Some(detail) = &p.detail {
        out.push_str(&format!("\n{detail}"));
    }
    out
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use certkeep_api_types::notification::NotificationEvent;
    use time::macros::datetime;

    use super::*;

    fn payload() -> NotificationPayload {
        NotificationPayload {
            id: uuid::Uuid::from_u128(7),
            kind: NotificationEvent::CertificateRenewalFailed,
            occurred_at: datetime!(2026-03-01 12:00 UTC),
            summary: "Renewal of certificate www failed: <CA said no>".into(),
            next_step: "certkeep keeps retrying".into(),
            fix: "certkeep cert renew www".into(),
            dns_names: vec!["www.example.edu".into()],
            certificate_id: None,
            certificate_name: Some("www".into()),
            account_id: None,
            account_name: None,
            agent_id: None,
            agent_name: None,
            detail: None,
        }
    }

    #[test]
    fn mail_says_what_happened_to_which_names_and_the_fix() {
        let p = payload();
        assert!(subject(&p).starts_with("[certkeep] Renewal of certificate www"));
        let t = text(&p);
        for part in [
            "www.example.edu",
            "certkeep keeps retrying",
            "certkeep cert renew www",
        ] {
            assert!(t.contains(part), "{t}");
        }
        let h = html(&p);
        assert!(
            h.contains("&lt;CA said no&gt;") && !h.contains("<CA said no>"),
            "{h}"
        );
        assert!(h.contains("<code>certkeep cert renew www</code>"));
        assert!(chat(&p).contains("Fix: `certkeep cert renew www`"));
    }
}

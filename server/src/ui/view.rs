//! The page layout and the small formatting helpers every page shares.

use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use time::OffsetDateTime;

use super::CSS_PATH;
use super::session::UiUser;

/// The sections of the navigation bar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Nav {
    Overview,
    Certificates,
    Agents,
    Accounts,
    Tokens,
    Audit,
}

const NAV: &[(Nav, &str, &str)] = &[
    (Nav::Overview, "/ui/", "Overview"),
    (Nav::Certificates, "/ui/certificates", "Certificates"),
    (Nav::Agents, "/ui/agents", "Agents"),
    (Nav::Accounts, "/ui/accounts", "Accounts"),
    (Nav::Tokens, "/ui/tokens", "Tokens"),
    (Nav::Audit, "/ui/audit", "Audit"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · certkeep" }
            link rel="stylesheet" href=(CSS_PATH.as_str());
        }
    }
}

/// A page for a logged-in user: navigation, who is logged in, the logout form.
pub(super) fn page(user: &UiUser, current: Nav, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href="/ui/" { "certkeep" }
                    nav {
                        @for (nav, href, label) in NAV {
                            a href=(href) class=[(*nav == current).then_some("active")] { (label) }
                        }
                    }
                    form.logout method="post" action="/ui/logout" {
                        input type="hidden" name="csrf" value=(user.csrf);
                        span.who { (user.name) }
                        button type="submit" { "Log out" }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A page without navigation (login, errors).
pub(super) fn bare(title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { a.brand href="/ui/" { "certkeep" } }
                main.narrow {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// `2026-12-02 05:51 UTC`.
pub(super) fn when(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// An optional time, or a dash.
pub(super) fn when_opt(t: Option<OffsetDateTime>) -> String {
    t.map_or_else(|| "—".to_owned(), when)
}

/// `in 12 d`, `3 h ago`: the distance from `now`, coarsely.
pub(super) fn relative(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let d = t - now;
    let secs = d.whole_seconds().unsigned_abs();
    let amount = match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    };
    if d.is_negative() {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// A short form of a long hex string (serials, thumbprints), the whole in the title.
pub(super) fn short_hex(hex: &str) -> Markup {
    let short = if hex.len() > 16 { &hex[..16] } else { hex };
    html! { code title=(hex) { (short) @if hex.len() > 16 { "…" } } }
}

/// A state as a coloured badge (`badge state-<text>` in the CSS).
pub(super) fn badge(text: &str) -> Markup {
    html! { span class=(format!("badge state-{text}")) { (text) } }
}

/// The hidden CSRF field of a form.
pub(super) fn csrf(user: &UiUser) -> Markup {
    html! { input type="hidden" name="csrf" value=(user.csrf); }
}

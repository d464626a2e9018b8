//! In-process API tests, one file per resource (`accounts`, `certificates`, `agents`, `targets`,
//! `tokens`, `audit`, `notifications`, `lifecycle`: domains, edits, imports, moves) plus
//! authentication (`auth`), the bad-input list (`bad_input`), every scope against every endpoint
//! (`scopes`), the OpenAPI document (`spec`) and the dashboard (`ui`). `testapp` drives the router.
//!
//! A test that runs on both backends is written once as `async fn name(app: TestApp)` and
//! expanded by [`backends!`] into `name_sqlite` and `name_postgres`, so a failure names its
//! backend.

use crate::model::Scope;

/// Expands each `async fn name(app: TestApp)` named into two `#[tokio::test]`s: `name_sqlite`
/// and `name_postgres`. The PostgreSQL test passes without running when that tier is skipped
/// (no PostgreSQL binaries and `CERTKEEP_TEST_REQUIRE_POSTGRES` unset).
macro_rules! backends {
    ($($name:ident),+ $(,)?) => {
        $(
            pastey::paste! {
                #[tokio::test]
                async fn [<$name _sqlite>]() {
                    $name(super::testapp::TestApp::sqlite().await).await;
                }

                #[tokio::test]
                async fn [<$name _postgres>]() {
                    if let Some(app) = super::testapp::TestApp::postgres().await {
                        $name(app).await;
                    }
                }
            }
        )+
    };
}

mod accounts;
mod agents;
mod audit;
mod auth;
mod bad_input;
mod certificates;
mod lifecycle;
mod notifications;
mod scopes;
mod spec;
mod targets;
mod testapp;
mod tokens;
mod ui;

/// The scopes of the admin token most tests act with.
const ADMIN: &[Scope] = &[Scope::Admin, Scope::Export];

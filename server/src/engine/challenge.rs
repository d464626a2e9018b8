//! The challenge-solver seam: a `pending` authorization is handed to the solver whose domain
//! pattern matches its name most specifically (dns-01 and http-01 solvers live in
//! `crate::solvers`). Wildcard names only accept dns-01. Without a solver the order fails with
//! a message naming the domain. Knows nothing about storage: the engine records what was
//! published before a solver publishes it.

use std::sync::Arc;

use async_trait::async_trait;

use crate::acme::CaChallenge;
use crate::domain::names;

/// The dns-01 challenge type.
pub const DNS01: &str = "dns-01";
/// The http-01 challenge type.
pub const HTTP01: &str = "http-01";

/// Answers ACME challenges for the names it is configured for. Errors are operator-facing text
/// naming servers and keys, never secrets.
#[async_trait]
pub trait ChallengeSolver: Send + Sync {
    /// The challenge types this solver answers, most preferred first.
    fn kinds(&self) -> &[&'static str];
    /// What the solver is (type, server, key name), for the order history.
    fn describe(&self) -> String;
    /// Makes the response to `challenge` for `name` (`*.`-prefixed for wildcards) available to
    /// the CA, and returns what was done, for the order history.
    async fn present(&self, name: &str, challenge: &CaChallenge) -> Result<String, String>;
    /// Removes what [`ChallengeSolver::present`] set up; succeeds when there is nothing to
    /// remove. Returns what was done, for the order history.
    async fn cleanup(&self, name: &str, challenge: &CaChallenge) -> Result<String, String>;
}

/// The solver picked for one authorization.
pub struct Choice {
    pub solver: Arc<dyn ChallengeSolver>,
    /// The pattern that selected it.
    pub pattern: String,
    /// Index of the chosen challenge among those offered.
    pub index: usize,
}

/// Solvers by domain pattern (`example.edu`, `*.example.edu`); the most specific match wins.
#[derive(Clone, Default)]
pub struct Solvers {
    by_pattern: Vec<(String, Arc<dyn ChallengeSolver>)>,
}

/// How specifically `pattern` matches `name`: an exact match beats any wildcard, a longer
/// wildcard suffix beats a shorter one. `None` when it does not match.
fn specificity(pattern: &str, name: &str) -> Option<(bool, usize)> {
    if pattern == name {
        Some((true, pattern.len()))
    } else if names::pattern_matches(pattern, name) {
        Some((false, pattern.len()))
    } else {
        None
    }
}

impl Solvers {
    /// Adds a solver for names matching `pattern` (normalised like account patterns).
    pub fn add(
        &mut self,
        pattern: &str,
        solver: Arc<dyn ChallengeSolver>,
    ) -> Result<(), names::NameError> {
        self.by_pattern
            .push((names::normalize_pattern(pattern)?, solver));
        Ok(())
    }

    /// Whether no solver is configured.
    pub fn is_empty(&self) -> bool {
        self.by_pattern.is_empty()
    }

    /// The solvers whose pattern matches `name`, most specific first (ties: the order added),
    /// each with the challenge types it may use for `name` (only dns-01 for wildcards).
    fn candidates<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Arc<dyn ChallengeSolver>, Vec<&'static str>)> + 'a
    {
        let mut matching: Vec<_> = self
            .by_pattern
            .iter()
            .filter_map(|(pattern, solver)| Some((specificity(pattern, name)?, pattern, solver)))
            .collect();
        matching.sort_by_key(|m| std::cmp::Reverse(m.0));
        let wildcard = name.starts_with("*.");
        matching.into_iter().map(move |(_, pattern, solver)| {
            let kinds = solver
                .kinds()
                .iter()
                .copied()
                .filter(|kind| !wildcard || *kind == DNS01)
                .collect();
            (pattern, solver, kinds)
        })
    }

    /// Picks the solver and challenge for `name` among `offered`: the most specific matching
    /// solver that answers a type the CA offers. Errors say why none fits.
    pub fn choose(&self, name: &str, offered: &[CaChallenge]) -> Result<Choice, String> {
        let mut usable = Vec::new();
        for (pattern, solver, kinds) in self.candidates(name) {
            for kind in kinds {
                if let Some(index) = offered.iter().position(|c| c.kind == kind) {
                    return Ok(Choice {
                        solver: solver.clone(),
                        pattern: pattern.clone(),
                        index,
                    });
                }
                if !usable.contains(&kind) {
                    usable.push(kind);
                }
            }
        }
        if usable.is_empty() {
            let covered = self
                .by_pattern
                .iter()
                .any(|(p, _)| specificity(p, name).is_some());
            return Err(if covered {
                format!(
                    "{name} is a wildcard name, which only dns-01 can validate, and no dns-01 solver is configured for it"
                )
            } else {
                no_solver_message(name)
            });
        }
        let offered: Vec<&str> = offered.iter().map(|c| c.kind.as_str()).collect();
        Err(format!(
            "the CA offers {} for {name}, but the solvers configured for it answer only {}",
            if offered.is_empty() {
                "no challenge".to_owned()
            } else {
                offered.join(", ")
            },
            usable.join(", ")
        ))
    }

    /// The solver that removes a `kind` response for `name`: the most specific one answering
    /// that type.
    pub fn for_cleanup(&self, name: &str, kind: &str) -> Option<Arc<dyn ChallengeSolver>> {
        self.candidates(name)
            .find(|(_, solver, _)| solver.kinds().contains(&kind))
            .map(|(_, solver, _)| solver.clone())
    }
}

/// The order error when a `pending` authorization has no solver.
pub fn no_solver_message(name: &str) -> String {
    format!("domain not pre-validated at the CA and no challenge solver configured for {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static [&'static str], &'static str);

    #[async_trait]
    impl ChallengeSolver for Fixed {
        fn kinds(&self) -> &[&'static str] {
            self.0
        }
        fn describe(&self) -> String {
            self.1.to_owned()
        }
        async fn present(&self, _: &str, _: &CaChallenge) -> Result<String, String> {
            Err("unused".into())
        }
        async fn cleanup(&self, _: &str, _: &CaChallenge) -> Result<String, String> {
            Err("unused".into())
        }
    }

    fn offered(kinds: &[&str]) -> Vec<CaChallenge> {
        kinds
            .iter()
            .map(|kind| CaChallenge {
                kind: (*kind).to_owned(),
                url: format!("https://ca/{kind}"),
                token: "t".into(),
                pending: true,
                key_authorization: "t.k".into(),
                error: None,
            })
            .collect()
    }

    fn solvers(entries: &[(&str, &'static [&'static str], &'static str)]) -> Solvers {
        let mut solvers = Solvers::default();
        for (pattern, kinds, id) in entries {
            solvers.add(pattern, Arc::new(Fixed(kinds, id))).unwrap();
        }
        solvers
    }

    fn chosen(solvers: &Solvers, name: &str, kinds: &[&str]) -> Result<(String, String), String> {
        let offered = offered(kinds);
        solvers
            .choose(name, &offered)
            .map(|c| (c.solver.describe(), offered[c.index].kind.clone()))
    }

    #[test]
    fn the_most_specific_pattern_wins_whatever_the_order() {
        let s = solvers(&[
            ("*.example.edu", &[DNS01], "broad dns"),
            ("*.web.example.edu", &[HTTP01], "web http"),
            ("shop.web.example.edu", &[DNS01], "shop dns"),
            ("*.a.web.example.edu", &[DNS01], "deep dns"),
        ]);
        let both = [DNS01, HTTP01];
        let pick = |name| chosen(&s, name, &both).unwrap().0;
        assert_eq!(pick("www.example.edu"), "broad dns");
        assert_eq!(pick("www.web.example.edu"), "web http");
        assert_eq!(pick("shop.web.example.edu"), "shop dns");
        assert_eq!(pick("x.a.web.example.edu"), "deep dns");
        assert_eq!(pick("a.web.example.edu"), "web http");
        assert!(s.choose("example.org", &offered(&both)).is_err());
    }

    #[test]
    fn wildcards_only_accept_dns01() {
        let s = solvers(&[
            ("*.example.edu", &[DNS01], "dns"),
            ("*.web.example.edu", &[HTTP01], "http"),
        ]);
        let both = [HTTP01, DNS01];
        assert_eq!(
            chosen(&s, "*.web.example.edu", &both).unwrap(),
            ("dns".into(), DNS01.into()),
            "the http-01 solver is more specific but cannot answer a wildcard"
        );
        assert_eq!(
            chosen(&s, "www.web.example.edu", &both).unwrap(),
            ("http".into(), HTTP01.into())
        );
        let http_only = solvers(&[("*.example.edu", &[HTTP01], "http")]);
        let err = chosen(&http_only, "*.example.edu", &both).unwrap_err();
        assert!(err.contains("wildcard") && err.contains("dns-01"), "{err}");
    }

    #[test]
    fn a_solver_may_prefer_one_type_and_fall_back_to_another() {
        let s = solvers(&[("*.example.edu", &[HTTP01, DNS01], "both")]);
        assert_eq!(
            chosen(&s, "www.example.edu", &[DNS01, HTTP01]).unwrap().1,
            HTTP01
        );
        assert_eq!(chosen(&s, "www.example.edu", &[DNS01]).unwrap().1, DNS01);
        assert_eq!(
            chosen(&s, "*.example.edu", &[HTTP01, DNS01]).unwrap().1,
            DNS01
        );
        let err = chosen(&s, "www.example.edu", &["tls-alpn-01"]).unwrap_err();
        assert_eq!(
            err,
            "the CA offers tls-alpn-01 for www.example.edu, but the solvers configured for it answer only http-01, dns-01"
        );
    }

    #[test]
    fn unmatched_names_get_the_no_solver_message_and_cleanup_finds_by_type() {
        let s = solvers(&[
            ("*.example.edu", &[DNS01], "dns"),
            ("www.example.edu", &[HTTP01], "http"),
        ]);
        assert_eq!(
            chosen(&s, "example.org", &[DNS01]).unwrap_err(),
            "domain not pre-validated at the CA and no challenge solver configured for example.org"
        );
        let describe = |kind| {
            s.for_cleanup("www.example.edu", kind)
                .map(|solver| solver.describe())
        };
        assert_eq!(describe(HTTP01).as_deref(), Some("http"));
        assert_eq!(describe(DNS01).as_deref(), Some("dns"));
        assert!(s.for_cleanup("example.org", DNS01).is_none());
    }
}

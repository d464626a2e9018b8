//! The challenge-solver seam: a `pending` authorization is handed to the solver configured for
//! its name (dns-01 and http-01 solvers plug in here). Without one the order fails with a
//! message naming the domain. Knows nothing about storage.

use std::sync::Arc;

use async_trait::async_trait;

use crate::acme::CaChallenge;
use crate::domain::names;

/// Answers ACME challenges for the names it is configured for.
#[async_trait]
pub trait ChallengeSolver: Send + Sync {
    /// Picks one of `offered` for `name` (`*.`-prefixed for wildcards) and makes its response
    /// available (publishes the TXT record, serves the token). Returns the index of the chosen
    /// challenge, or why none can be solved.
    async fn present(&self, name: &str, offered: &[CaChallenge]) -> Result<usize, String>;
    /// Removes what [`ChallengeSolver::present`] set up, once the CA has validated or given up.
    async fn cleanup(&self, name: &str, challenge: &CaChallenge);
}

/// Solvers by domain pattern (`example.edu`, `*.example.edu`); the first match wins.
#[derive(Clone, Default)]
pub struct Solvers {
    by_pattern: Vec<(String, Arc<dyn ChallengeSolver>)>,
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

    /// The solver for `name`, if any.
    pub fn for_name(&self, name: &str) -> Option<Arc<dyn ChallengeSolver>> {
        self.by_pattern
            .iter()
            .find(|(pattern, _)| names::pattern_matches(pattern, name) || pattern == name)
            .map(|(_, solver)| solver.clone())
    }
}

/// The order error when a `pending` authorization has no solver.
pub fn no_solver_message(name: &str) -> String {
    format!("domain not pre-validated at the CA and no challenge solver configured for {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;

    #[async_trait]
    impl ChallengeSolver for Nothing {
        async fn present(&self, _: &str, _: &[CaChallenge]) -> Result<usize, String> {
            Err("unused".into())
        }
        async fn cleanup(&self, _: &str, _: &CaChallenge) {}
    }

    #[test]
    fn solvers_match_by_pattern() {
        let mut solvers = Solvers::default();
        solvers.add("*.example.edu", Arc::new(Nothing)).unwrap();
        assert!(solvers.for_name("www.example.edu").is_some());
        assert!(solvers.for_name("*.example.edu").is_some());
        assert!(solvers.for_name("example.org").is_none());
        assert_eq!(
            no_solver_message("example.org"),
            "domain not pre-validated at the CA and no challenge solver configured for example.org"
        );
    }
}

//! Lifecycle rules: how an edit changes a certificate's names.

use super::names::{NameError, normalize, normalize_all};

/// The names after an edit: `current` without `remove`, then `add` appended, all normalised
/// and checked as on create (1 to 100, no duplicates). Removing a name the certificate does
/// not carry, or adding one it carries already, is a mistake worth refusing.
pub fn edited_names(
    current: &[String],
    add: &[String],
    remove: &[String],
) -> Result<Vec<String>, EditError> {
    let mut names = current.to_vec();
    for name in remove {
        let n = normalize(name)?;
        let before = names.len();
        names.retain(|c| *c != n);
        if names.len() == before {
            return Err(EditError::NotCarried(n));
        }
    }
    for name in add {
        let n = normalize(name)?;
        if current.contains(&n) {
            return Err(EditError::AlreadyCarried(n));
        }
        names.push(n);
    }
    Ok(normalize_all(&names)?)
}

/// Why an edit of the names is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("`{0}` is not one of the certificate's names")]
    NotCarried(String),
    #[error("`{0}` is already one of the certificate's names")]
    AlreadyCarried(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn adds_and_removes_normalised_names() {
        let current = names(&["www.example.edu", "example.edu"]);
        assert_eq!(
            edited_names(
                &current,
                &names(&["API.Example.edu."]),
                &names(&["example.edu"])
            ),
            Ok(names(&["www.example.edu", "api.example.edu"]))
        );
        assert_eq!(
            edited_names(&current, &names(&["bücher.example.edu"]), &[]),
            Ok(names(&[
                "www.example.edu",
                "example.edu",
                "xn--bcher-kva.example.edu"
            ]))
        );
    }

    #[test]
    fn refuses_what_does_not_make_sense() {
        let current = names(&["www.example.edu"]);
        assert_eq!(
            edited_names(&current, &[], &names(&["api.example.edu"])),
            Err(EditError::NotCarried("api.example.edu".into()))
        );
        assert_eq!(
            edited_names(&current, &names(&["WWW.example.edu"]), &[]),
            Err(EditError::AlreadyCarried("www.example.edu".into()))
        );
        assert_eq!(
            edited_names(&current, &[], &names(&["www.example.edu"])),
            Err(EditError::Name(NameError::NoNames))
        );
        assert!(matches!(
            edited_names(&current, &names(&["a.example.edu", "a.example.edu"]), &[]),
            Err(EditError::Name(NameError::Duplicate(_)))
        ));
        assert!(matches!(
            edited_names(&current, &names(&["10.0.0.1"]), &[]),
            Err(EditError::Name(NameError::IpAddress(_)))
        ));
    }
}

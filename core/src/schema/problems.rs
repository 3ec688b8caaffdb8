//! The errors of the schema module: problems found while loading a schema set,
//! and issues found while validating entity data against it.
//!
//! Both carry every finding, not only the first (a user fixing a schema set
//! or a form wants the whole list at once), each located precisely: a file
//! and JSON pointer into it for schema problems, a JSON pointer into the data
//! for validation issues. They are plain data (Serialize) so the host can
//! turn them into `--json` output and API error `details` without parsing
//! messages.

use std::fmt;

use serde::Serialize;

/// One thing wrong with a schema set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaProblem {
    /// File name relative to the set's directory; empty for problems of the
    /// set as a whole (e.g. "no entity types").
    pub file: String,
    /// JSON pointer into `file` ("" = the whole file).
    pub pointer: String,
    /// What is wrong, why, and what to do.
    pub message: String,
}

impl SchemaProblem {
    pub fn new(
        file: impl Into<String>,
        pointer: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        SchemaProblem {
            file: file.into(),
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.file.is_empty(), self.pointer.is_empty()) {
            (true, _) => write!(f, "(schema set): {}", self.message),
            (false, true) => write!(f, "{}: {}", self.file, self.message),
            (false, false) => write!(f, "{} at {}: {}", self.file, self.pointer, self.message),
        }
    }
}

/// A schema set could not be loaded; lists every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SchemaSetError {
    /// The directory loaded, or `<in-memory>` for [`super::EntityRegistry::from_files`].
    pub dir: String,
    pub problems: Vec<SchemaProblem>,
}

impl fmt::Display for SchemaSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "schema set {} is invalid ({n} problem{}); fix every problem listed and load it again:",
            self.dir,
            if n == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

/// One way entity data does not match its type's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// JSON pointer into the data ("" for the data object itself).
    pub path: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "(root): {}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Entity data does not match its type's schema; lists every issue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub entity_type: String,
    pub issues: Vec<Issue>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} data failed validation: ", self.entity_type)?;
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Why [`super::EntityRegistry::validate`] refused data.
///
/// Two cases a caller must tell apart: the type does not exist (HTTP 404,
/// or a packet change for a type this node does not know) versus the data
/// does not match a known type (HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidateError {
    #[error(
        "unknown entity type {name:?}: the schema set defines {}; use one of these names, or add {name}.schema.json to the schema set",
        list_or_none(known)
    )]
    UnknownType { name: String, known: Vec<String> },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "no types".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_set_error_lists_every_problem_on_its_own_line() {
        let err = SchemaSetError {
            dir: "schemas".into(),
            problems: vec![
                SchemaProblem::new("A.schema.json", "/properties/x", "bad x"),
                SchemaProblem::new("b.json", "", "bad file"),
                SchemaProblem::new("", "", "no types"),
            ],
        };
        assert_eq!(
            err.to_string(),
            "schema set schemas is invalid (3 problems); fix every problem listed and load it again:\n  \
             - A.schema.json at /properties/x: bad x\n  \
             - b.json: bad file\n  \
             - (schema set): no types"
        );
    }

    #[test]
    fn validation_error_joins_issues_with_their_paths() {
        let err = ValidationError {
            entity_type: "DailyReport".into(),
            issues: vec![
                Issue {
                    path: "/lines/0/hours".into(),
                    message: "30 is greater than the maximum of 24".into(),
                },
                Issue {
                    path: "".into(),
                    message: "\"date\" is a required property".into(),
                },
            ],
        };
        assert_eq!(
            err.to_string(),
            "DailyReport data failed validation: /lines/0/hours: 30 is greater than the maximum of 24; \
             (root): \"date\" is a required property"
        );
    }

    #[test]
    fn unknown_type_names_the_known_ones() {
        let err = ValidateError::UnknownType {
            name: "Brigad".into(),
            known: vec!["Brigade".into(), "Site".into()],
        };
        assert_eq!(
            err.to_string(),
            "unknown entity type \"Brigad\": the schema set defines Brigade, Site; use one of these names, \
             or add Brigad.schema.json to the schema set"
        );
    }
}

//! The configuration error: every problem found while loading, one line each.
//!
//! Loading does not stop at the first problem: an operator fixing a config wants all of them at
//! once. Each problem names the file, the key path inside it and what was expected.

use std::fmt;

/// What sort of problem a [`Problem`] is, for callers that react to kinds rather than text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The file could not be read.
    Io,
    /// The file is not valid JSON.
    Syntax,
    /// A key the schema does not know (typo, or a key of another version).
    UnknownKey,
    /// A value of the wrong type or out of range.
    Type,
    /// Well-typed values that do not make sense together (cycles, duplicates, missing certs).
    Semantic,
}

/// One problem: `file: path: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The file as named in the config directory (`ws.json`, or the `WS_CONFIG` override).
    pub file: String,
    /// Dotted key path inside the file (`workers.max_connections`, `acl.exclude[2]`); empty for
    /// problems about the whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (file, message) = (OneLine(&self.file), OneLine(&self.message));
        if self.path.is_empty() {
            write!(f, "{file}: {message}")
        } else {
            write!(f, "{file}: {}: {message}", OneLine(&self.path))
        }
    }
}

/// Text from a config file as it goes into a log line: its control characters escaped (`\n`,
/// `\u{7f}`), so that a key holding a newline cannot end the line or start a forged one.
struct OneLine<'a>(&'a str);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_debug())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// Every problem found in a configuration; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub(crate) fn from_problems(problems: Vec<Problem>) -> Result<(), ConfigError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    pub(crate) fn single(kind: ProblemKind, file: &str, path: &str, message: String) -> Self {
        ConfigError {
            problems: vec![Problem {
                kind,
                file: file.to_string(),
                path: path.to_string(),
                message,
            }],
        }
    }

    /// Whether some problem is of this kind.
    pub fn has(&self, kind: ProblemKind) -> bool {
        self.problems.iter().any(|p| p.kind == kind)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

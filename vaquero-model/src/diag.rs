//! Validation diagnostics: every problem, each at `file:line:col`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The SoT cannot be used.
    Error,
    /// Worth knowing; the SoT is still used.
    Warning,
}

/// One problem found in a SoT, pointing at the offending value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Path of the file, relative to the SoT root.
    pub file: String,
    /// 1-based line (0 when the problem has no position, e.g. a missing file).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Key path inside the document, e.g. `interfaces[0].mac` (may be empty).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl Diagnostic {
    /// An error at a position.
    pub fn error(
        file: &str,
        line: usize,
        column: usize,
        path: &str,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.to_owned(),
            line,
            column,
            path: path.to_owned(),
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// The same diagnostic as a warning.
    pub fn into_warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }
}

/// Where a value is in the SoT: kept after loading for checks made later
/// (the boot files an agent serves), so that they too point at a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Path of the file, relative to the SoT root.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl Origin {
    /// An error at this position.
    pub fn error(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(&self.file, self.line, self.column, path, message)
    }

    /// A warning at this position.
    pub fn warning(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(&self.file, self.line, self.column, path, message).into_warning()
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// A list of diagnostics, in the order they were found until sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Adds one.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// Whether any is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Warning)
    }

    /// Sorts by file, line, column, and removes exact duplicates.
    pub fn sort(&mut self) {
        self.0.sort();
        self.0.dedup();
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

//! Reboot windows (`"HH:MM-HH:MM"`), parsed once, when the SoT is read.

use serde::{Deserialize, Serialize};

/// A reboot window, written `"HH:MM-HH:MM"`; an end before the start
/// wraps past midnight. Parsed once, when the SoT is read: a window that
/// does not parse keeps what was written and why, which validation
/// reports at its file:line.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct Window {
    spec: String,
    minutes: Result<(u16, u16), String>,
}

impl Window {
    /// Parses `spec`.
    pub fn new(spec: &str) -> Self {
        Window {
            spec: spec.to_owned(),
            minutes: parse_window(spec),
        }
    }

    /// Start and end in minutes after midnight, or why the window does
    /// not parse.
    pub fn minutes(&self) -> Result<(u16, u16), &str> {
        self.minutes.as_ref().map(|m| *m).map_err(String::as_str)
    }

    /// The window as written.
    pub fn as_str(&self) -> &str {
        &self.spec
    }
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.spec, f)
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.spec)
    }
}

impl From<String> for Window {
    fn from(s: String) -> Self {
        let minutes = parse_window(&s);
        Window { spec: s, minutes }
    }
}

impl From<&str> for Window {
    fn from(s: &str) -> Self {
        Window::new(s)
    }
}

impl From<Window> for String {
    fn from(w: Window) -> Self {
        w.spec
    }
}

fn parse_window(s: &str) -> Result<(u16, u16), String> {
    let err = || format!("invalid window `{s}`: expected \"HH:MM-HH:MM\"");
    let (a, b) = s.trim().split_once('-').ok_or_else(err)?;
    let hm = |t: &str| -> Result<u16, String> {
        let (h, m) = t.trim().split_once(':').ok_or_else(err)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(err());
        }
        match (h.parse::<u16>(), m.parse::<u16>()) {
            (Ok(h @ 0..=23), Ok(m @ 0..=59)) => Ok(h * 60 + m),
            _ => Err(err()),
        }
    };
    let (start, end) = (hm(a)?, hm(b)?);
    if start == end {
        return Err(format!("window `{s}` is empty"));
    }
    Ok((start, end))
}

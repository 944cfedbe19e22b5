//! Escaping peer-supplied text for logs and error messages.

use std::fmt;

/// Displays a string with control characters, backslashes, quotes and
/// non-ASCII characters escaped (`\n`, `\u{0}`, …) and at most 256
/// characters shown, so that text a peer controls (an Origin-Host, an
/// Error-Message) can neither forge a log line nor flood one.
///
/// ```
/// use diam_proto::Escaped;
/// assert_eq!(Escaped("evil\nline").to_string(), "evil\\nline");
/// assert_eq!(Escaped("ok.example.com").to_string(), "ok.example.com");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

/// Most characters shown; the rest is elided with `…`.
const MAX_SHOWN: usize = 256;

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.chars().enumerate() {
            if i == MAX_SHOWN {
                return f.write_str("…");
            }
            match c {
                ' '..='~' if c != '\\' && c != '"' => fmt::Write::write_char(f, c)?,
                _ => write!(f, "{}", c.escape_default())?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn escapes_controls_and_bounds_length() {
        assert_eq!(Escaped("a\u{0}b\r\n\"c\\").to_string(), "a\\u{0}b\\r\\n\\\"c\\\\");
        assert_eq!(Escaped("é").to_string(), "\\u{e9}");
        let long = "x".repeat(1000);
        assert_eq!(Escaped(&long).to_string().chars().count(), 257);
    }
}

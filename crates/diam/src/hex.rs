//! Hex text, as `diam decode --hex` reads and `diam encode --hex` writes it.
//!
//! Written here rather than taken from a crate because the CLI needs two
//! things plain hex crates do not give: whitespace anywhere in the input,
//! and errors that name the character position.

/// A hex text error, naming the character position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HexError {
    /// A character that is neither a hex digit nor whitespace.
    BadChar { position: usize, found: char },
    /// An odd number of hex digits.
    OddLength { digits: usize },
}

impl std::fmt::Display for HexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HexError::BadChar { position, found } => {
                write!(f, "invalid hex character {found:?} at character {position}")
            }
            HexError::OddLength { digits } => write!(f, "odd number of hex digits ({digits})"),
        }
    }
}

/// Lowercase hex of `data`.
pub(crate) fn encode(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Decodes hex text, ignoring ASCII whitespace anywhere.
pub(crate) fn decode(text: &str) -> Result<Vec<u8>, HexError> {
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut high: Option<u8> = None;
    let mut digits = 0;
    for (position, c) in text.char_indices() {
        if c.is_ascii_whitespace() {
            continue;
        }
        let Some(v) = c.to_digit(16) else { return Err(HexError::BadChar { position, found: c }) };
        digits += 1;
        match high.take() {
            Some(h) => out.push((h << 4) | v as u8),
            None => high = Some(v as u8),
        }
    }
    if high.is_some() {
        return Err(HexError::OddLength { digits });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        assert_eq!(decode(" 01 0a\nFF\t").unwrap(), vec![1, 10, 255]);
        assert_eq!(encode(&[1, 10, 255]), "010aff");
        assert_eq!(decode("0g"), Err(HexError::BadChar { position: 1, found: 'g' }));
        assert_eq!(decode("012"), Err(HexError::OddLength { digits: 3 }));
    }
}

//! The built-in dictionary (temporary minimal table).
use super::Dictionary;

pub(super) fn build() -> Dictionary {
    Dictionary::new()
}

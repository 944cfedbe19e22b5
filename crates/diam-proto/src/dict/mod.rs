//! AVP and command dictionaries.
//!
//! [`Dictionary::base`] is the built-in dictionary: every RFC 6733 base
//! protocol command and AVP, RFC 4006 Credit-Control, and the common 3GPP
//! AVPs of Gx, Gy/Ro and S6a. [`Dictionary::load_wireshark_file`] adds
//! definitions from Wireshark's dictionary XML (the files in
//! `/usr/share/wireshark/diameter`, including the vendor files that
//! `dictionary.xml` pulls in through entities).
//!
//! Lookups by (code, vendor) and by name are hash-map lookups (O(1)).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hasher for (code, vendor) keys: one multiply instead of SipHash. Keys
/// come from the dictionary author, so HashDoS resistance is not needed.
#[derive(Default, Clone, Copy, Debug)]
struct CodeHasher(u64);
impl Hasher for CodeHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}
type KeyHasher = BuildHasherDefault<CodeHasher>;
use std::sync::OnceLock;

use crate::avp::{Avp, AvpIter};
use crate::error::DecodeError;
use crate::message::Message;
use crate::types::DataType;

mod builtin;
#[cfg(feature = "xml")]
mod wireshark;
#[cfg(feature = "xml")]
pub use wireshark::{DictError, LoadStats};

/// Deepest nesting of Grouped AVPs that validation and rendering descend
/// into. Real applications nest a handful of levels; the bound keeps a
/// hostile message from exhausting the stack.
pub const MAX_GROUP_DEPTH: usize = 32;

/// Whether a flag must, may, or must not be set (dictionary `mandatory`,
/// `protected` and `vendor-bit` rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlagRule {
    /// The flag must be set.
    Must,
    /// The flag may be set.
    May,
    /// The flag should not be set.
    ShouldNot,
    /// The flag must not be set.
    MustNot,
}

/// The definition of one AVP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvpDef {
    code: u32,
    vendor_id: Option<u32>,
    name: Box<str>,
    data_type: DataType,
    mandatory: FlagRule,
    protected: FlagRule,
    enums: Vec<(i64, Box<str>)>,
}

impl AvpDef {
    /// A definition with the M flag rule `Must` and no enumerated values.
    pub fn new(code: u32, vendor_id: Option<u32>, name: impl Into<Box<str>>, data_type: DataType) -> Self {
        AvpDef {
            code,
            vendor_id: vendor_id.filter(|&v| v != 0),
            name: name.into(),
            data_type,
            mandatory: FlagRule::Must,
            protected: FlagRule::May,
            enums: Vec::new(),
        }
    }
    /// Sets the M flag rule.
    #[must_use]
    pub fn with_mandatory(mut self, rule: FlagRule) -> Self {
        self.mandatory = rule;
        self
    }
    /// Sets the P flag rule.
    #[must_use]
    pub fn with_protected(mut self, rule: FlagRule) -> Self {
        self.protected = rule;
        self
    }
    /// Adds a named value (Enumerated, or named Unsigned32 values such as
    /// Result-Code).
    #[must_use]
    pub fn with_enum(mut self, value: i64, name: impl Into<Box<str>>) -> Self {
        self.add_enum(value, name);
        self
    }
    pub(crate) fn add_enum(&mut self, value: i64, name: impl Into<Box<str>>) {
        match self.enums.binary_search_by_key(&value, |(v, _)| *v) {
            Ok(i) => self.enums[i].1 = name.into(),
            Err(i) => self.enums.insert(i, (value, name.into())),
        }
    }

    /// AVP code.
    pub fn code(&self) -> u32 {
        self.code
    }
    /// Vendor-Id, `None` for IETF AVPs.
    pub fn vendor_id(&self) -> Option<u32> {
        self.vendor_id
    }
    /// AVP name, e.g. `Origin-Host`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Data format.
    pub fn data_type(&self) -> DataType {
        self.data_type
    }
    /// The M flag rule.
    pub fn mandatory(&self) -> FlagRule {
        self.mandatory
    }
    /// The P flag rule.
    pub fn protected(&self) -> FlagRule {
        self.protected
    }
    /// The name of an enumerated value.
    pub fn enum_name(&self, value: i64) -> Option<&str> {
        self.enums.binary_search_by_key(&value, |(v, _)| *v).ok().map(|i| &*self.enums[i].1)
    }
    /// The value of an enumerated name.
    pub fn enum_value(&self, name: &str) -> Option<i64> {
        self.enums.iter().find(|(_, n)| &**n == name).map(|(v, _)| *v)
    }
    /// All named values, sorted by value.
    pub fn enums(&self) -> impl Iterator<Item = (i64, &str)> {
        self.enums.iter().map(|(v, n)| (*v, &**n))
    }
}

/// The definition of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandDef {
    code: u32,
    name: Box<str>,
}

impl CommandDef {
    /// A command named `name` (without the `-Request`/`-Answer` suffix).
    pub fn new(code: u32, name: impl Into<Box<str>>) -> Self {
        CommandDef { code, name: name.into() }
    }
    /// Command code.
    pub fn code(&self) -> u32 {
        self.code
    }
    /// Base name, e.g. `Capabilities-Exchange`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Full name for a request or an answer, e.g.
    /// `Capabilities-Exchange-Request`.
    pub fn full_name(&self, request: bool) -> String {
        format!("{}-{}", self.name, if request { "Request" } else { "Answer" })
    }
}

/// Vendorless AVP codes below this are found by direct index.
const SMALL_CODES: usize = 2048;

/// A set of AVP, command, application and vendor definitions.
#[derive(Debug, Clone, Default)]
pub struct Dictionary {
    avps: Vec<AvpDef>,
    by_key: HashMap<(u32, u32), usize, KeyHasher>,
    /// Index + 1 of the vendorless AVPs with codes below [`SMALL_CODES`]
    /// (0: none): the base protocol and most applications, looked up on
    /// every AVP of every request without hashing.
    small: Vec<u32>,
    by_name: HashMap<Box<str>, usize>,
    commands: HashMap<u32, CommandDef>,
    command_names: HashMap<Box<str>, u32>,
    applications: HashMap<u32, Box<str>>,
    vendors: HashMap<u32, Box<str>>,
}

impl Dictionary {
    /// An empty dictionary.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in dictionary, built once and shared.
    pub fn base() -> &'static Dictionary {
        static BASE: OnceLock<Dictionary> = OnceLock::new();
        BASE.get_or_init(builtin::build)
    }

    /// Adds or replaces an AVP definition.
    ///
    /// A definition with the same (code, vendor) is replaced. The name index
    /// points at the newest definition of a name unless that name already
    /// belongs to a different IETF (vendor-less) AVP, so vendor dictionaries
    /// never hide the base protocol names.
    pub fn insert_avp(&mut self, def: AvpDef) {
        let key = (def.code, def.vendor_id.unwrap_or(0));
        let name = def.name.clone();
        let idx = match self.by_key.get(&key) {
            Some(&i) => {
                let old = std::mem::replace(&mut self.avps[i], def);
                if self.by_name.get(&old.name) == Some(&i) && old.name != name {
                    self.by_name.remove(&old.name);
                }
                i
            }
            None => {
                self.avps.push(def);
                self.by_key.insert(key, self.avps.len() - 1);
                self.avps.len() - 1
            }
        };
        if key.1 == 0 && (key.0 as usize) < SMALL_CODES {
            if self.small.len() < SMALL_CODES {
                self.small.resize(SMALL_CODES, 0);
            }
            self.small[key.0 as usize] = idx as u32 + 1;
        }
        let keep_existing = self
            .by_name
            .get(&name)
            .is_some_and(|&i| i != idx && self.avps[i].vendor_id.is_none() && self.avps[idx].vendor_id.is_some());
        if !keep_existing {
            self.by_name.insert(name, idx);
        }
    }

    /// Adds or replaces a command definition.
    pub fn insert_command(&mut self, def: CommandDef) {
        self.command_names.insert(def.name.clone(), def.code);
        if let Some(old) = self.commands.insert(def.code, def) {
            if self.command_names.get(&old.name) == Some(&old.code) && self.commands[&old.code].name != old.name {
                self.command_names.remove(&old.name);
            }
        }
    }

    /// Adds or replaces an application name.
    pub fn insert_application(&mut self, id: u32, name: impl Into<Box<str>>) {
        self.applications.insert(id, name.into());
    }

    /// Adds or replaces a vendor name.
    pub fn insert_vendor(&mut self, id: u32, name: impl Into<Box<str>>) {
        self.vendors.insert(id, name.into());
    }

    /// Adds every definition of `other`, replacing clashes.
    pub fn extend_from(&mut self, other: &Dictionary) {
        for def in &other.avps {
            self.insert_avp(def.clone());
        }
        for def in other.commands.values() {
            self.insert_command(def.clone());
        }
        for (id, n) in &other.applications {
            self.insert_application(*id, n.clone());
        }
        for (id, n) in &other.vendors {
            self.insert_vendor(*id, n.clone());
        }
    }

    /// The AVP with this code and vendor (`None` or `Some(0)` for IETF AVPs).
    #[inline]
    pub fn avp(&self, code: u32, vendor_id: Option<u32>) -> Option<&AvpDef> {
        let vendor = vendor_id.unwrap_or(0);
        if vendor == 0 && (code as usize) < SMALL_CODES {
            return match self.small.get(code as usize) {
                Some(&i) if i > 0 => self.avps.get(i as usize - 1),
                _ => None,
            };
        }
        self.by_key.get(&(code, vendor)).map(|&i| &self.avps[i])
    }

    /// The AVP with this name.
    #[inline]
    pub fn avp_by_name(&self, name: &str) -> Option<&AvpDef> {
        self.by_name.get(name).map(|&i| &self.avps[i])
    }

    /// The command with this code.
    pub fn command(&self, code: u32) -> Option<&CommandDef> {
        self.commands.get(&code)
    }

    /// The command with this base name (e.g. `Credit-Control`).
    pub fn command_by_name(&self, name: &str) -> Option<&CommandDef> {
        self.command_names.get(name).and_then(|c| self.commands.get(c))
    }

    /// The name of an application.
    pub fn application(&self, id: u32) -> Option<&str> {
        self.applications.get(&id).map(|s| &**s)
    }

    /// The name of a vendor.
    pub fn vendor(&self, id: u32) -> Option<&str> {
        self.vendors.get(&id).map(|s| &**s)
    }

    /// Number of AVP definitions.
    pub fn avp_count(&self) -> usize {
        self.avps.len()
    }

    /// Number of command definitions.
    pub fn command_count(&self) -> usize {
        self.commands.len()
    }

    /// All AVP definitions, in insertion order.
    pub fn avps(&self) -> impl Iterator<Item = &AvpDef> {
        self.avps.iter()
    }

    /// Checks every AVP of `message` against its dictionary type, descending
    /// into Grouped AVPs (up to [`MAX_GROUP_DEPTH`] levels). AVPs the
    /// dictionary does not know are accepted as opaque.
    pub fn validate(&self, message: &Message) -> Result<(), DecodeError> {
        self.validate_avps(message.avps(), 0)
    }

    fn validate_avps(&self, avps: AvpIter<'_>, depth: usize) -> Result<(), DecodeError> {
        for avp in avps {
            let avp = avp?;
            self.validate_avp(&avp, depth)?;
        }
        Ok(())
    }

    /// Checks one AVP (and its children) against its dictionary type.
    pub fn validate_avp(&self, avp: &Avp<'_>, depth: usize) -> Result<(), DecodeError> {
        let Some(def) = self.avp(avp.code(), avp.vendor_id()) else { return Ok(()) };
        if def.data_type == DataType::Grouped {
            if depth >= MAX_GROUP_DEPTH {
                return Err(DecodeError::GroupTooDeep { offset: avp.offset(), code: avp.code(), max: MAX_GROUP_DEPTH });
            }
            self.validate_avps(avp.group(), depth + 1)
        } else {
            def.data_type.check(avp)
        }
    }
}

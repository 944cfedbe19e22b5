//! Loader for Wireshark's Diameter dictionary XML (feature `xml`).
//!
//! The format is the one of `/usr/share/wireshark/diameter/dictionary.dtd`:
//! a `<dictionary>` holding `<base>`, `<application>` and `<vendor>`
//! elements, which hold `<command>`, `<typedefn>` and `<avp>` definitions.
//! `dictionary.xml` declares each vendor file as an external entity in its
//! internal DTD subset (`<!ENTITY TGPP SYSTEM "TGPP.xml">`) and includes it
//! with a reference (`&TGPP;`). The vendor files are XML fragments: several
//! top-level elements, often after an `<?xml?>` declaration.
//!
//! The loader reads each file with its own XML reader, so errors name the
//! file and line they occur in. Definitions are collected first and resolved
//! once the whole document has been read, because vendor symbols
//! (`vendor-id="TGPP"`) and type names may be used before the element that
//! defines them. A failed load leaves the dictionary untouched.
//!
//! Interpretation follows Wireshark's own reader (`packet-diameter.c`):
//!
//! * a type name resolves through its `typedefn` parents; a name that never
//!   reaches a known format is OctetString (counted in
//!   [`LoadStats::fallback_types`]), never an error. Type and vendor names
//!   are matched ignoring ASCII case.
//! * Wireshark's `IPAddress` type is the RFC 6733 Address format (a 2-byte
//!   address family, then the address), except for AVP codes below 256,
//!   which Wireshark treats as RADIUS-style bare 4- or 16-byte addresses.
//!   The loader maps it the same way, to [`DataType::Address`] and
//!   [`DataType::IpAddress`] respectively.
//! * `mandatory` and `protected` default to `may`, as in the DTD. The
//!   vendor of an AVP is its `vendor-id` attribute only; `None` or no
//!   attribute means an IETF AVP.
//! * A later definition of the same (code, vendor) replaces an earlier one.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::Reader;

use super::{AvpDef, CommandDef, Dictionary, FlagRule};
use crate::types::DataType;

/// Where Debian's `libwireshark-data` installs the dictionary.
const SYSTEM_DICTIONARY: &str = "/usr/share/wireshark/diameter/dictionary.xml";

/// How deeply entity references may nest (the main document is level 0).
const MAX_ENTITY_DEPTH: usize = 8;

/// Longest `typedefn` parent chain followed before giving up (cycles).
const MAX_TYPE_CHAIN: usize = 32;

/// Type names Wireshark accepts for the formats [`DataType::from_name`]
/// knows, used to match names that differ only in ASCII case.
const TYPE_NAMES: &[&str] = &[
    "OctetString",
    "OctetStringOrUTF8",
    "MIPRegistrationRequest",
    "Integer32",
    "Integer64",
    "Unsigned32",
    "AppId",
    "VendorId",
    "Unsigned64",
    "Float32",
    "Float64",
    "Grouped",
    "Address",
    "Time",
    "UTF8String",
    "DiameterIdentity",
    "DiameterURI",
    "Enumerated",
    "IPFilterRule",
    "QoSFilterRule",
    "IPAddress",
];

/// What a load read and defined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadStats {
    /// Every file read, in the order it was opened: the main document, then
    /// each entity file as it is referenced. With
    /// [`Dictionary::load_wireshark_str`] the main document is `<string>`
    /// and entity files are named by their system identifier.
    pub files: Vec<PathBuf>,
    /// `<avp>` definitions read (a definition that replaces an earlier one
    /// with the same code and vendor counts too).
    pub avps: usize,
    /// `<command>` definitions read.
    pub commands: usize,
    /// Named `<application>` definitions read.
    pub applications: usize,
    /// `<vendor>` definitions read (the `None` pseudo-vendor excluded).
    pub vendors: usize,
    /// AVPs whose type name resolved to no known format and which were
    /// therefore typed OctetString.
    pub fallback_types: usize,
}

/// Why a Wireshark dictionary could not be loaded. Every variant names the
/// file concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DictError {
    /// The dictionary file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not well-formed XML.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Xml {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// An attribute has a value the format does not allow (a code that is
    /// not a number, an unknown flag rule ...).
    #[error("{}:{line}: <{element}> has invalid {attribute}=\"{value}\"", file.display())]
    BadAttribute {
        /// The file.
        file: PathBuf,
        /// 1-based line of the element.
        line: usize,
        /// The element, e.g. `avp`.
        element: String,
        /// The attribute, e.g. `code`.
        attribute: String,
        /// The offending value.
        value: String,
    },
    /// A required attribute is missing.
    #[error("{}:{line}: <{element}> has no {attribute} attribute", file.display())]
    MissingAttribute {
        /// The file.
        file: PathBuf,
        /// 1-based line of the element.
        line: usize,
        /// The element, e.g. `avp`.
        element: String,
        /// The attribute, e.g. `code`.
        attribute: String,
    },
    /// A `vendor-id` names no `<vendor>` defined anywhere in the document.
    #[error("{}:{line}: <{element}> refers to undefined vendor-id \"{vendor}\"", file.display())]
    UnknownVendor {
        /// The file.
        file: PathBuf,
        /// 1-based line of the element.
        line: usize,
        /// The element, e.g. `avp`.
        element: String,
        /// The vendor symbol.
        vendor: String,
    },
    /// A reference to an entity the document does not declare.
    #[error("{}:{line}: reference to undeclared entity &{name};", file.display())]
    UndeclaredEntity {
        /// The file holding the reference.
        file: PathBuf,
        /// 1-based line of the reference.
        line: usize,
        /// The entity name.
        name: String,
    },
    /// An external entity's file could not be read.
    #[error("{}:{line}: cannot read {} for entity &{name};: {source}", file.display(), path.display())]
    MissingEntity {
        /// The file holding the reference.
        file: PathBuf,
        /// 1-based line of the reference.
        line: usize,
        /// The entity name.
        name: String,
        /// The entity's file (its system identifier, resolved against the
        /// main document's directory by [`Dictionary::load_wireshark_file`]).
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Entity references nest too deeply (or refer to themselves).
    #[error("{}:{line}: entity &{name}; nests more than {limit} levels deep", file.display())]
    EntityDepth {
        /// The file holding the reference.
        file: PathBuf,
        /// 1-based line of the reference.
        line: usize,
        /// The entity name.
        name: String,
        /// The nesting limit.
        limit: usize,
    },
}

impl Dictionary {
    /// Loads a Wireshark dictionary file, such as
    /// `/usr/share/wireshark/diameter/dictionary.xml`, adding its
    /// definitions to this dictionary (replacing definitions with the same
    /// AVP code and vendor, command code, application or vendor id).
    ///
    /// External entities are read relative to the file's directory. On error
    /// the dictionary is left unchanged.
    pub fn load_wireshark_file(&mut self, path: impl AsRef<Path>) -> Result<LoadStats, DictError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| DictError::Io { path: path.to_path_buf(), source })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut resolve = |system: &str| {
            let file = dir.join(system);
            let text = std::fs::read_to_string(&file);
            (file, text)
        };
        load(self, path.to_path_buf(), &text, &mut resolve)
    }

    /// Loads a Wireshark dictionary from a string. `resolve` returns the
    /// text of an external entity given its system identifier (the file name
    /// in `<!ENTITY name SYSTEM "file">`); it is also asked for the DTD a
    /// `<!DOCTYPE>` names, for entity declarations, and an error there is
    /// ignored (the DTD is optional). On error the dictionary is left
    /// unchanged.
    ///
    /// ```
    /// use diam_proto::Dictionary;
    ///
    /// let xml = r#"<!DOCTYPE dictionary [ <!ENTITY acme SYSTEM "acme.xml"> ]>
    ///     <dictionary><base>&acme;</base></dictionary>"#;
    /// let mut dict = Dictionary::new();
    /// let stats = dict.load_wireshark_str(xml, &mut |file| {
    ///     assert_eq!(file, "acme.xml");
    ///     Ok(r#"<vendor vendor-id="Acme" code="99999" name="Acme"/>
    ///         <avp name="Acme-Id" code="1" vendor-id="Acme"><type type-name="Unsigned32"/></avp>"#
    ///         .to_string())
    /// })?;
    /// assert_eq!(stats.files.len(), 2);
    /// assert_eq!(dict.avp(1, Some(99999)).map(|a| a.name()), Some("Acme-Id"));
    /// # Ok::<(), diam_proto::dict::DictError>(())
    /// ```
    pub fn load_wireshark_str(
        &mut self,
        xml: &str,
        resolve: &mut dyn FnMut(&str) -> io::Result<String>,
    ) -> Result<LoadStats, DictError> {
        let mut resolve = |system: &str| (PathBuf::from(system), resolve(system));
        load(self, PathBuf::from("<string>"), xml, &mut resolve)
    }

    /// The system-wide Wireshark dictionary
    /// (`/usr/share/wireshark/diameter/dictionary.xml`, Debian package
    /// `libwireshark-data`), if it is installed.
    pub fn wireshark_system() -> Option<&'static Path> {
        let path = Path::new(SYSTEM_DICTIONARY);
        path.is_file().then_some(path)
    }
}

/// Resolves an external entity's system identifier to the file's name and
/// its text.
type Resolver<'a> = dyn FnMut(&str) -> (PathBuf, io::Result<String>) + 'a;

fn load(dict: &mut Dictionary, name: PathBuf, text: &str, resolve: &mut Resolver<'_>) -> Result<LoadStats, DictError> {
    let mut loader = Loader {
        resolve,
        names: vec![name.clone()],
        files: vec![name],
        entities: HashMap::new(),
        vendors: Vec::new(),
        typedefns: HashMap::new(),
        avps: Vec::new(),
        commands: Vec::new(),
        applications: Vec::new(),
        current: None,
    };
    loader.parse(0, text, 0)?;
    loader.finish(dict)
}

#[derive(Debug, Clone)]
enum EntityDecl {
    /// `<!ENTITY name SYSTEM "file">`.
    External(String),
    /// `<!ENTITY name "replacement text">`.
    Internal(String),
}

/// Where an element was read: index into `Loader::names`, 1-based line.
#[derive(Debug, Clone, Copy)]
struct At {
    file: usize,
    line: usize,
}

/// An `<avp>` as read, before vendor and type resolution.
#[derive(Debug)]
struct RawAvp {
    at: At,
    name: String,
    code: u32,
    vendor: Option<String>,
    type_name: Option<String>,
    grouped: bool,
    mandatory: FlagRule,
    protected: FlagRule,
    enums: Vec<(i64, String)>,
}

#[derive(Debug)]
struct RawVendor {
    symbol: String,
    code: u32,
    name: Option<String>,
}

struct Loader<'r, 'a> {
    resolve: &'r mut Resolver<'a>,
    /// Names of the texts parsed, for errors (files and internal entities).
    names: Vec<PathBuf>,
    /// Files read, for [`LoadStats::files`].
    files: Vec<PathBuf>,
    entities: HashMap<String, EntityDecl>,
    vendors: Vec<RawVendor>,
    /// Lower-cased type name -> parent type name.
    typedefns: HashMap<String, Option<String>>,
    avps: Vec<RawAvp>,
    commands: Vec<(u32, String)>,
    applications: Vec<(u32, String)>,
    /// The `<avp>` being read.
    current: Option<RawAvp>,
}

/// Byte offsets of line starts, to turn reader offsets into positions.
struct Lines<'t> {
    text: &'t str,
    starts: Vec<usize>,
}

impl<'t> Lines<'t> {
    fn new(text: &'t str) -> Self {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Lines { text, starts }
    }

    /// 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line(offset);
        let start = self.starts[line - 1];
        let column = self.text.get(start..offset).map_or(offset - start, |s| s.chars().count()) + 1;
        (line, column)
    }
}

/// An element's attributes, unescaped.
struct Attrs(Vec<(String, String)>);

impl Attrs {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl Loader<'_, '_> {
    fn name(&self, file: usize) -> PathBuf {
        self.names[file].clone()
    }

    fn xml_error(&self, file: usize, lines: &Lines<'_>, offset: usize, message: String) -> DictError {
        let (line, column) = lines.position(offset);
        DictError::Xml { file: self.name(file), line, column, message }
    }

    fn bad(&self, at: At, element: &str, attribute: &str, value: &str) -> DictError {
        DictError::BadAttribute {
            file: self.name(at.file),
            line: at.line,
            element: element.to_owned(),
            attribute: attribute.to_owned(),
            value: value.to_owned(),
        }
    }

    fn required<'v>(&self, at: At, attrs: &'v Attrs, element: &str, attribute: &str) -> Result<&'v str, DictError> {
        attrs.get(attribute).ok_or_else(|| DictError::MissingAttribute {
            file: self.name(at.file),
            line: at.line,
            element: element.to_owned(),
            attribute: attribute.to_owned(),
        })
    }

    fn u32_attr(&self, at: At, attrs: &Attrs, element: &str, attribute: &str) -> Result<u32, DictError> {
        let value = self.required(at, attrs, element, attribute)?;
        parse_int(value).and_then(|v| u32::try_from(v).ok()).ok_or_else(|| self.bad(at, element, attribute, value))
    }

    fn rule_attr(&self, at: At, attrs: &Attrs, element: &str, attribute: &str) -> Result<FlagRule, DictError> {
        let Some(value) = attrs.get(attribute) else { return Ok(FlagRule::May) };
        let rule = match value.trim().to_ascii_lowercase().as_str() {
            "must" => FlagRule::Must,
            "may" => FlagRule::May,
            "shouldnot" | "should-not" => FlagRule::ShouldNot,
            "mustnot" | "must-not" => FlagRule::MustNot,
            _ => return Err(self.bad(at, element, attribute, value)),
        };
        Ok(rule)
    }

    /// Parses one text (the main document, an entity file or an internal
    /// entity's replacement text) and everything it references.
    fn parse(&mut self, file: usize, text: &str, depth: usize) -> Result<(), DictError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let lines = Lines::new(text);
        let mut reader = Reader::from_str(text);
        let mut open: Vec<String> = Vec::new();
        loop {
            let offset = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
            let event = match reader.read_event() {
                Ok(event) => event,
                Err(err) => {
                    let at = usize::try_from(reader.error_position()).unwrap_or(usize::MAX);
                    return Err(self.xml_error(file, &lines, at, err.to_string()));
                }
            };
            match event {
                Event::Start(e) => {
                    let at = At { file, line: lines.line(offset) };
                    let tag = self.element(at, &lines, offset, &e)?;
                    open.push(tag);
                }
                Event::Empty(e) => {
                    let at = At { file, line: lines.line(offset) };
                    let tag = self.element(at, &lines, offset, &e)?;
                    self.end(&tag);
                }
                Event::End(e) => {
                    open.pop();
                    self.end(&String::from_utf8_lossy(e.name().as_ref()));
                }
                Event::DocType(doctype) if depth == 0 => {
                    let content = String::from_utf8_lossy(&doctype);
                    self.doctype(file, &lines, offset, &content)?;
                }
                Event::GeneralRef(reference) => self.reference(file, &lines, offset, &reference, depth)?,
                Event::Eof => break,
                // Text, comments, CDATA, processing instructions (Wireshark's
                // `<?avp-proto?>` hints), the XML declaration, and a DOCTYPE
                // inside an entity: nothing to define.
                _ => {}
            }
        }
        match open.last() {
            Some(tag) => Err(self.xml_error(file, &lines, text.len(), format!("element <{tag}> is not closed"))),
            None => Ok(()),
        }
    }

    /// Collects and unescapes an element's attributes. Attribute values may
    /// use the predefined entities, character references and internal
    /// entities declared in the DTD.
    fn attrs(&self, at: At, lines: &Lines<'_>, offset: usize, e: &BytesStart<'_>) -> Result<Attrs, DictError> {
        let mut attrs = Vec::new();
        for attr in e.attributes() {
            let attr = attr.map_err(|err| self.xml_error(at.file, lines, offset, err.to_string()))?;
            let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
            let value = attr
                .unescape_value_with(|name| {
                    resolve_predefined_entity(name).or_else(|| match self.entities.get(name) {
                        Some(EntityDecl::Internal(text)) => Some(text.as_str()),
                        _ => None,
                    })
                })
                .map_err(|err| self.xml_error(at.file, lines, offset, format!("attribute {key}: {err}")))?;
            attrs.push((key, value.into_owned()));
        }
        Ok(Attrs(attrs))
    }

    /// Handles a start or empty-element tag; returns the tag name.
    fn element(&mut self, at: At, lines: &Lines<'_>, offset: usize, e: &BytesStart<'_>) -> Result<String, DictError> {
        let tag = String::from_utf8_lossy(e.name().as_ref()).into_owned();
        if !matches!(
            tag.as_str(),
            "avp" | "type" | "grouped" | "enum" | "vendor" | "command" | "typedefn" | "application"
        ) {
            // <dictionary>, <base>, <gavp> and anything unknown.
            return Ok(tag);
        }
        let attrs = self.attrs(at, lines, offset, e)?;
        match tag.as_str() {
            "avp" => {
                let name = self.required(at, &attrs, &tag, "name")?.to_owned();
                let code = self.u32_attr(at, &attrs, &tag, "code")?;
                let mandatory = self.rule_attr(at, &attrs, &tag, "mandatory")?;
                let protected = self.rule_attr(at, &attrs, &tag, "protected")?;
                let vendor = attrs.get("vendor-id").map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
                if self.current.is_some() {
                    return Err(self.xml_error(at.file, lines, offset, "<avp> nested inside <avp>".to_owned()));
                }
                self.current = Some(RawAvp {
                    at,
                    name,
                    code,
                    vendor,
                    type_name: None,
                    grouped: false,
                    mandatory,
                    protected,
                    enums: Vec::new(),
                });
            }
            "type" => {
                if self.current.is_some() {
                    let type_name = self.required(at, &attrs, &tag, "type-name")?.trim().to_owned();
                    if let Some(avp) = &mut self.current {
                        avp.type_name = Some(type_name);
                    }
                }
            }
            "grouped" => {
                if let Some(avp) = &mut self.current {
                    avp.grouped = true;
                }
            }
            "enum" => {
                if self.current.is_some() {
                    let name = self.required(at, &attrs, &tag, "name")?.to_owned();
                    let code = self.required(at, &attrs, &tag, "code")?;
                    let code = parse_int(code)
                        .and_then(|v| i64::try_from(v).ok())
                        .ok_or_else(|| self.bad(at, &tag, "code", code))?;
                    if let Some(avp) = &mut self.current {
                        avp.enums.push((code, name));
                    }
                }
            }
            "vendor" => {
                let symbol = self.required(at, &attrs, &tag, "vendor-id")?.trim().to_owned();
                let code = self.u32_attr(at, &attrs, &tag, "code")?;
                let name = attrs.get("name").map(str::to_owned);
                self.vendors.push(RawVendor { symbol, code, name });
            }
            "command" => {
                let name = self.required(at, &attrs, &tag, "name")?.to_owned();
                let code = self.u32_attr(at, &attrs, &tag, "code")?;
                self.commands.push((code, name));
            }
            "typedefn" => {
                let name = self.required(at, &attrs, &tag, "type-name")?.trim().to_ascii_lowercase();
                let parent = attrs.get("type-parent").map(|p| p.trim().to_owned()).filter(|p| !p.is_empty());
                self.typedefns.entry(name).or_insert(parent);
            }
            "application" => {
                let id = self.u32_attr(at, &attrs, &tag, "id")?;
                if let Some(name) = attrs.get("name") {
                    self.applications.push((id, name.to_owned()));
                }
            }
            _ => unreachable!("filtered above"),
        }
        Ok(tag)
    }

    fn end(&mut self, tag: &str) {
        if tag == "avp" {
            if let Some(avp) = self.current.take() {
                self.avps.push(avp);
            }
        }
    }

    /// Expands an entity reference found in content.
    fn reference(
        &mut self,
        file: usize,
        lines: &Lines<'_>,
        offset: usize,
        reference: &BytesRef<'_>,
        depth: usize,
    ) -> Result<(), DictError> {
        let line = lines.line(offset);
        if reference.is_char_ref() {
            // Character data between elements: check it, ignore it.
            return reference
                .resolve_char_ref()
                .map(drop)
                .map_err(|err| self.xml_error(file, lines, offset, err.to_string()));
        }
        let name = String::from_utf8_lossy(reference).into_owned();
        if resolve_predefined_entity(&name).is_some() {
            return Ok(());
        }
        let Some(decl) = self.entities.get(&name).cloned() else {
            return Err(DictError::UndeclaredEntity { file: self.name(file), line, name });
        };
        if depth >= MAX_ENTITY_DEPTH {
            return Err(DictError::EntityDepth { file: self.name(file), line, name, limit: MAX_ENTITY_DEPTH });
        }
        let (label, text) = match decl {
            EntityDecl::External(system) => {
                let (path, text) = (self.resolve)(&system);
                let text = text.map_err(|source| DictError::MissingEntity {
                    file: self.name(file),
                    line,
                    name: name.clone(),
                    path: path.clone(),
                    source,
                })?;
                self.files.push(path.clone());
                (path, text)
            }
            EntityDecl::Internal(text) => {
                (PathBuf::from(format!("{} (entity &{name};)", self.names[file].display())), text)
            }
        };
        self.names.push(label);
        self.parse(self.names.len() - 1, &text, depth + 1)
    }

    /// Reads the entity declarations of the DOCTYPE: its internal subset,
    /// then its external subset (the DTD file named by `SYSTEM`) if the
    /// resolver supplies it. Internal declarations take precedence, as in
    /// XML. An unreadable DTD is skipped, as a non-validating parser may:
    /// Wireshark's dictionaries do not need theirs.
    fn doctype(&mut self, file: usize, lines: &Lines<'_>, offset: usize, content: &str) -> Result<(), DictError> {
        let (external, internal) = match find_unquoted(content, b'[') {
            Some(i) => (&content[..i], Some(&content[i + 1..])),
            None => (content, None),
        };
        if let Some(internal) = internal {
            declarations(internal, &mut self.entities).map_err(|(_, msg)| self.xml_error(file, lines, offset, msg))?;
        }
        let Some(system) = external_id(external) else { return Ok(()) };
        let (path, text) = (self.resolve)(&system);
        let Ok(text) = text else { return Ok(()) };
        self.files.push(path.clone());
        self.names.push(path);
        let dtd = self.names.len() - 1;
        declarations(&text, &mut self.entities).map_err(|(at, msg)| self.xml_error(dtd, &Lines::new(&text), at, msg))
    }

    /// Resolves vendors and types and adds everything to `dict`.
    fn finish(self, dict: &mut Dictionary) -> Result<LoadStats, DictError> {
        let mut vendor_codes: HashMap<String, u32> = HashMap::new();
        vendor_codes.insert("none".to_owned(), 0);
        for v in &self.vendors {
            vendor_codes.entry(v.symbol.to_ascii_lowercase()).or_insert(v.code);
        }
        let mut stats = LoadStats::default();
        let mut defs = Vec::with_capacity(self.avps.len());
        for raw in &self.avps {
            let vendor = match &raw.vendor {
                None => None,
                Some(symbol) => {
                    let code = vendor_codes
                        .get(&symbol.to_ascii_lowercase())
                        .copied()
                        .or_else(|| parse_int(symbol).and_then(|v| u32::try_from(v).ok()));
                    match code {
                        Some(code) => Some(code),
                        None => {
                            return Err(DictError::UnknownVendor {
                                file: self.name(raw.at.file),
                                line: raw.at.line,
                                element: "avp".to_owned(),
                                vendor: symbol.clone(),
                            })
                        }
                    }
                }
            };
            let data_type = if raw.grouped {
                DataType::Grouped
            } else {
                match raw.type_name.as_deref().and_then(|t| self.resolve_type(t, raw.code)) {
                    Some(t) => t,
                    None => {
                        stats.fallback_types += 1;
                        DataType::OctetString
                    }
                }
            };
            let mut def = AvpDef::new(raw.code, vendor, raw.name.as_str(), data_type)
                .with_mandatory(raw.mandatory)
                .with_protected(raw.protected);
            let signed32 = matches!(data_type, DataType::Enumerated | DataType::Integer32);
            for (value, name) in &raw.enums {
                def.add_enum(*value, name.as_str());
                // Wireshark writes some Enumerated values as unsigned
                // (Media-Type OTHER = 4294967295); name the Integer32 the
                // wire carries too, so lookups by decoded value work.
                if signed32 && *value > i64::from(i32::MAX) && *value <= i64::from(u32::MAX) {
                    def.add_enum(i64::from(*value as u32 as i32), name.as_str());
                }
            }
            defs.push(def);
        }

        for v in &self.vendors {
            if v.code != 0 {
                dict.insert_vendor(v.code, v.name.as_deref().unwrap_or(&v.symbol));
                stats.vendors += 1;
            }
        }
        for (id, name) in &self.applications {
            dict.insert_application(*id, name.as_str());
        }
        for (code, name) in &self.commands {
            dict.insert_command(CommandDef::new(*code, name.as_str()));
        }
        for def in defs {
            dict.insert_avp(def);
        }
        stats.avps = self.avps.len();
        stats.commands = self.commands.len();
        stats.applications = self.applications.len();
        stats.files = self.files;
        Ok(stats)
    }

    /// Resolves a type name through `typedefn` parents to a data format.
    fn resolve_type(&self, name: &str, code: u32) -> Option<DataType> {
        let mut name = name;
        for _ in 0..MAX_TYPE_CHAIN {
            if let Some(t) = known_type(name, code) {
                return Some(t);
            }
            name = self.typedefns.get(&name.to_ascii_lowercase())?.as_deref()?;
        }
        None
    }
}

/// A type name Wireshark itself understands, ignoring ASCII case.
fn known_type(name: &str, code: u32) -> Option<DataType> {
    let name = TYPE_NAMES.iter().copied().find(|n| n.eq_ignore_ascii_case(name)).unwrap_or(name);
    if name == "IPAddress" {
        // See the module documentation.
        return Some(if code < 256 { DataType::IpAddress } else { DataType::Address });
    }
    DataType::from_name(name)
}

/// Parses a decimal or `0x` hexadecimal integer with an optional sign.
fn parse_int(s: &str) -> Option<i128> {
    let s = s.trim();
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None if digits.bytes().all(|b| b.is_ascii_digit()) => digits.parse::<u64>().ok()?,
        None => return None,
    };
    let magnitude = i128::from(magnitude);
    Some(if negative { -magnitude } else { magnitude })
}

/// The byte index of the first `byte` not inside a quoted literal.
fn find_unquoted(s: &str, byte: u8) -> Option<usize> {
    let mut quote = None;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == byte => return Some(i),
            None => {}
        }
    }
    None
}

/// Reads the `<!ENTITY>` declarations of a DTD subset. Errors carry the
/// byte offset of the declaration.
fn declarations(text: &str, entities: &mut HashMap<String, EntityDecl>) -> Result<(), (usize, String)> {
    let mut rest = text;
    while !rest.is_empty() {
        let at = text.len() - rest.len();
        let fail = |msg: &str| (at, msg.to_owned());
        if let Some(r) = rest.strip_prefix("<!--") {
            rest = r.find("-->").map(|i| &r[i + 3..]).ok_or_else(|| fail("unterminated comment in DTD"))?;
        } else if let Some(r) = rest.strip_prefix("<?") {
            rest =
                r.find("?>").map(|i| &r[i + 2..]).ok_or_else(|| fail("unterminated processing instruction in DTD"))?;
        } else if let Some(r) = rest.strip_prefix("<!ENTITY") {
            let end = find_unquoted(r, b'>').ok_or_else(|| fail("unterminated <!ENTITY> declaration"))?;
            if let Some((name, decl)) = parse_entity(&r[..end]).map_err(|msg| (at, msg))? {
                entities.entry(name).or_insert(decl);
            }
            rest = &r[end + 1..];
        } else if rest.starts_with("<!") {
            let end = find_unquoted(rest, b'>').ok_or_else(|| fail("unterminated declaration in DTD"))?;
            rest = &rest[end + 1..];
        } else {
            let mut chars = rest.chars();
            chars.next();
            rest = chars.as_str();
        }
    }
    Ok(())
}

/// The system identifier of a DOCTYPE's external subset:
/// `root SYSTEM "file"` or `root PUBLIC "id" "file"`.
fn external_id(doctype: &str) -> Option<String> {
    let rest = doctype.trim_start();
    let rest = rest[rest.find(char::is_whitespace)?..].trim_start();
    if let Some(r) = rest.strip_prefix("SYSTEM") {
        literal(r.trim_start()).map(|(s, _)| s)
    } else if let Some(r) = rest.strip_prefix("PUBLIC") {
        let r = r.trim_start();
        let (_, used) = literal(r)?;
        literal(r[used..].trim_start()).map(|(s, _)| s)
    } else {
        None
    }
}

/// A quoted literal at the start of `s`: its content and the bytes used.
fn literal(s: &str) -> Option<(String, usize)> {
    let quote = s.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let end = s[1..].find(quote)?;
    Some((s[1..=end].to_owned(), end + 2))
}

/// Parses the inside of `<!ENTITY ... >`. Parameter entities are skipped.
fn parse_entity(decl: &str) -> Result<Option<(String, EntityDecl)>, String> {
    let mut rest = decl.trim_start();
    if let Some(r) = rest.strip_prefix('%') {
        if r.starts_with(char::is_whitespace) {
            return Ok(None);
        }
    }
    let name_end = rest.find(char::is_whitespace).ok_or_else(|| format!("malformed <!ENTITY{decl}>"))?;
    let name = rest[..name_end].to_owned();
    rest = rest[name_end..].trim_start();
    let literal = |s: &str| literal(s).ok_or_else(|| format!("<!ENTITY {name}>: expected a quoted literal"));
    let decl = if let Some(r) = rest.strip_prefix("SYSTEM") {
        EntityDecl::External(literal(r.trim_start())?.0)
    } else if let Some(r) = rest.strip_prefix("PUBLIC") {
        let r = r.trim_start();
        let (_, used) = literal(r)?;
        EntityDecl::External(literal(r[used..].trim_start())?.0)
    } else {
        EntityDecl::Internal(literal(rest)?.0)
    };
    Ok(Some((name, decl)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        assert_eq!(parse_int("42"), Some(42));
        assert_eq!(parse_int(" -7 "), Some(-7));
        assert_eq!(parse_int("0x1F"), Some(31));
        assert_eq!(parse_int("0XfFfFfFfF"), Some(0xffff_ffff));
        assert_eq!(parse_int("-0x10"), Some(-16));
        assert_eq!(parse_int("4294967295"), Some(4_294_967_295));
        assert_eq!(parse_int(""), None);
        assert_eq!(parse_int("12a"), None);
        assert_eq!(parse_int("0x"), None);
    }

    #[test]
    fn entity_declarations() {
        let (name, decl) = parse_entity(" TGPP SYSTEM \"TGPP.xml\"").unwrap().unwrap();
        assert_eq!(name, "TGPP");
        assert!(matches!(decl, EntityDecl::External(f) if f == "TGPP.xml"));
        let (_, decl) = parse_entity(" x PUBLIC '-//x//EN' 'x.xml'").unwrap().unwrap();
        assert!(matches!(decl, EntityDecl::External(f) if f == "x.xml"));
        let (_, decl) = parse_entity(" v \"some > text\"").unwrap().unwrap();
        assert!(matches!(decl, EntityDecl::Internal(t) if t == "some > text"));
        assert!(parse_entity(" % p SYSTEM \"p.dtd\"").unwrap().is_none());
        assert!(parse_entity(" broken SYSTEM nofile").is_err());
    }

    #[test]
    fn positions() {
        let lines = Lines::new("ab\ncdé\nf");
        assert_eq!(lines.position(0), (1, 1));
        assert_eq!(lines.position(3), (2, 1));
        assert_eq!(lines.position(7), (2, 4));
        assert_eq!(lines.position(8), (3, 1));
    }

    #[test]
    fn ip_address_follows_wireshark() {
        assert_eq!(known_type("IPAddress", 8), Some(DataType::IpAddress));
        assert_eq!(known_type("IPAddress", 257), Some(DataType::Address));
        assert_eq!(known_type("ipaddress", 1228), Some(DataType::Address));
        assert_eq!(known_type("utf8string", 1), Some(DataType::Utf8String));
        assert_eq!(known_type("Bogus", 1), None);
    }
}

//! The built-in dictionary and the Wireshark dictionary loader.

use diam_proto::types::DataType;
use diam_proto::Dictionary;

// ---------------------------------------------------------------------------
// The built-in dictionary
// ---------------------------------------------------------------------------

#[test]
fn builtin_dictionary() {
    let d = Dictionary::base();
    assert!(d.avp_count() > 300, "{}", d.avp_count());
    assert_eq!(d.avp_by_name("Origin-Host").map(|a| a.code()), Some(264));
    assert_eq!(d.avp(1407, Some(10415)).map(|a| a.name()), Some("Visited-PLMN-Id"));
    assert_eq!(d.avp_by_name("Vendor-Specific-Application-Id").map(|a| a.data_type()), Some(DataType::Grouped));
    assert_eq!(
        d.command_by_name("Credit-Control").map(|c| c.full_name(true)).as_deref(),
        Some("Credit-Control-Request")
    );
    // Shared, built once.
    assert!(std::ptr::eq(d, Dictionary::base()));
}

#[test]
fn lookups_scale_as_hash_lookups() {
    // 100 000 definitions, each looked up by key and by name: linear scans
    // would make this quadratic (10^10 steps); hash maps make it instant.
    let mut d = Dictionary::new();
    for code in 0..100_000u32 {
        d.insert_avp(diam_proto::AvpDef::new(code, Some(7), format!("AVP-{code}"), DataType::Unsigned32));
    }
    for code in 0..100_000u32 {
        assert_eq!(d.avp(code, Some(7)).map(|a| a.code()), Some(code));
        assert_eq!(d.avp_by_name(&format!("AVP-{code}")).map(|a| a.code()), Some(code));
    }
}

// ---------------------------------------------------------------------------
// The Wireshark loader (feature `xml`)
// ---------------------------------------------------------------------------

#[cfg(feature = "xml")]
mod wireshark {
    use std::collections::{HashMap, HashSet};
    use std::io;
    use std::path::{Path, PathBuf};

    use diam_proto::dict::{DictError, FlagRule, LoadStats};

    use super::*;

    const SYSTEM_DIR: &str = "/usr/share/wireshark/diameter";

    /// The system dictionary directory, or `None` (after saying so loudly) when
    /// libwireshark-data is not installed. On CI its absence is a failure.
    fn system_dir() -> Option<&'static Path> {
        let dir = Path::new(SYSTEM_DIR);
        if dir.join("dictionary.xml").is_file() {
            return Some(dir);
        }
        if std::env::var("CI").as_deref() == Ok("true") || std::env::var("DIAM_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("{SYSTEM_DIR}/dictionary.xml is missing on CI: install libwireshark-data");
        }
        eprintln!("SKIPPED: libwireshark-data not installed ({SYSTEM_DIR}/dictionary.xml missing)");
        None
    }

    fn load_str(xml: &str, files: &[(&str, &str)]) -> Result<(Dictionary, LoadStats), DictError> {
        let files: HashMap<String, String> = files.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
        let mut dict = Dictionary::new();
        let stats = dict.load_wireshark_str(xml, &mut |name| {
            files.get(name).cloned().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {name}")))
        })?;
        Ok((dict, stats))
    }

    // ---------------------------------------------------------------------------
    // An independent, deliberately simple reading of the XML files, to check the
    // loader against: every <avp> and <vendor> outside comments.
    // ---------------------------------------------------------------------------

    #[derive(Debug)]
    struct XmlAvp {
        file: String,
        name: String,
        code: u32,
        vendor: Option<String>,
        type_name: Option<String>,
        grouped: bool,
    }

    fn strip_comments(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("<!--") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("-->").expect("unterminated comment");
            rest = &rest[start + end + 3..];
        }
        out.push_str(rest);
        out
    }

    /// (tag, attributes, self-closing) for every start or empty tag.
    fn tags(text: &str) -> Vec<(String, HashMap<String, String>, bool)> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(lt) = rest.find('<') {
            rest = &rest[lt + 1..];
            let mut quote = None;
            let end = rest
                .char_indices()
                .find(|&(_, c)| match quote {
                    Some(q) if c == q => {
                        quote = None;
                        false
                    }
                    Some(_) => false,
                    None if c == '"' || c == '\'' => {
                        quote = Some(c);
                        false
                    }
                    None => c == '>',
                })
                .map(|(i, _)| i)
                .expect("unterminated tag");
            let inner = &rest[..end];
            rest = &rest[end + 1..];
            if inner.starts_with(['/', '?', '!']) {
                if let Some(tag) = inner.strip_prefix('/') {
                    out.push((format!("/{}", tag.trim()), HashMap::new(), false));
                }
                continue;
            }
            let self_closing = inner.ends_with('/');
            let inner = inner.trim_end_matches('/');
            let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
            let mut attrs = HashMap::new();
            let mut a = &inner[name_end..];
            while let Some(eq) = a.find('=') {
                let key = a[..eq].trim().to_string();
                let v = a[eq + 1..].trim_start();
                let q = v.chars().next().unwrap();
                let close = v[1..].find(q).unwrap() + 1;
                attrs.insert(key, v[1..close].to_string());
                a = &v[close + 1..];
            }
            out.push((inner[..name_end].to_string(), attrs, self_closing));
        }
        out
    }

    /// Scans `files` in the order the loader read them (which decides which of
    /// two definitions of one key is the later).
    fn scan(files: &[PathBuf]) -> (Vec<XmlAvp>, HashMap<String, u32>) {
        let mut avps = Vec::new();
        let mut vendors = HashMap::new();
        for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "xml")) {
            let file = path.file_name().unwrap().to_str().unwrap().to_string();
            let text = strip_comments(&std::fs::read_to_string(path).unwrap());
            let mut current: Option<XmlAvp> = None;
            for (tag, attrs, self_closing) in tags(&text) {
                match tag.as_str() {
                    "avp" => {
                        let avp = XmlAvp {
                            file: file.clone(),
                            name: attrs["name"].clone(),
                            code: attrs["code"].parse().unwrap(),
                            vendor: attrs.get("vendor-id").cloned(),
                            type_name: None,
                            grouped: false,
                        };
                        if self_closing {
                            avps.push(avp);
                        } else {
                            current = Some(avp);
                        }
                    }
                    "type" => current.as_mut().unwrap().type_name = Some(attrs["type-name"].clone()),
                    "grouped" => current.as_mut().unwrap().grouped = true,
                    "/avp" => avps.push(current.take().unwrap()),
                    "vendor" => {
                        vendors.entry(attrs["vendor-id"].clone()).or_insert(attrs["code"].parse().unwrap());
                    }
                    _ => {}
                }
            }
        }
        (avps, vendors)
    }

    // ---------------------------------------------------------------------------
    // The system dictionary
    // ---------------------------------------------------------------------------

    #[test]
    fn system_dictionary_loads_every_file() {
        let Some(dir) = system_dir() else { return };
        assert_eq!(Dictionary::wireshark_system(), Some(dir.join("dictionary.xml").as_path()));
        let mut dict = Dictionary::new();
        let stats = dict.load_wireshark_file(dir.join("dictionary.xml")).expect("system dictionary loads");

        let entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        let read: HashSet<PathBuf> = stats.files.iter().map(|p| p.canonicalize().unwrap()).collect();
        for entry in &entries {
            let ext = entry.extension().and_then(|e| e.to_str());
            if matches!(ext, Some("xml" | "dtd")) {
                assert!(read.contains(&entry.canonicalize().unwrap()), "{} was not read", entry.display());
            }
        }
        assert_eq!(stats.files.len(), read.len(), "a file was read twice: {:?}", stats.files);
        eprintln!(
            "{SYSTEM_DIR}: {} entries, {} files read; {} AVPs, {} commands, {} applications, {} vendors, \
         {} fallback types",
            entries.len(),
            stats.files.len(),
            stats.avps,
            stats.commands,
            stats.applications,
            stats.vendors,
            stats.fallback_types
        );
        assert_eq!(stats.fallback_types, 0);
        assert!(
            stats.avps > 2000 && stats.commands > 50 && stats.applications > 100 && stats.vendors > 20,
            "{stats:?}"
        );

        // Every <avp> is findable by (code, vendor) and by name, with the type
        // its XML names (never the OctetString fallback).
        let (avps, vendors) = scan(&stats.files);
        assert_eq!(avps.len(), stats.avps);
        let vendor_of = |avp: &XmlAvp| match avp.vendor.as_deref() {
            None | Some("None") => None,
            Some(v) => Some(*vendors.get(v).unwrap_or_else(|| panic!("{}: unknown vendor {v}", avp.name))),
        };
        // A later definition of the same key wins; the earlier one's name then
        // no longer resolves.
        let mut last: HashMap<(u32, Option<u32>), usize> = HashMap::new();
        for (i, avp) in avps.iter().enumerate() {
            last.insert((avp.code, vendor_of(avp)), i);
        }
        let mut replaced = Vec::new();
        for (i, avp) in avps.iter().enumerate() {
            let key = (avp.code, vendor_of(avp));
            if last[&key] != i {
                replaced.push(format!("{} ({}) in {}", avp.name, avp.code, avp.file));
                continue;
            }
            let def = dict.avp(key.0, key.1).unwrap_or_else(|| panic!("{} {key:?} not found", avp.name));
            assert_eq!(def.name(), avp.name, "{} in {}", avp.name, avp.file);
            let expected = if avp.grouped {
                DataType::Grouped
            } else {
                match avp.type_name.as_deref().expect("every AVP has a type") {
                    "IPAddress" if avp.code < 256 => DataType::IpAddress,
                    "IPAddress" => DataType::Address,
                    t => {
                        DataType::from_name(t).unwrap_or_else(|| panic!("{}: type {t} is not a known format", avp.name))
                    }
                }
            };
            assert_eq!(def.data_type(), expected, "{} in {}", avp.name, avp.file);
            assert_eq!(dict.avp_by_name(&avp.name), Some(def), "{} by name", avp.name);
        }
        eprintln!("{} definitions replaced by a later one with the same code and vendor: {replaced:?}", replaced.len());
        assert!(replaced.len() < 10);

        // Spot checks.
        let origin_host = dict.avp(264, None).unwrap();
        assert_eq!((origin_host.name(), origin_host.data_type()), ("Origin-Host", DataType::DiameterIdentity));
        assert_eq!(origin_host.mandatory(), FlagRule::Must);
        assert_eq!(dict.avp(257, None).unwrap().data_type(), DataType::Address);
        assert_eq!(dict.avp_by_name("Framed-IP-Address").unwrap().data_type(), DataType::IpAddress);
        let rat = dict.avp(1032, Some(10415)).unwrap();
        assert_eq!((rat.name(), rat.data_type()), ("RAT-Type", DataType::Enumerated));
        assert_eq!(rat.enum_name(1004), Some("EUTRAN"));
        assert_eq!(rat.enum_name(0), Some("WLAN"));
        assert_eq!(rat.enum_value("UTRAN"), Some(1000));
        let result_code = dict.avp_by_name("Result-Code").unwrap();
        assert_eq!(result_code.code(), 268);
        assert_eq!(result_code.enum_name(2001), Some("DIAMETER_SUCCESS"));
        assert_eq!(result_code.enum_name(5012), Some("DIAMETER_UNABLE_TO_COMPLY"));
        let cc_request_type = dict.avp_by_name("CC-Request-Type").unwrap();
        assert_eq!(cc_request_type.enum_name(1), Some("INITIAL_REQUEST"));
        // Media-Type OTHER is written 4294967295; Enumerated is an Integer32 on
        // the wire, so it is named as -1 too.
        let media_type = dict.avp(520, Some(10415)).unwrap();
        assert_eq!(media_type.enum_name(4_294_967_295), Some("OTHER"));
        assert_eq!(media_type.enum_name(-1), Some("OTHER"));
        assert_eq!(dict.vendor(10415), Some("3GPP"));
        assert_eq!(dict.command(272).map(|c| c.name()), Some("Credit-Control"));
        assert_eq!(dict.command(257).map(|c| c.name()), Some("Capabilities-Exchange"));
        assert!(dict.application(16_777_251).is_some());
    }

    #[test]
    fn system_dictionary_extends_the_builtin_one() {
        let Some(dir) = system_dir() else { return };
        let mut dict = Dictionary::base().clone();
        let before = dict.avp_count();
        dict.load_wireshark_file(dir.join("dictionary.xml")).unwrap();
        assert!(dict.avp_count() > before + 2000);
        // IETF names keep pointing at the IETF AVPs.
        for name in ["Origin-Host", "Session-Id", "Result-Code", "User-Name", "Service-Selection"] {
            assert_eq!(dict.avp_by_name(name).unwrap().vendor_id(), None, "{name}");
        }
        assert!(dict.avp(1407, Some(10415)).is_some());
    }

    // ---------------------------------------------------------------------------
    // The loader, on small documents
    // ---------------------------------------------------------------------------

    const TYPES: &str = r#"<typedefn type-name="OctetString"/>
    <typedefn type-name="UTF8String" type-parent="OctetString"/>
    <typedefn type-name="Unsigned32"/>
    <typedefn type-name="Time"/>"#;

    #[test]
    fn entities_are_expanded() {
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<?type-proto key="MIPRegistrationRequest" value="mip" ?>
<!DOCTYPE dictionary SYSTEM "dictionary.dtd" [
    <!-- a comment with <angle> brackets & an ampersand -->
    <!ENTITY one SYSTEM "one.xml">
    <!ENTITY two SYSTEM 'two.xml'>
    <!ENTITY nested SYSTEM "nested.xml">
]>
<dictionary>
  <base>{TYPES}
    <avp name="Origin-Host" code="264" mandatory="must"><type type-name="DiameterIdentity"/></avp>
  </base>
  &one;
  &two;
</dictionary>"#
        );
        let one = r#"<?xml version="1.0" encoding="UTF-8"?>
<application id="4" name="Credit Control">
  <command name="Credit-Control" code="272" vendor-id="None"/>
  <avp name="CC-Request-Number" code="415" mandatory="must"><type type-name="Unsigned32"/></avp>
</application>"#;
        let two = r#"<?xml version="1.0" encoding="utf-8"?>
<vendor vendor-id="Acme" code="9999" name="Acme Corp"/>
&nested;"#;
        let nested = r#"<avp name="Acme-Thing" code="1" vendor-id="Acme"><type type-name="UTF8String"/></avp>"#;
        let (dict, stats) = load_str(&xml, &[("one.xml", one), ("two.xml", two), ("nested.xml", nested)]).unwrap();
        let files: Vec<_> = stats.files.iter().map(|p| p.to_str().unwrap()).collect();
        // dictionary.dtd is not supplied: the external subset is skipped.
        assert_eq!(files, ["<string>", "one.xml", "two.xml", "nested.xml"]);
        assert_eq!((stats.avps, stats.commands, stats.applications, stats.vendors), (3, 1, 1, 1));
        assert_eq!(dict.avp(264, None).unwrap().data_type(), DataType::DiameterIdentity);
        assert_eq!(dict.avp(415, None).unwrap().name(), "CC-Request-Number");
        assert_eq!(dict.avp(1, Some(9999)).unwrap().data_type(), DataType::Utf8String);
        assert_eq!(dict.command(272).unwrap().name(), "Credit-Control");
        assert_eq!(dict.application(4), Some("Credit Control"));
        assert_eq!(dict.vendor(9999), Some("Acme Corp"));
    }

    #[test]
    fn external_dtd_declarations_are_read() {
        let xml = r#"<!DOCTYPE dictionary SYSTEM "my.dtd"><dictionary>&acme;</dictionary>"#;
        let dtd = r#"<?xml version="1.0"?><!ELEMENT dictionary ANY><!ENTITY acme SYSTEM "acme.xml">"#;
        let acme = r#"<avp name="X" code="7"><type type-name="Unsigned32"/></avp>"#;
        let (dict, stats) = load_str(xml, &[("my.dtd", dtd), ("acme.xml", acme)]).unwrap();
        assert_eq!(stats.files, [PathBuf::from("<string>"), "my.dtd".into(), "acme.xml".into()]);
        assert_eq!(dict.avp(7, None).unwrap().name(), "X");
    }

    #[test]
    fn vendors_resolve_after_the_whole_document() {
        // The AVP uses "Late" before any file defines it; symbols ignore case,
        // "None" is no vendor, and a numeric vendor-id is taken as the code.
        let xml = r#"<!DOCTYPE dictionary [ <!ENTITY late SYSTEM "late.xml"> ]>
<dictionary>
  <application id="1">
    <avp name="Early" code="10" vendor-id="Late"><type type-name="Unsigned32"/></avp>
    <avp name="Shouty" code="11" vendor-id="LATE"><type type-name="Unsigned32"/></avp>
    <avp name="Plain" code="12" vendor-id="None"><type type-name="Unsigned32"/></avp>
    <avp name="Numeric" code="13" vendor-id="10415"><type type-name="Unsigned32"/></avp>
  </application>
  &late;
</dictionary>"#;
        let late = r#"<vendor vendor-id="Late" code="4242" name="Late Inc"/>"#;
        let (dict, _) = load_str(xml, &[("late.xml", late)]).unwrap();
        assert_eq!(dict.avp_by_name("Early").unwrap().vendor_id(), Some(4242));
        assert_eq!(dict.avp(11, Some(4242)).unwrap().name(), "Shouty");
        assert_eq!(dict.avp(12, None).unwrap().vendor_id(), None);
        assert_eq!(dict.avp(13, Some(10415)).unwrap().name(), "Numeric");
        assert_eq!(dict.application(1), None, "unnamed applications are not recorded");

        let err = load_str(r#"<avp name="A" code="1" vendor-id="Nobody"><type type-name="Unsigned32"/></avp>"#, &[])
            .unwrap_err();
        assert!(matches!(&err, DictError::UnknownVendor { vendor, line: 1, .. } if vendor == "Nobody"), "{err}");
        assert!(err.to_string().starts_with("<string>:1:"), "{err}");
    }

    #[test]
    fn types_resolve_through_typedefn_chains() {
        let xml = r#"<dictionary><base>
  <typedefn type-name="Time"/>
  <typedefn type-name="MyTime" type-parent="Time"/>
  <typedefn type-name="VeryMyTime" type-parent="MyTime"/>
  <typedefn type-name="Loop1" type-parent="Loop2"/>
  <typedefn type-name="Loop2" type-parent="Loop1"/>
  <avp name="Deep" code="1"><type type-name="VeryMyTime"/></avp>
  <avp name="Later" code="2"><type type-name="Defined-Later"/></avp>
  <avp name="Mystery" code="3"><type type-name="Mystery-Type"/></avp>
  <avp name="Cycle" code="4"><type type-name="Loop1"/></avp>
  <avp name="Lower" code="5"><type type-name="unsigned64"/></avp>
  <avp name="App" code="6"><type type-name="AppId"/></avp>
  <avp name="Grp" code="7"><grouped><gavp name="Deep"/></grouped></avp>
  <avp name="Radius-Addr" code="8"><type type-name="IPAddress"/></avp>
  <avp name="Diameter-Addr" code="300"><type type-name="IPAddress"/></avp>
  <avp name="No-Type" code="9"/>
  <typedefn type-name="Defined-Later" type-parent="DiameterURI"/>
</base></dictionary>"#;
        let (dict, stats) = load_str(xml, &[]).unwrap();
        let ty = |name: &str| dict.avp_by_name(name).unwrap().data_type();
        assert_eq!(ty("Deep"), DataType::Time);
        assert_eq!(ty("Later"), DataType::DiameterUri);
        assert_eq!(ty("Mystery"), DataType::OctetString);
        assert_eq!(ty("Cycle"), DataType::OctetString);
        assert_eq!(ty("Lower"), DataType::Unsigned64);
        assert_eq!(ty("App"), DataType::Unsigned32);
        assert_eq!(ty("Grp"), DataType::Grouped);
        assert_eq!(ty("Radius-Addr"), DataType::IpAddress);
        assert_eq!(ty("Diameter-Addr"), DataType::Address);
        assert_eq!(ty("No-Type"), DataType::OctetString);
        assert_eq!(stats.fallback_types, 3);
    }

    #[test]
    fn enum_codes_and_flags() {
        let xml = r#"<dictionary><base>
  <avp name="E" code="1" mandatory="mustnot" protected="shouldnot">
    <type type-name="Enumerated"/>
    <enum name="HEX" code="0x10"/>
    <enum name="NEG" code="-5"/>
    <enum name="BIG" code="4294967295"/>
    <enum name="MIN" code="-2147483648"/>
  </avp>
  <avp name="U" code="2" mandatory="must"><type type-name="Unsigned32"/>
    <enum name="TOP" code="0xFFFFFFFF"/>
  </avp>
  <avp name="Default-Flags" code="3"><type type-name="Unsigned32"/></avp>
  <avp name="Text" code="4" mandatory="May"><type type-name="UTF8String"/></avp>
</base></dictionary>"#;
        let (dict, _) = load_str(xml, &[]).unwrap();
        let e = dict.avp_by_name("E").unwrap();
        assert_eq!((e.mandatory(), e.protected()), (FlagRule::MustNot, FlagRule::ShouldNot));
        assert_eq!(e.enum_name(16), Some("HEX"));
        assert_eq!(e.enum_name(-5), Some("NEG"));
        assert_eq!(e.enum_name(4_294_967_295), Some("BIG"));
        assert_eq!(e.enum_name(-1), Some("BIG"));
        assert_eq!(e.enum_name(i64::from(i32::MIN)), Some("MIN"));
        let u = dict.avp_by_name("U").unwrap();
        assert_eq!(u.mandatory(), FlagRule::Must);
        assert_eq!(u.enum_name(0xFFFF_FFFF), Some("TOP"));
        assert_eq!(u.enum_name(-1), None, "Unsigned32 values are not folded");
        let d = dict.avp_by_name("Default-Flags").unwrap();
        assert_eq!((d.mandatory(), d.protected()), (FlagRule::May, FlagRule::May));
        assert_eq!(dict.avp_by_name("Text").unwrap().mandatory(), FlagRule::May);

        let err =
            load_str(r#"<avp name="X" code="1"><type type-name="Enumerated"/><enum name="A" code="1.5"/></avp>"#, &[])
                .unwrap_err();
        assert!(
            matches!(&err, DictError::BadAttribute { element, attribute, value, .. }
            if element == "enum" && attribute == "code" && value == "1.5"),
            "{err}"
        );
        let err =
            load_str(r#"<avp name="X" code="99999999999"><type type-name="Unsigned32"/></avp>"#, &[]).unwrap_err();
        assert!(matches!(&err, DictError::BadAttribute { attribute, .. } if attribute == "code"), "{err}");
        let err = load_str(r#"<avp name="X" code="1" mandatory="always"/>"#, &[]).unwrap_err();
        assert!(matches!(&err, DictError::BadAttribute { attribute, .. } if attribute == "mandatory"), "{err}");
        let err = load_str(r#"<avp code="1"/>"#, &[]).unwrap_err();
        assert!(matches!(&err, DictError::MissingAttribute { attribute, .. } if attribute == "name"), "{err}");
    }

    #[test]
    fn attribute_values_are_unescaped() {
        let xml = r#"<!DOCTYPE dictionary [ <!ENTITY corp "Acme &amp; Sons"> ]>
<dictionary>
  <vendor vendor-id="A&amp;B" code="77" name="&corp;"/>
  <application id="5" name="Ask &lt;&quot;Q&quot;&gt; &#x41;&#66;"/>
  <avp name="Tom&apos;s" code="1" vendor-id="A&amp;B"><type type-name="Unsigned32"/></avp>
</dictionary>"#;
        let (dict, _) = load_str(xml, &[]).unwrap();
        assert_eq!(dict.application(5), Some(r#"Ask <"Q"> AB"#));
        assert_eq!(dict.avp(1, Some(77)).unwrap().name(), "Tom's");
        assert_eq!(dict.vendor(77), Some("Acme &amp; Sons"), "internal entity text is inserted as declared");
    }

    #[test]
    fn malformed_xml_names_file_and_position() {
        let err = load_str("<dictionary>\n  <base>\n    <avp name=\"X\" code=\"1\">\n  </base>\n</dictionary>", &[])
            .unwrap_err();
        match &err {
            DictError::Xml { file, line, column, message } => {
                assert_eq!(file, Path::new("<string>"));
                assert_eq!((*line, *column), (4, 3), "{message}");
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().starts_with("<string>:4:3: "), "{err}");

        // In an entity file, the error names that file and its own line.
        let xml = r#"<!DOCTYPE d [ <!ENTITY bad SYSTEM "bad.xml"> ]><dictionary>&bad;</dictionary>"#;
        let bad = "<?xml version=\"1.0\"?>\n<vendor vendor-id=\"V\" code=\"1\"/>\n<avp name=\"A\" code=\"2\" =oops/>";
        let err = load_str(xml, &[("bad.xml", bad)]).unwrap_err();
        assert!(matches!(&err, DictError::Xml { file, line: 3, .. } if file == Path::new("bad.xml")), "{err:?}");
        assert!(err.to_string().starts_with("bad.xml:3:"), "{err}");

        // <avp> elements do not nest.
        let err =
            load_str("<dictionary>\n<avp name=\"A\" code=\"1\">\n<avp name=\"B\" code=\"2\"/></avp></dictionary>", &[])
                .unwrap_err();
        assert!(matches!(&err, DictError::Xml { line: 3, .. }), "{err:?}");

        // An element left open at the end of an entity file.
        let err = load_str(xml, &[("bad.xml", "<application id=\"1\">\n")]).unwrap_err();
        assert!(
            matches!(&err, DictError::Xml { file, message, .. }
        if file == Path::new("bad.xml") && message.contains("<application>")),
            "{err:?}"
        );
    }

    #[test]
    fn entity_errors() {
        // Declared, but its file is missing.
        let xml = "<!DOCTYPE d [ <!ENTITY gone SYSTEM \"gone.xml\"> ]>\n<dictionary>\n  &gone;\n</dictionary>";
        let err = load_str(xml, &[]).unwrap_err();
        assert!(
            matches!(&err, DictError::MissingEntity { file, line: 3, name, path, .. }
            if file == Path::new("<string>") && name == "gone" && path == Path::new("gone.xml")),
            "{err:?}"
        );
        assert!(err.to_string().contains("gone.xml"), "{err}");

        // Never declared.
        let err = load_str("<dictionary>&nope;</dictionary>", &[]).unwrap_err();
        assert!(matches!(&err, DictError::UndeclaredEntity { name, .. } if name == "nope"), "{err:?}");

        // Refers to itself.
        let xml = r#"<!DOCTYPE d [ <!ENTITY loop SYSTEM "loop.xml"> ]><dictionary>&loop;</dictionary>"#;
        let err = load_str(xml, &[("loop.xml", "<base/>&loop;")]).unwrap_err();
        assert!(
            matches!(&err, DictError::EntityDepth { file, name, .. } if file == Path::new("loop.xml") && name == "loop"),
            "{err:?}"
        );

        // Standard entities and character references in content are harmless.
        let (dict, _) = load_str("<dictionary>&amp;&#65;<base/></dictionary>", &[]).unwrap();
        assert_eq!(dict.avp_count(), 0);
    }

    #[test]
    fn failed_load_leaves_the_dictionary_unchanged() {
        let mut dict = Dictionary::base().clone();
        let before = dict.avp_count();
        let xml = r#"<dictionary><base>
  <avp name="Origin-Host" code="264"><type type-name="OctetString"/></avp>
  <avp name="Broken" code="x"/>
</base></dictionary>"#;
        assert!(dict.load_wireshark_str(xml, &mut |_| Err(io::ErrorKind::NotFound.into())).is_err());
        assert_eq!(dict.avp_count(), before);
        assert_eq!(dict.avp(264, None).unwrap().data_type(), DataType::DiameterIdentity);
    }

    #[test]
    fn files_resolve_relative_to_the_main_document() {
        let dir = std::env::temp_dir().join(format!("diam-proto-dict-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(
            dir.join("sub/main.xml"),
            "<!DOCTYPE dictionary SYSTEM \"main.dtd\" [ <!ENTITY v SYSTEM \"v.xml\"> ]>\n<dictionary>&v;</dictionary>",
        )
        .unwrap();
        std::fs::write(dir.join("sub/main.dtd"), "<!ELEMENT dictionary ANY>").unwrap();
        std::fs::write(
        dir.join("sub/v.xml"),
        "<?xml version=\"1.0\"?>\n<vendor vendor-id=\"V\" code=\"5\" name=\"V\">\n  <avp name=\"V-1\" code=\"1\" vendor-id=\"V\"><type type-name=\"Unsigned32\"/></avp>\n</vendor>",
    )
    .unwrap();
        let mut dict = Dictionary::new();
        let stats = dict.load_wireshark_file(dir.join("sub/main.xml")).unwrap();
        assert_eq!(stats.files, [dir.join("sub/main.xml"), dir.join("sub/main.dtd"), dir.join("sub/v.xml")]);
        assert_eq!(dict.avp(1, Some(5)).unwrap().name(), "V-1");

        std::fs::remove_file(dir.join("sub/v.xml")).unwrap();
        let err = Dictionary::new().load_wireshark_file(dir.join("sub/main.xml")).unwrap_err();
        assert!(matches!(&err, DictError::MissingEntity { path, .. } if *path == dir.join("sub/v.xml")), "{err:?}");
        assert!(err.to_string().contains("v.xml"), "{err}");

        let err = Dictionary::new().load_wireshark_file(dir.join("nothing.xml")).unwrap_err();
        assert!(matches!(&err, DictError::Io { path, .. } if *path == dir.join("nothing.xml")), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_are_send_sync_errors() {
        fn check<T: std::error::Error + Send + Sync + 'static>() {}
        check::<DictError>();
    }
}

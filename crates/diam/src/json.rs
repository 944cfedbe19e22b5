//! The JSON form of a message used by `diam decode` / `diam encode`.
//!
//! Rendering is driven by the dictionary: each AVP's value is shown in its
//! data format (numbers, strings, addresses, times, nested arrays for
//! Grouped). Parsing is the exact inverse, so `encode(decode(x)) == x` for
//! every well-formed message. Where a value has no lossless JSON number
//! (non-finite floats) it is written as the raw bits in hex (`"0x7fc00000"`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::BytesMut;
use diam_proto::types::{self, AddressValue, DataType, TimeValue};
use diam_proto::{
    Avp, AvpDef, AvpFlags, AvpIter, CommandFlags, DecodeError, Dictionary, GroupBuilder, Message, MessageBuilder,
    MAX_GROUP_DEPTH,
};
use serde_json::{json, Map, Value};

/// Renders a decoded message. Fails on the first AVP whose payload does not
/// match its dictionary type.
pub(crate) fn message_to_json(msg: &Message, dict: &Dictionary) -> Result<Value, DecodeError> {
    let h = msg.header();
    let mut flags = json!({
        "request": h.flags.is_request(),
        "proxiable": h.flags.is_proxiable(),
        "error": h.flags.is_error(),
        "retransmit": h.flags.is_retransmit(),
    });
    if h.flags.reserved() != 0 {
        flags["reserved"] = json!(h.flags.reserved());
    }
    let command_name = dict.command(h.command_code).map(|c| c.full_name(h.flags.is_request()));
    Ok(json!({
        "version": 1,
        "length": h.length,
        "flags": flags,
        "command_code": h.command_code,
        "command_name": command_name,
        "application_id": h.application_id,
        "hop_by_hop": h.hop_by_hop,
        "end_to_end": h.end_to_end,
        "avps": avps_to_json(msg.avps(), dict, 0)?,
    }))
}

fn avps_to_json(avps: AvpIter<'_>, dict: &Dictionary, depth: usize) -> Result<Value, DecodeError> {
    let mut out = Vec::new();
    for avp in avps {
        out.push(avp_to_json(&avp?, dict, depth)?);
    }
    Ok(Value::Array(out))
}

fn hex(data: &[u8]) -> String {
    crate::hex::encode(data)
}

fn avp_to_json(avp: &Avp<'_>, dict: &Dictionary, depth: usize) -> Result<Value, DecodeError> {
    let def = dict.avp(avp.code(), avp.vendor_id());
    let f = avp.flags();
    let mut flags = json!({"vendor": f.is_vendor(), "mandatory": f.is_mandatory(), "protected": f.is_protected()});
    if f.reserved() != 0 {
        flags["reserved"] = json!(f.reserved());
    }
    let mut obj = Map::new();
    obj.insert("code".into(), json!(avp.code()));
    obj.insert("vendor_id".into(), json!(avp.vendor_id()));
    obj.insert("flags".into(), flags);
    obj.insert("name".into(), json!(def.map(AvpDef::name)));
    let Some(def) = def else {
        obj.insert("type".into(), json!("Unknown"));
        obj.insert("value".into(), json!(hex(avp.data())));
        return Ok(Value::Object(obj));
    };
    let ty = def.data_type();
    obj.insert("type".into(), json!(ty.name()));
    let mut enum_name = None;
    let value = match ty {
        DataType::Grouped => {
            if depth >= MAX_GROUP_DEPTH {
                return Err(DecodeError::GroupTooDeep { offset: avp.offset(), code: avp.code(), max: MAX_GROUP_DEPTH });
            }
            avps_to_json(avp.group(), dict, depth + 1)?
        }
        DataType::OctetString => json!(hex(avp.data())),
        DataType::Integer32 => json!(avp.value::<types::Integer32>()?),
        DataType::Enumerated => {
            let v = avp.value::<types::Enumerated>()?;
            enum_name = def.enum_name(i64::from(v));
            json!(v)
        }
        DataType::Integer64 => json!(avp.value::<types::Integer64>()?),
        DataType::Unsigned32 => {
            let v = avp.value::<types::Unsigned32>()?;
            enum_name = def.enum_name(i64::from(v));
            json!(v)
        }
        DataType::Unsigned64 => json!(avp.value::<types::Unsigned64>()?),
        DataType::Float32 => {
            let v = avp.value::<types::Float32>()?;
            float_json(f64::from(v), avp.data())
        }
        DataType::Float64 => float_json(avp.value::<types::Float64>()?, avp.data()),
        DataType::Address => json!(avp.value::<types::Address>()?.to_string()),
        DataType::IpAddress => json!(avp.value::<types::IpAddress>()?.to_string()),
        DataType::Time => json!(avp.value::<types::Time>()?.to_string()),
        // Every text format is UTF-8; check it once with the precise type name.
        _ => {
            ty.check(avp)?;
            json!(std::str::from_utf8(avp.data()).unwrap_or_default())
        }
    };
    obj.insert("value".into(), value);
    if let Some(name) = enum_name {
        obj.insert("enum".into(), json!(name));
    }
    Ok(Value::Object(obj))
}

fn float_json(v: f64, raw: &[u8]) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        json!(format!("0x{}", hex(raw)))
    }
}

/// An error in the JSON given to `diam encode`, with the path of the field.
#[derive(Debug)]
pub(crate) struct JsonError {
    pub(crate) path: String,
    pub(crate) message: String,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn err<T>(path: &str, message: impl Into<String>) -> Result<T, JsonError> {
    Err(JsonError { path: path.to_string(), message: message.into() })
}

fn get_u32(obj: &Map<String, Value>, key: &str, path: &str, default: Option<u32>) -> Result<u32, JsonError> {
    match obj.get(key) {
        None | Some(Value::Null) => match default {
            Some(d) => Ok(d),
            None => err(path, format!("missing field \"{key}\"")),
        },
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Ok(n),
            None => err(&format!("{path}.{key}"), format!("expected an unsigned 32-bit number, found {v}")),
        },
    }
}

fn get_bool(obj: &Map<String, Value>, key: &str, path: &str) -> Result<bool, JsonError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => err(&format!("{path}.{key}"), format!("expected true or false, found {v}")),
    }
}

/// Parses one message object (the `diam decode` form) and encodes it.
pub(crate) fn json_to_message(v: &Value, dict: &Dictionary) -> Result<Message, JsonError> {
    let Some(obj) = v.as_object() else { return err("$", "expected a JSON object") };
    if let Some(ver) = obj.get("version") {
        if ver.as_u64() != Some(1) {
            return err("$.version", format!("only Diameter version 1 exists, found {ver}"));
        }
    }
    let command_code = match (obj.get("command_code"), obj.get("command_name").and_then(Value::as_str)) {
        (Some(c), _) if !c.is_null() => get_u32(obj, "command_code", "$", None)?,
        (_, Some(name)) => {
            let base = name.trim_end_matches("-Request").trim_end_matches("-Answer");
            match dict.command_by_name(base) {
                Some(c) => c.code(),
                None => return err("$.command_name", format!("unknown command {name:?}")),
            }
        }
        _ => return err("$", "missing field \"command_code\""),
    };
    if command_code > 0x00ff_ffff {
        return err("$.command_code", format!("{command_code} does not fit in 24 bits"));
    }
    let mut bits = 0u8;
    if let Some(f) = obj.get("flags") {
        let Some(f) = f.as_object() else { return err("$.flags", "expected an object") };
        for (key, bit) in [
            ("request", CommandFlags::REQUEST),
            ("proxiable", CommandFlags::PROXIABLE),
            ("error", CommandFlags::ERROR),
            ("retransmit", CommandFlags::RETRANSMIT),
        ] {
            if get_bool(f, key, "$.flags")? {
                bits |= bit;
            }
        }
        let reserved = get_u32(f, "reserved", "$.flags", Some(0))?;
        if reserved > 0x0f {
            return err("$.flags.reserved", "reserved command flags are the low 4 bits (0-15)");
        }
        bits |= reserved as u8;
    }
    let application_id = get_u32(obj, "application_id", "$", Some(0))?;
    let mut b = MessageBuilder::new_in(BytesMut::new(), CommandFlags::from_bits(bits), command_code, application_id)
        .hop_by_hop(get_u32(obj, "hop_by_hop", "$", Some(0))?)
        .end_to_end(get_u32(obj, "end_to_end", "$", Some(0))?);
    let avps = match obj.get("avps") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => return err("$.avps", "expected an array"),
    };
    let mut result = Ok(());
    b = b.with_avps(|w| result = write_avps(w, avps, dict, "$.avps", 0));
    result?;
    let len = b.len();
    if len > diam_proto::MAX_LENGTH_FIELD {
        return err("$", format!("encoded message would be {len} bytes, above the 24-bit length limit"));
    }
    Ok(b.build())
}

/// Writes the AVP objects in `avps`; `list_path` names the array for errors.
fn write_avps(
    g: &mut GroupBuilder<'_>,
    avps: &[Value],
    dict: &Dictionary,
    list_path: &str,
    depth: usize,
) -> Result<(), JsonError> {
    if depth > MAX_GROUP_DEPTH {
        return err(list_path, format!("Grouped AVPs nested deeper than {MAX_GROUP_DEPTH} levels"));
    }
    for (i, avp) in avps.iter().enumerate() {
        let path = format!("{list_path}[{i}]");
        let spec = avp_spec(avp, dict, &path)?;
        if spec.data_type == Some(DataType::Grouped) {
            if let Value::Array(grand) = spec.value {
                let mut result = Ok(());
                g.raw_group(spec.code, spec.flags, spec.vendor_id, |g| {
                    result = write_avps(g, grand, dict, &format!("{path}.value"), depth + 1);
                });
                result?;
                continue;
            }
        }
        let data = value_bytes(&spec, &path)?;
        g.raw_avp(spec.code, spec.flags, spec.vendor_id, &data);
    }
    Ok(())
}

struct AvpSpec<'v, 'd> {
    code: u32,
    vendor_id: Option<u32>,
    flags: AvpFlags,
    /// `None` for `"type": "Unknown"` (raw hex).
    data_type: Option<DataType>,
    def: Option<&'d AvpDef>,
    value: &'v Value,
}

fn avp_spec<'v, 'd>(v: &'v Value, dict: &'d Dictionary, path: &str) -> Result<AvpSpec<'v, 'd>, JsonError> {
    let Some(obj) = v.as_object() else { return err(path, "expected an AVP object") };
    let by_name = match obj.get("name").and_then(Value::as_str) {
        Some(name) if obj.get("code").is_none_or(Value::is_null) => match dict.avp_by_name(name) {
            Some(d) => Some(d),
            None => return err(&format!("{path}.name"), format!("unknown AVP name {name:?} (give \"code\")")),
        },
        _ => None,
    };
    let code = match by_name {
        Some(d) => d.code(),
        None => get_u32(obj, "code", path, None)?,
    };
    let vendor_id = match obj.get("vendor_id") {
        None => by_name.and_then(AvpDef::vendor_id),
        Some(Value::Null) => None,
        Some(_) => Some(get_u32(obj, "vendor_id", path, None)?),
    };
    let def = dict.avp(code, vendor_id);
    let flags = match obj.get("flags") {
        Some(Value::Object(f)) => {
            let fp = format!("{path}.flags");
            let vendor = get_bool(f, "vendor", &fp)?;
            if vendor != vendor_id.is_some() {
                return err(&fp, "\"vendor\" must be true exactly when \"vendor_id\" is set");
            }
            let reserved = get_u32(f, "reserved", &fp, Some(0))?;
            if reserved > 0x1f {
                return err(&format!("{fp}.reserved"), "reserved AVP flags are the low 5 bits (0-31)");
            }
            AvpFlags::from_bits(reserved as u8)
                .with(AvpFlags::VENDOR, vendor)
                .with(AvpFlags::MANDATORY, get_bool(f, "mandatory", &fp)?)
                .with(AvpFlags::PROTECTED, get_bool(f, "protected", &fp)?)
        }
        None | Some(Value::Null) => {
            let m = def.is_some_and(|d| d.mandatory() == diam_proto::dict::FlagRule::Must);
            AvpFlags::default().with(AvpFlags::MANDATORY, m).with(AvpFlags::VENDOR, vendor_id.is_some())
        }
        Some(_) => return err(&format!("{path}.flags"), "expected an object"),
    };
    let data_type = match obj.get("type").and_then(Value::as_str) {
        Some("Unknown") => None,
        Some(t) => match DataType::from_name(t) {
            Some(t) => Some(t),
            None => return err(&format!("{path}.type"), format!("unknown data type {t:?}")),
        },
        None => def.map(AvpDef::data_type),
    };
    let Some(value) = obj.get("value") else { return err(path, "missing field \"value\"") };
    Ok(AvpSpec { code, vendor_id, flags, data_type, def, value })
}

/// Converts a JSON value to an AVP payload of the spec's type.
fn value_bytes(spec: &AvpSpec<'_, '_>, path: &str) -> Result<Vec<u8>, JsonError> {
    let vp = format!("{path}.value");
    let v = spec.value;
    let ty = spec.data_type.unwrap_or(DataType::OctetString);
    let str_or = |what: &str| -> Result<&str, JsonError> {
        v.as_str().ok_or_else(|| JsonError { path: vp.clone(), message: format!("expected {what}, found {v}") })
    };
    let enum_or_num = |min: i64, max: i64| -> Result<i64, JsonError> {
        let n = match v {
            Value::String(s) => match spec.def.and_then(|d| d.enum_value(s)).or_else(|| s.parse().ok()) {
                Some(n) => n,
                None => return err(&vp, format!("{s:?} is not a known value name for this AVP")),
            },
            _ => match v.as_i64() {
                Some(n) => n,
                None => return err(&vp, format!("expected an integer, found {v}")),
            },
        };
        if n < min || n > max {
            return err(&vp, format!("{n} is out of range for {}", ty.name()));
        }
        Ok(n)
    };
    Ok(match ty {
        DataType::OctetString => match crate::hex::decode(str_or("a hex string")?) {
            Ok(b) => b,
            Err(e) => return err(&vp, e.to_string()),
        },
        DataType::Integer32 | DataType::Enumerated => {
            (enum_or_num(i64::from(i32::MIN), i64::from(i32::MAX))? as i32).to_be_bytes().to_vec()
        }
        DataType::Unsigned32 => (enum_or_num(0, i64::from(u32::MAX))? as u32).to_be_bytes().to_vec(),
        DataType::Integer64 => match v.as_i64() {
            Some(n) => n.to_be_bytes().to_vec(),
            None => return err(&vp, format!("expected a signed 64-bit integer, found {v}")),
        },
        DataType::Unsigned64 => match v.as_u64() {
            Some(n) => n.to_be_bytes().to_vec(),
            None => return err(&vp, format!("expected an unsigned 64-bit integer, found {v}")),
        },
        DataType::Float32 => match float_bits(v, 4, &vp)? {
            Raw(b) => b,
            Num(f) => (f as f32).to_be_bytes().to_vec(),
        },
        DataType::Float64 => match float_bits(v, 8, &vp)? {
            Raw(b) => b,
            Num(f) => f.to_be_bytes().to_vec(),
        },
        DataType::Grouped => match v {
            Value::String(s) => match crate::hex::decode(s) {
                Ok(b) => b,
                Err(e) => return err(&vp, e.to_string()),
            },
            _ => return err(&vp, format!("expected an array of AVPs, found {v}")),
        },
        DataType::Address => parse_address(str_or("an address string")?, &vp)?,
        DataType::IpAddress => match str_or("an IP address string")?.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => a.octets().to_vec(),
            Ok(IpAddr::V6(a)) => a.octets().to_vec(),
            Err(_) => return err(&vp, format!("{v} is not an IPv4 or IPv6 address")),
        },
        DataType::Time => match v {
            Value::String(s) => match TimeValue::parse_rfc3339(s) {
                Some(t) => t.0.to_be_bytes().to_vec(),
                None => return err(&vp, format!("{s:?} is not a time between 1968-01-20T03:14:08Z and 2104-02-26T09:42:23Z in the form YYYY-MM-DDTHH:MM:SSZ")),
            },
            _ => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => n.to_be_bytes().to_vec(),
                None => return err(&vp, format!("expected a time string or NTP seconds, found {v}")),
            },
        },
        _ => str_or("a string")?.as_bytes().to_vec(),
    })
}

enum FloatIn {
    Num(f64),
    Raw(Vec<u8>),
}
use FloatIn::{Num, Raw};

fn float_bits(v: &Value, width: usize, vp: &str) -> Result<FloatIn, JsonError> {
    if let Some(f) = v.as_f64() {
        return Ok(Num(f));
    }
    if let Some(s) = v.as_str() {
        match s {
            "NaN" => return Ok(Num(f64::NAN)),
            "inf" | "Infinity" => return Ok(Num(f64::INFINITY)),
            "-inf" | "-Infinity" => return Ok(Num(f64::NEG_INFINITY)),
            _ => {}
        }
        if let Some(h) = s.strip_prefix("0x") {
            if let Ok(b) = crate::hex::decode(h) {
                if b.len() == width {
                    return Ok(Raw(b));
                }
            }
        }
    }
    err(vp, format!("expected a number, \"NaN\", \"inf\", \"-inf\" or 0x followed by {width} hex bytes, found {v}"))
}

fn parse_address(s: &str, vp: &str) -> Result<Vec<u8>, JsonError> {
    let mut out = BytesMut::new();
    if let Ok(a) = s.parse::<Ipv4Addr>() {
        types::EncodeAs::<types::Address>::encode(&a, &mut out);
    } else if let Ok(a) = s.parse::<Ipv6Addr>() {
        types::EncodeAs::<types::Address>::encode(&a, &mut out);
    } else if let Some((fam, hexpart)) = s.split_once(':') {
        match (fam.parse::<u16>(), crate::hex::decode(hexpart)) {
            (Ok(family), Ok(bytes)) => {
                types::EncodeAs::<types::Address>::encode(&AddressValue::Other { family, bytes: &bytes }, &mut out)
            }
            _ => return err(vp, format!("{s:?} is not an IPv4/IPv6 address or FAMILY:HEX")),
        }
    } else {
        return err(vp, format!("{s:?} is not an IPv4/IPv6 address or FAMILY:HEX"));
    }
    Ok(out.to_vec())
}

/// One `--avp NAME=VALUE` option of `diam send`, as wire fields.
#[derive(Debug)]
pub(crate) struct CliAvp {
    pub(crate) code: u32,
    pub(crate) vendor_id: Option<u32>,
    pub(crate) flags: AvpFlags,
    pub(crate) data: Vec<u8>,
    /// Set for Grouped values given as a JSON array of AVP objects.
    pub(crate) children: Option<Vec<Value>>,
}

/// Parses `NAME=VALUE`: NAME is a dictionary name, `CODE` or
/// `CODE:VENDOR`; VALUE is typed by the dictionary (numbers, enumerated
/// names, addresses, times, text), hex for unknown AVPs, and a JSON array of
/// AVP objects for Grouped AVPs.
pub(crate) fn cli_avp(arg: &str, dict: &Dictionary) -> Result<CliAvp, JsonError> {
    let path = format!("--avp {arg}");
    let Some((name, raw)) = arg.split_once('=') else { return err(&path, "expected NAME=VALUE") };
    let numeric = |s: &str| s.parse::<u32>().ok();
    let (code, vendor_id) = if let Some(d) = dict.avp_by_name(name) {
        (d.code(), d.vendor_id())
    } else if let Some((c, v)) = name.split_once(':') {
        match (numeric(c), numeric(v)) {
            (Some(c), Some(v)) => (c, Some(v).filter(|&v| v != 0)),
            _ => return err(&path, format!("{name:?} is not an AVP name, CODE or CODE:VENDOR")),
        }
    } else {
        match numeric(name) {
            Some(c) => (c, None),
            None => return err(&path, format!("unknown AVP name {name:?} (give CODE or CODE:VENDOR)")),
        }
    };
    let def = dict.avp(code, vendor_id);
    let data_type = def.map(AvpDef::data_type);
    let value = match data_type {
        Some(DataType::Grouped) => match serde_json::from_str::<Value>(raw) {
            Ok(v @ Value::Array(_)) => v,
            _ => return err(&path, "a Grouped AVP takes a JSON array of AVP objects, e.g. [{\"name\":\"Subscription-Id-Type\",\"value\":0}]"),
        },
        Some(
            DataType::Integer32
            | DataType::Integer64
            | DataType::Unsigned32
            | DataType::Unsigned64
            | DataType::Enumerated
            | DataType::Float32
            | DataType::Float64,
        ) => serde_json::from_str::<Value>(raw).ok().filter(Value::is_number).unwrap_or_else(|| json!(raw)),
        _ => json!(raw),
    };
    let m = def.is_some_and(|d| d.mandatory() == diam_proto::dict::FlagRule::Must);
    let flags = AvpFlags::default().with(AvpFlags::MANDATORY, m).with(AvpFlags::VENDOR, vendor_id.is_some());
    let spec = AvpSpec { code, vendor_id, flags, data_type, def, value: &value };
    if let (Some(DataType::Grouped), Value::Array(children)) = (data_type, &value) {
        return Ok(CliAvp { code, vendor_id, flags, data: Vec::new(), children: Some(children.clone()) });
    }
    let data = value_bytes(&spec, &path)?;
    Ok(CliAvp { code, vendor_id, flags, data, children: None })
}

/// Appends a parsed `--avp` to a message being built.
pub(crate) fn write_cli_avp(b: MessageBuilder, avp: &CliAvp, dict: &Dictionary) -> Result<MessageBuilder, JsonError> {
    match &avp.children {
        None => Ok(b.raw_avp(avp.code, avp.flags, avp.vendor_id, &avp.data)),
        Some(children) => {
            let mut result = Ok(());
            let b = b.raw_group(avp.code, avp.flags, avp.vendor_id, |g| {
                result = write_avps(g, children, dict, "--avp value", 1);
            });
            result.map(|()| b)
        }
    }
}

//! `diam decode` and `diam encode`.

use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use bytes::Bytes;
use diam_proto::{check_frame, DecodeError, Dictionary, FrameStatus, Message, MAX_LENGTH_FIELD};

use crate::{DecodeArgs, DictArgs, EncodeArgs, Failure};

/// Builds the dictionary: the built-in one plus what the options add.
pub(crate) fn load_dictionary(args: &DictArgs) -> Result<Dictionary, Failure> {
    let mut dict = Dictionary::base().clone();
    if args.wireshark {
        match Dictionary::wireshark_system() {
            Some(path) => {
                dict.load_wireshark_file(path)
                    .map_err(|e| Failure::input(format!("loading {}: {e}", path.display())))?;
            }
            None => {
                eprintln!("diam: warning: --wireshark: no Wireshark dictionary installed (package libwireshark-data)")
            }
        }
    }
    for path in &args.dict {
        dict.load_wireshark_file(path).map_err(|e| Failure::input(format!("loading {}: {e}", path.display())))?;
    }
    Ok(dict)
}

fn read_input(path: Option<&Path>) -> Result<Vec<u8>, Failure> {
    let mut buf = Vec::new();
    match path {
        None => io::stdin().read_to_end(&mut buf).map(drop),
        Some(p) if p == Path::new("-") => io::stdin().read_to_end(&mut buf).map(drop),
        Some(p) => std::fs::File::open(p).and_then(|mut f| f.read_to_end(&mut buf)).map(drop),
    }
    .map_err(|e| {
        Failure::input(format!("reading {}: {e}", path.map_or("stdin".into(), |p| p.display().to_string())))
    })?;
    Ok(buf)
}

fn write_failed(e: io::Error) -> Failure {
    Failure::failed(format!("writing output: {e}"))
}

/// Splits `input` into messages and validates each against `dict`.
///
/// Errors carry offsets from the start of `input`.
pub(crate) fn split_messages(input: Bytes) -> impl Iterator<Item = Result<(usize, Message), DecodeError>> {
    let mut pos = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || pos >= input.len() {
            return None;
        }
        let rest = &input[pos..];
        let step = match check_frame(rest, MAX_LENGTH_FIELD) {
            Ok(FrameStatus::Complete { len }) => {
                Message::decode(input.slice(pos..pos + len)).map(|m| (pos, m)).map_err(|e| e.shifted(pos))
            }
            Ok(FrameStatus::Incomplete { need }) => Err(DecodeError::Truncated {
                offset: pos,
                length: if rest.len() >= 4 {
                    u32::from_be_bytes([0, rest[1], rest[2], rest[3]])
                } else {
                    (rest.len() + need) as u32
                },
                available: rest.len(),
            }),
            Err(e) => Err(e.shifted(pos)),
        };
        match &step {
            Ok((_, m)) => pos += m.len(),
            Err(_) => failed = true,
        }
        Some(step)
    })
}

pub(crate) fn decode(args: &DecodeArgs) -> Result<(), Failure> {
    let dict = load_dictionary(&args.dict)?;
    let raw = read_input(args.input.as_deref())?;
    let bytes = if args.hex {
        let text = std::str::from_utf8(&raw).map_err(|e| {
            Failure::input(format!("hex input is not text: invalid byte at input byte {}", e.valid_up_to()))
        })?;
        crate::hex::decode(text).map_err(|e| Failure::input(format!("hex input: {e}")))?
    } else {
        raw
    };
    if bytes.is_empty() {
        return Err(Failure::input("input holds no Diameter message"));
    }
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (index, item) in split_messages(Bytes::from(bytes)).enumerate() {
        let (start, msg) = item.map_err(|e| malformed(index, &e))?;
        let value = crate::json::message_to_json(&msg, &dict).map_err(|e| malformed(index, &e.shifted(start)))?;
        serde_json::to_writer(&mut out, &value).map_err(|e| write_failed(e.into()))?;
        out.write_all(b"\n").map_err(write_failed)?;
    }
    out.flush().map_err(write_failed)
}

fn malformed(index: usize, e: &DecodeError) -> Failure {
    // The error text starts with "byte N:", the offset from the input start.
    Failure::input(format!("malformed message #{}: {e}", index + 1))
}

pub(crate) fn encode(args: &EncodeArgs) -> Result<(), Failure> {
    let dict = load_dictionary(&args.dict)?;
    let raw = read_input(args.input.as_deref())?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut count = 0;
    for (index, value) in serde_json::Deserializer::from_slice(&raw).into_iter::<serde_json::Value>().enumerate() {
        let value = value.map_err(|e| {
            Failure::input(format!(
                "message #{}: invalid JSON at line {} column {}: {e}",
                index + 1,
                e.line(),
                e.column()
            ))
        })?;
        let msg = crate::json::json_to_message(&value, &dict)
            .map_err(|e| Failure::input(format!("message #{}: {e}", index + 1)))?;
        if args.hex {
            out.write_all(crate::hex::encode(msg.as_bytes()).as_bytes()).map_err(write_failed)?;
            out.write_all(b"\n").map_err(write_failed)?;
        } else {
            out.write_all(msg.as_bytes()).map_err(write_failed)?;
        }
        count += 1;
    }
    if count == 0 {
        return Err(Failure::input("input holds no JSON message"));
    }
    out.flush().map_err(write_failed)
}

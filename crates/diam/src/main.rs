//! `diam`: the command-line face of the diam Diameter stack.
//!
//! Machine output goes to stdout (JSON), diagnostics to stderr. Exit codes:
//! 0 success, 1 the operation failed or the peer answered with an error,
//! 2 bad input or usage (clap's own usage errors also exit 2).
//!
//! Dependencies: `clap` for argument parsing, `serde_json` for the JSON
//! forms.

mod codec_cmd;
mod hex;
mod json;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Diameter (RFC 6733) toolkit: decode and encode messages.
#[derive(Debug, Parser)]
#[command(name = "diam", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode Diameter messages into JSON, one object per line.
    ///
    /// Reads one or more concatenated messages (raw bytes, or hex text with
    /// --hex) from FILE or stdin. Malformed input exits with code 2 and a
    /// message naming the byte offset.
    Decode(DecodeArgs),
    /// Encode JSON messages (the `diam decode` form, one per line) into bytes.
    ///
    /// Writes raw bytes to stdout, or one hex line per message with --hex.
    /// Fields may be left out: `length` is computed, AVP `flags`, `type` and
    /// `vendor_id` default from the dictionary, and an AVP may be given by
    /// `name` instead of `code`.
    Encode(EncodeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DictArgs {
    /// Load an extra dictionary in Wireshark's XML format (repeatable).
    #[arg(long = "dict", value_name = "FILE")]
    pub(crate) dict: Vec<PathBuf>,
    /// Also load Wireshark's system dictionary
    /// (/usr/share/wireshark/diameter/dictionary.xml) when it is installed.
    #[arg(long)]
    pub(crate) wireshark: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DecodeArgs {
    /// Input is hex text (whitespace ignored) instead of raw bytes.
    #[arg(long)]
    pub(crate) hex: bool,
    /// Input file; `-` or nothing reads stdin.
    #[arg(value_name = "FILE")]
    pub(crate) input: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) dict: DictArgs,
}

#[derive(Debug, Args)]
pub(crate) struct EncodeArgs {
    /// Write one hex line per message instead of raw bytes.
    #[arg(long)]
    pub(crate) hex: bool,
    /// Input file of JSON messages; `-` or nothing reads stdin.
    #[arg(value_name = "FILE")]
    pub(crate) input: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) dict: DictArgs,
}

/// A command failure: the message for stderr and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    /// Bad input or usage: exit code 2.
    pub(crate) fn input(message: impl Into<String>) -> Self {
        Failure { code: 2, message: message.into() }
    }
    /// The operation failed: exit code 1.
    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Failure { code: 1, message: message.into() }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Decode(args) => codec_cmd::decode(&args),
        Command::Encode(args) => codec_cmd::encode(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("diam: error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

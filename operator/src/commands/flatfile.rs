//! `syncmesh flatfile decode`: fixed-width records to JSON lines, for checking a layout
//! against a file before it goes into a pipeline.

use crate::Failure;
use anyhow::Context;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use syncmesh_connectors::sources::flatfile::{
    DecodeOptions, Encoding, JsonWriter, Layout, RecordDecoder, RecordFormat, RecordReader,
    RowBuffer, SignConvention,
};

/// Output is handed to stdout in blocks of about this many bytes.
const OUTPUT_BLOCK: usize = 1 << 16;

#[derive(clap::Subcommand)]
pub enum FlatfileCommand {
    /// Decode INPUT with a layout and write one JSON object per record to stdout.
    Decode(DecodeArgs),
}

#[derive(clap::Args)]
pub struct DecodeArgs {
    /// The layout: a COBOL copybook (.cpy, .cob, .cbl) or a YAML layout (.yaml, .yml).
    #[arg(long)]
    pub layout: PathBuf,
    /// Text encoding.
    #[arg(long, value_parser = ["ascii", "cp037", "cp500", "cp1047"])]
    pub encoding: Option<String>,
    /// Zoned-decimal sign convention.
    #[arg(long, value_parser = ["ibm", "mf"])]
    pub sign_convention: Option<String>,
    /// Record framing.
    #[arg(long, default_value = "fixed", value_parser = ["fixed", "lines", "rdw"])]
    pub record_format: String,
    /// Write records that do not decode to this JSON-lines file and go on (default: stop, exit 2).
    #[arg(long)]
    pub dead_letter: Option<PathBuf>,
    /// The file to decode.
    pub input: PathBuf,
}

pub fn run(cmd: FlatfileCommand) -> Result<(), Failure> {
    match cmd {
        FlatfileCommand::Decode(args) => decode(&args),
    }
}

fn decode(args: &DecodeArgs) -> Result<(), Failure> {
    let layout = Layout::load(&args.layout).map_err(Failure::bad_input)?;
    let mut options = DecodeOptions::for_layout(&layout);
    if let Some(e) = &args.encoding {
        options.encoding = match e.as_str() {
            "cp037" => Encoding::Cp037,
            "cp500" => Encoding::Cp500,
            "cp1047" => Encoding::Cp1047,
            _ => Encoding::Ascii,
        };
    }
    if let Some(s) = &args.sign_convention {
        options.sign_convention = if s == "mf" {
            SignConvention::MicroFocus
        } else {
            SignConvention::Ibm
        };
    }
    let format = match args.record_format.as_str() {
        "lines" => RecordFormat::Lines,
        "rdw" => RecordFormat::Rdw,
        _ => RecordFormat::Fixed,
    };
    let decoder = RecordDecoder::new(&layout, options).map_err(Failure::bad_input)?;
    let json = JsonWriter::new(&decoder.columns());
    let file = std::fs::File::open(&args.input)
        .with_context(|| format!("cannot open {}", args.input.display()))
        .map_err(Failure::bad_input)?;
    let mut dead = match &args.dead_letter {
        Some(p) => Some(BufWriter::new(
            std::fs::File::create(p)
                .with_context(|| format!("cannot create {}", p.display()))
                .map_err(Failure::bad_input)?,
        )),
        None => None,
    };
    let mut out = std::io::stdout().lock();
    let mut reader = RecordReader::new(file, format, layout.record_length);
    let input = args.input.display().to_string();
    let mut row = RowBuffer::new();
    // JSON lines are built here and written in blocks: no per-record value tree or syscall.
    let mut block = Vec::with_capacity(2 * OUTPUT_BLOCK);
    loop {
        let records = match reader.next_block() {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => {
                let _ = out.write_all(&block).and_then(|()| out.flush());
                return Err(Failure::bad_input(anyhow::anyhow!("{input}: {e}")));
            }
        };
        // The first failure stops the output: records after it in the block are dropped.
        let mut failure: Option<Failure> = None;
        decoder.decode_block(&records, &mut row, |i, decoded| {
            if failure.is_some() {
                return;
            }
            let e = match decoded {
                Ok(values) => {
                    json.write(&values, &mut block);
                    block.push(b'\n');
                    if block.len() >= OUTPUT_BLOCK {
                        if let Err(e) = out.write_all(&block) {
                            failure = Some(Failure::failed(e));
                        }
                        block.clear();
                    }
                    return;
                }
                Err(e) => e,
            };
            let (offset, number) = records.position_of(i);
            let reason = format!("{input}: record {number} at byte {offset}: {e}");
            failure = match dead.as_mut() {
                None => Some(Failure::bad_input(anyhow::anyhow!(reason))),
                Some(d) => {
                    let letter = serde_json::json!({
                        "file": input, "record": number, "offset": offset,
                        "field": e.field, "reason": reason,
                    });
                    writeln!(d, "{letter}").err().map(Failure::failed)
                }
            };
        });
        if let Some(f) = failure {
            let _ = out.write_all(&block).and_then(|()| out.flush());
            return Err(f);
        }
    }
    out.write_all(&block)
        .and_then(|()| out.flush())
        .map_err(Failure::failed)?;
    if let Some(mut d) = dead {
        d.flush().map_err(Failure::failed)?;
    }
    Ok(())
}

//! Framing and record decoding on arbitrary bytes, for the test layouts (every field type,
//! OCCURS, OCCURS DEPENDING ON, REDEFINES with a selector), every encoding, both sign
//! conventions and the three framings. Never a panic; a decoded record has one value per
//! column and its JSON (`JsonWriter`) equals the serde_json rendering of the owned values; an
//! error names a column and lies inside the record.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run flatfile_record` (from the repository root).
//! The first input byte picks layout, encoding and options; the rest is the file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use syncmesh_connectors::event::{Column, Value};
use syncmesh_connectors::sources::flatfile::{
    DecodeOptions, Encoding, JsonWriter, Layout, RecordDecoder, RecordFormat, RecordReader,
    RecordSelector, RowBuffer, SignConvention, record_to_json,
};

const ALLTYPES: &str = include_str!("../../tests/fixtures/flatfile/alltypes.cpy");
const RECORDS: &str = include_str!("../../tests/fixtures/flatfile/records.cpy");
const ODO: &str = include_str!("../../tests/fixtures/flatfile/odo.cpy");
const LINES: &str = include_str!("../../tests/fixtures/flatfile/lines.cpy");
const LEDGER: &str = include_str!("../../deploy/examples/ledger.cpy");
const YAML: &str = "
fields:
  - {name: T, offset: 0, length: 1, type: text}
  - {name: LS, offset: 1, length: 5, type: zoned, signed: true, sign: leading_separate, scale: 2}
  - {name: TS, offset: 6, length: 4, type: zoned, signed: true, sign: trailing_separate}
  - {name: L, offset: 10, length: 3, type: zoned, signed: true, sign: leading}
  - {name: U8, offset: 13, length: 8, type: binary}
  - {name: S1, offset: 21, length: 1, type: binary, signed: true, scale: 1}
  - {name: N, offset: 22, length: 1, type: zoned}
  - {name: C, offset: 23, length: 2, type: text, occurs: 3, depending_on: N, encoding: latin1}
  - {name: P, offset: 29, length: 3, type: packed, occurs: 2, stride: 4, digits: 4}
  - {name: D, offset: 29, length: 8, type: text, variant: DETAIL}
  - {name: H, offset: 29, length: 8, type: zoned, variant: HEADER}
selector: {field: T, cases: {\"D\": DETAIL, \"H\": HEADER}}
";

fn layouts() -> &'static [Layout] {
    static LAYOUTS: OnceLock<Vec<Layout>> = OnceLock::new();
    LAYOUTS.get_or_init(|| {
        let selector = RecordSelector::from_yaml(
            "field: HDR-TYPE\ncases: {\"H\": HDR-REC, \"D\": DTL-REC, \"T\": TRL-REC}\n",
        )
        .expect("selector");
        vec![
            Layout::from_copybook(ALLTYPES).expect("alltypes"),
            Layout::from_copybook(RECORDS)
                .and_then(|l| l.with_selector(selector))
                .expect("records"),
            Layout::from_copybook(ODO).expect("odo"),
            Layout::from_copybook(LINES).expect("lines"),
            Layout::from_copybook(LEDGER).expect("ledger"),
            Layout::from_yaml(YAML).expect("yaml"),
        ]
    })
}

/// The JSON text serde_json gives for the record, keys in column order (`JsonWriter`'s order).
fn serde_text(columns: &[Column], values: &[Value]) -> String {
    let map = record_to_json(columns, values);
    let mut text = String::from("{");
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let key = Value::String(c.name.clone()).to_json().to_string();
        let value = map.get(&c.name).map(|v| v.to_string()).unwrap_or_default();
        text.push_str(&format!("{key}:{value}"));
    }
    text.push('}');
    text
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let layouts = layouts();
    let layout = &layouts[usize::from(pick) % layouts.len()];
    let options = DecodeOptions {
        encoding: Encoding::ALL[usize::from(pick >> 3) % Encoding::ALL.len()],
        sign_convention: if pick & 0x40 == 0 {
            SignConvention::Ibm
        } else {
            SignConvention::MicroFocus
        },
        allow_short_text: pick & 0x80 != 0,
    };
    let Ok(decoder) = RecordDecoder::new(layout, options) else {
        return;
    };
    let columns = decoder.columns();
    let json = JsonWriter::new(&columns);
    let format = [RecordFormat::Fixed, RecordFormat::Lines, RecordFormat::Rdw]
        [usize::from(pick.rotate_right(2)) % 3];
    // Blocks first: each record of each block must decode as `decode_row` decodes it alone.
    let mut buf = RowBuffer::new();
    let mut blocks = RecordReader::new(file, format, layout.record_length);
    let mut alone = RowBuffer::new();
    while let Ok(Some(block)) = blocks.next_block() {
        let mut count = 0;
        decoder.decode_block(&block, &mut buf, |i, row| {
            let at = i * block.record_length;
            let record = &block.data[at..at + block.record_length];
            let want = decoder.decode_row(record, &mut alone).map(|r| r.to_values());
            assert_eq!(row.map(|r| r.to_values()), want);
            count += 1;
        });
        assert_eq!(count, block.records);
    }
    let mut reader = RecordReader::new(file, format, layout.record_length);
    let mut out = Vec::new();
    while let Ok(Some(record)) = reader.next_record() {
        assert!(record.offset as usize + record.data.len() <= file.len());
        match decoder.decode_row(record.data, &mut buf) {
            Ok(row) => {
                let values = row.to_values();
                assert_eq!(values.len(), columns.len());
                out.clear();
                json.write(&row, &mut out);
                let written = std::str::from_utf8(&out).expect("UTF-8");
                assert_eq!(written, serde_text(&columns, &values));
                // The owned path decodes to the same values, and the general code (which
                // the compiled steps short-cut) to the same again.
                assert_eq!(decoder.decode(record.data).ok(), Some(values.clone()));
                assert_eq!(decoder.decode_general(record.data).ok(), Some(values));
            }
            Err(e) => {
                let base = e.field.split('(').next().unwrap_or_default();
                assert!(
                    columns.iter().any(|c| c.name == base),
                    "error names no column: {e}"
                );
                assert!(e.offset <= record.data.len() + layout.record_length, "{e}");
                assert_eq!(decoder.decode(record.data).err(), Some(e.clone()));
                assert_eq!(decoder.decode_general(record.data).err(), Some(e));
            }
        }
    }
});

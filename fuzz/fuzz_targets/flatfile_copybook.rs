//! Copybook and YAML layout parsing on arbitrary text: never a panic; a layout that parses
//! builds a decoder and decodes records of its length (blank, zero and the input's own bytes)
//! to one value per column or a clean error.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run flatfile_copybook` (from the repository root).

#![no_main]

use libfuzzer_sys::fuzz_target;
use syncmesh_connectors::event::{Column, Value};
use syncmesh_connectors::sources::flatfile::{
    DecodeOptions, Encoding, JsonWriter, Layout, RecordDecoder, RowBuffer, record_to_json,
};

/// Records longer than this are not decoded (the parse still runs): a fuzzed `OCCURS 9999`
/// would otherwise spend the run on one input.
const MAX_RECORD: usize = 1 << 16;

fn exercise(layout: &Layout, sample: &[u8]) {
    for encoding in [Encoding::Ascii, Encoding::Cp037] {
        let options = DecodeOptions {
            encoding,
            ..DecodeOptions::default()
        };
        let decoder = match RecordDecoder::new(layout, options) {
            Ok(d) => d,
            // Only a selector case that has no byte in the encoding may refuse here.
            Err(e) => {
                assert!(layout.selector.is_some(), "valid layout refused: {e}");
                continue;
            }
        };
        let columns = decoder.columns();
        let json = JsonWriter::new(&columns);
        if layout.record_length > MAX_RECORD {
            continue;
        }
        let mut buf = RowBuffer::new();
        let mut sample = sample.to_vec();
        sample.resize(layout.record_length, encoding.digit(0));
        for record in [
            vec![encoding.space(); layout.record_length],
            vec![encoding.digit(0); layout.record_length],
            sample,
        ] {
            if let Ok(row) = decoder.decode_row(&record, &mut buf) {
                let values = row.to_values();
                assert_eq!(values.len(), columns.len());
                let mut out = Vec::new();
                json.write(&row, &mut out);
                assert_eq!(
                    String::from_utf8(out).expect("UTF-8"),
                    serde_text(&columns, &values)
                );
            }
        }
    }
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
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(layout) = Layout::from_copybook(text) {
        exercise(&layout, data);
    }
    if let Ok(layout) = Layout::from_yaml(text) {
        exercise(&layout, data);
    }
});

//! The quickstart sample: deploy/examples/ledger.cpy and the generated ledger files decode
//! with the options the quickstart documents (fixed records, ASCII, IBM overpunch).

use std::collections::HashMap;
use std::path::PathBuf;
use syncmesh_connectors::event::{ColumnType, Decimal, Value};
use syncmesh_connectors::sources::flatfile::{
    DecodeOptions, Encoding, Layout, RecordDecoder, RecordFormat, RecordReader, SignConvention,
    record_to_json,
};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

fn decoder() -> (Layout, RecordDecoder) {
    let layout = Layout::load(examples().join("ledger.cpy")).unwrap();
    let options = DecodeOptions {
        encoding: Encoding::Ascii,
        sign_convention: SignConvention::Ibm,
        ..Default::default()
    };
    let decoder = RecordDecoder::new(&layout, options).unwrap();
    (layout, decoder)
}

fn read_all(file: &str) -> Vec<Vec<Value>> {
    let (layout, decoder) = decoder();
    let f = std::fs::File::open(examples().join("data").join(file)).unwrap();
    let mut reader = RecordReader::new(f, RecordFormat::Fixed, layout.record_length);
    let mut rows = Vec::new();
    while let Some(rec) = reader.next_record().unwrap() {
        rows.push(decoder.decode(rec.data).unwrap_or_else(|e| {
            panic!("{file} record {} at byte {}: {e}", rec.number, rec.offset)
        }));
    }
    rows
}

#[test]
fn ledger_layout_matches_the_copybook_comment() {
    let (layout, decoder) = decoder();
    assert_eq!(layout.record_length, 100);
    let names: Vec<_> = decoder.columns().iter().map(|c| c.name.clone()).collect();
    assert_eq!(
        names,
        [
            "ACCOUNT-ID",
            "BRANCH-CODE",
            "CUSTOMER-NAME",
            "CURRENCY-CODE",
            "BALANCE",
            "LAST-TXN-AMOUNT",
            "TXN-COUNT",
            "OPEN-DATE",
            "ACCOUNT-STATUS"
        ]
    );
    let types: Vec<_> = decoder
        .columns()
        .into_iter()
        .map(|c| c.column_type)
        .collect();
    assert_eq!(types[0], ColumnType::Int);
    assert_eq!(
        types[4],
        ColumnType::Decimal {
            precision: 13,
            scale: 2
        }
    );
    assert_eq!(
        types[5],
        ColumnType::Decimal {
            precision: 11,
            scale: 2
        }
    );
    assert_eq!(types[6], ColumnType::Int);
    let offsets: Vec<_> = layout.fields.iter().map(|f| (f.offset, f.length)).collect();
    assert_eq!(
        offsets,
        [
            (0, 10),
            (10, 4),
            (14, 30),
            (44, 3),
            (47, 7),
            (54, 11),
            (65, 4),
            (69, 8),
            (77, 1)
        ]
    );
}

#[test]
fn ledger_files_decode_with_unique_ids_and_updates() {
    let first = read_all("ledger-0001.dat");
    assert_eq!(first.len(), 10_000);
    let ids: HashMap<i64, &Vec<Value>> = first
        .iter()
        .map(|r| match r[0] {
            Value::Int(id) => (id, r),
            ref other => panic!("id {other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), 10_000, "account ids are unique");
    // The generator's fixed edge cases.
    assert_eq!(first[0][4], Value::Decimal(Decimal::new(0, 2)));
    assert_eq!(first[1][4], Value::Decimal(Decimal::new(-1, 2)));
    assert_eq!(first[1][5], Value::Decimal(Decimal::new(-1, 2)));
    assert_eq!(
        first[2][4],
        Value::Decimal(Decimal::parse("99999999999.99").unwrap())
    );
    assert_eq!(
        first[2][5],
        Value::Decimal(Decimal::parse("-999999999.99").unwrap())
    );
    assert_eq!(first[3][6], Value::Int(99_999));
    assert!(
        first
            .iter()
            .any(|r| matches!(r[4], Value::Decimal(d) if d.unscaled < 0))
    );

    let second = read_all("ledger-0002.dat");
    assert_eq!(second.len(), 500);
    let updates = second
        .iter()
        .filter(|r| match r[0] {
            Value::Int(id) => ids.contains_key(&id),
            _ => false,
        })
        .count();
    assert_eq!(updates, 300);
    for r in &second {
        if let Value::Int(id) = r[0]
            && let Some(old) = ids.get(&id)
        {
            assert_eq!(r[2], old[2], "same customer");
            assert_ne!(r[5], old[5], "a new last amount for {id}");
        }
    }
    let (_, decoder) = decoder();
    let json = record_to_json(&decoder.columns(), &first[2]);
    assert_eq!(json["BALANCE"], "99999999999.99");
    assert_eq!(json["LAST-TXN-AMOUNT"], "-999999999.99");
    assert!(json["ACCOUNT-ID"].is_i64());
}

/// tests/fixtures/flatfile/ledger-malformed.dat (made by make_malformed.py next to it): each
/// damaged record gives an error naming the field, its offset and the reason; the good ones
/// still decode; the short final record is a framing error with its file offset.
#[test]
fn malformed_ledger_records_give_precise_errors() {
    let (layout, decoder) = decoder();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/flatfile/ledger-malformed.dat");
    let data = std::fs::read(path).unwrap();
    let mut reader = RecordReader::new(&data[..], RecordFormat::Fixed, layout.record_length);
    let mut errors = Vec::new();
    let mut good = 0;
    loop {
        match reader.next_record() {
            Ok(Some(rec)) => match decoder.decode(rec.data) {
                Ok(_) => good += 1,
                Err(e) => errors.push(format!("record {} at byte {}: {e}", rec.number, rec.offset)),
            },
            Ok(None) => break,
            Err(e) => {
                errors.push(e.to_string());
                break;
            }
        }
    }
    assert_eq!(good, 16);
    assert_eq!(
        errors,
        [
            "record 3 at byte 200: field BALANCE at byte 47: bad packed-decimal digit nibble 0xA at byte 49",
            "record 7 at byte 600: field ACCOUNT-ID at byte 0: byte 0x58 at byte 4 is not a digit",
            "record 11 at byte 1000: field LAST-TXN-AMOUNT at byte 54: bad sign 0x2A at byte 64",
            "record 15 at byte 1400: field BALANCE at byte 47: bad sign 0x4B at byte 53",
            "short final record 21 at byte 2000: 37 of 100 bytes",
        ]
    );
}

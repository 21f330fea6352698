//! The fast paths against the byte-by-byte code they short-cut, on arbitrary bytes; the JSON
//! writer against serde_json; borrowed rows against owned values.

use super::*;
use crate::sources::flatfile::JsonWriter;
use proptest::prelude::*;

fn decoder(copybook: &str, encoding: Encoding, sign_convention: SignConvention) -> RecordDecoder {
    let layout = Layout::from_copybook(copybook).expect("copybook");
    RecordDecoder::new(
        &layout,
        DecodeOptions {
            encoding,
            sign_convention,
            allow_short_text: false,
        },
    )
    .expect("decoder")
}

const SIGNS: [SignPosition; 4] = [
    SignPosition::Trailing,
    SignPosition::Leading,
    SignPosition::TrailingSeparate,
    SignPosition::LeadingSeparate,
];

/// Bytes that are mostly digits of `enc` (so valid numbers are common), with sign characters
/// and arbitrary bytes mixed in.
fn zoned_bytes() -> impl Strategy<Value = (Encoding, SignConvention, Vec<u8>)> {
    (
        prop::sample::select(vec![Encoding::Ascii, Encoding::Cp037]),
        prop::sample::select(vec![SignConvention::Ibm, SignConvention::MicroFocus]),
        prop::collection::vec(
            prop_oneof![
                8 => 0u8..10,
                1 => prop::sample::select(b"{}AJRpy+-N`\xC3\xD7\x4E\x60 ".to_vec()),
                1 => any::<u8>(),
            ],
            1..24,
        ),
    )
        .prop_map(|(enc, conv, raw)| {
            let bytes = raw
                .into_iter()
                .map(|b| if b < 10 { enc.digit(b) } else { b })
                .collect();
            (enc, conv, bytes)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn zoned_fast_path_agrees_with_the_byte_loop(
        (enc, conv, bytes) in zoned_bytes(),
        sign in prop::sample::select(SIGNS.to_vec()),
        signed: bool,
    ) {
        prop_assume!(!(signed && sign.is_separate() && bytes.len() < 2));
        let d = decoder("01 R. 05 X PIC X.", enc, conv);
        let slow = d.zoned(&bytes, 3, sign, signed);
        match d.zoned_fast(&bytes, sign, signed) {
            Some((neg, mag)) => prop_assert_eq!(slow, Ok((neg, u128::from(mag)))),
            None => {
                let digits = bytes.len() - usize::from(signed && sign.is_separate());
                prop_assert!(
                    slow.is_err() || digits > numeric::FAST_DIGITS,
                    "the fast path refused a valid number: {:?}", slow
                );
            }
        }
    }

    #[test]
    fn packed_fast_path_agrees_with_the_byte_loop(
        bytes in prop::collection::vec(
            prop_oneof![6 => (0u8..10, 0u8..10).prop_map(|(h, l)| h << 4 | l), 1 => any::<u8>()],
            1..12,
        ),
        sign in prop::sample::select(vec![0xCu8, 0xD, 0xF, 0xA, 0xB, 0x3]),
        signed: bool,
    ) {
        let mut bytes = bytes;
        if let Some(last) = bytes.last_mut() {
            *last = (*last & 0xF0) | sign;
        }
        let slow = packed(&bytes, 0, signed, 38);
        match numeric::packed(&bytes, signed) {
            Some((neg, mag)) => prop_assert_eq!(slow, Ok((neg, u128::from(mag)))),
            None => prop_assert!(slow.is_err() || bytes.len() > 10, "refused {:?}", slow),
        }
    }
}

/// Every kind of column: text, zoned, packed, binary, OCCURS, OCCURS DEPENDING ON.
const MIXED: &str = "
       01  MIX-REC.
           05  ID            PIC 9(4).
           05  NAME          PIC X(8).
           05  AMT           PIC S9(5)V99.
           05  BIG           PIC S9(20)V9(3) COMP-3.
           05  RATE          PIC S9(3)V9(4) COMP-3.
           05  CNT           PIC S9(4) COMP.
           05  CODES         PIC X(2) OCCURS 3.
           05  GRID          OCCURS 2.
               10  CELL      PIC 9(2) OCCURS 2.
           05  N             PIC 9.
           05  ITEM          PIC S9(3) OCCURS 0 TO 4 DEPENDING ON N.
";

fn mixed_record(enc: Encoding, name: &str, n: usize) -> Vec<u8> {
    let e = |s: &str| enc.encode(s).expect("encodable");
    let mut r = Vec::new();
    r.extend(e("0042"));
    let mut nm = e(name);
    nm.resize(8, enc.space());
    r.extend(nm);
    r.extend(e("001234"));
    r.push(if enc.is_ebcdic() { 0xD5 } else { b'N' }); // -12345.5 -> last digit 5, negative
    r.extend([
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x78, 0x9D,
    ]);
    r.extend([0x01, 0x23, 0x45, 0x6C]);
    r.extend((-7i16).to_be_bytes());
    r.extend(e("A\"B\\C "));
    r.extend(e("01020304"));
    r.extend(e(&n.to_string()));
    for i in 0..n {
        r.extend(e(&format!("00{i}")));
    }
    r
}

#[test]
fn rows_match_owned_values_and_json_matches_serde() {
    for enc in [
        Encoding::Ascii,
        Encoding::Latin1,
        Encoding::Cp037,
        Encoding::Cp1047,
    ] {
        let d = decoder(MIXED, enc, SignConvention::Ibm);
        let columns = d.columns();
        let writer = JsonWriter::new(&columns);
        let mut buf = RowBuffer::new();
        for (name, n) in [("ÄRGER", 0), ("plain", 4), ("tab\tx", 2), ("", 1)] {
            let record = mixed_record(enc, name, n);
            let row = d.decode_row(&record, &mut buf).expect("decodes");
            let values = row.to_values();
            assert_eq!(values.len(), columns.len());
            let mut json = Vec::new();
            writer.write(&row, &mut json);
            let text = String::from_utf8(json).expect("utf-8");
            let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            let serde = serde_json::Value::Object(record_to_json(&columns, &values));
            assert_eq!(parsed, serde, "{enc} {name}");
            // Keys in layout order.
            let mut at = 0;
            for c in &columns {
                let key = format!("\"{}\":", c.name);
                at += text[at..].find(&key).expect("key in order");
            }
            assert_eq!(values[1], Value::String(name.trim_end().to_string()));
            assert_eq!(values[2], Value::Decimal(Decimal::new(-12_345, 2)));
            assert_eq!(values[3], Value::Decimal(Decimal::new(-123_456_789, 3)));
            assert_eq!(values[4], Value::Decimal(Decimal::new(123_456, 4)));
            assert_eq!(values[5], Value::Int(-7));
            let Value::Array(items) = &values[9] else {
                panic!("ITEM is an array")
            };
            assert_eq!(items.len(), n);
        }
    }
}

#[test]
fn ascii_text_borrows_from_the_record_and_falls_back_per_field() {
    let d = decoder(
        "01 R. 05 A PIC X(4). 05 B PIC X(4). 05 P PIC S9(3) COMP-3.",
        Encoding::Ascii,
        SignConvention::Ibm,
    );
    let mut buf = RowBuffer::new();
    // Valid UTF-8 throughout: both fields point into the record.
    let rec = b"ab  cd  \x00\x1C";
    let row = d.decode_row(rec, &mut buf).expect("decodes");
    assert!(row.scratch.is_empty());
    assert_eq!(
        row.to_values()[..2],
        [Value::String("ab".into()), Value::String("cd".into())]
    );
    // The packed field is not UTF-8: text goes through the scratch buffer.
    let rec = b"ab  \xC3\xA9  \x99\x9C";
    let row = d.decode_row(rec, &mut buf).expect("decodes");
    assert_eq!(row.to_values()[1], Value::String("é".into()));
    // A character cut by a field boundary is invalid in both fields.
    let rec = b"abc\xC3\xA9   \x12\x3C";
    let err = d.decode_row(rec, &mut buf).expect_err("cut character");
    assert_eq!(err.field, "A");
    assert_eq!(err.reason, FieldErrorKind::InvalidText { at: 3 });
}

#[test]
fn packed_pad_nibble_must_be_zero() {
    let d = decoder(
        "01 R. 05 P PIC 9(4) COMP-3.",
        Encoding::Ascii,
        SignConvention::Ibm,
    );
    assert_eq!(
        d.decode(&[0x01, 0x23, 0x4F]).expect("ok"),
        [Value::Int(1234)]
    );
    let e = d.decode(&[0x11, 0x23, 0x4F]).expect_err("pad");
    assert_eq!(e.reason, FieldErrorKind::TooManyDigits { digits: 4 });
    // 20 bytes are 39 digit nibbles: one more than 38 never overflows.
    let d = decoder(
        "01 R. 05 P PIC S9(30)V9(8) COMP-3.",
        Encoding::Ascii,
        SignConvention::Ibm,
    );
    let mut big = [0x99u8; 20];
    big[19] = 0x9C;
    let e = d.decode(&big).expect_err("39 digits");
    assert_eq!(e.reason, FieldErrorKind::TooManyDigits { digits: 38 });
}

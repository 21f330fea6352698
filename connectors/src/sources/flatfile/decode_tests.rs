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

/// One field of a generated layout: (kind, length, scale, signed, OCCURS count).
type FieldSpec = (FieldKind, usize, u8, bool, usize);

fn field_spec() -> impl Strategy<Value = FieldSpec> {
    let kind = prop_oneof![
        Just(FieldKind::Text),
        prop::sample::select(SIGNS.to_vec()).prop_map(|sign| FieldKind::Zoned { sign }),
        Just(FieldKind::Packed),
        Just(FieldKind::Binary),
    ];
    (
        kind,
        1usize..22,
        0u8..4,
        any::<bool>(),
        prop_oneof![4 => Just(1usize), 1 => 2usize..4],
    )
        .prop_map(|(kind, len, scale, signed, occurs)| {
            let len = match kind {
                FieldKind::Binary => [1, 2, 4, 8][len % 4],
                FieldKind::Packed => len.min(12),
                FieldKind::Zoned { sign } if signed && sign.is_separate() => len.max(2),
                _ => len,
            };
            let scale = if kind == FieldKind::Text { 0 } else { scale };
            (kind, len, scale, signed && kind != FieldKind::Text, occurs)
        })
}

/// A layout of the generated fields, each after a gap of 0-2 bytes.
fn generated_layout(specs: &[FieldSpec], gaps: &[usize]) -> Layout {
    let mut offset = 0;
    let mut fields = Vec::new();
    for (i, &(kind, length, scale, signed, occurs)) in specs.iter().enumerate() {
        offset += gaps.get(i).copied().unwrap_or(0);
        let digits = match kind {
            FieldKind::Text => 0,
            FieldKind::Zoned { sign } => (length - usize::from(signed && sign.is_separate())) as u8,
            // An even digit count now and then: the pad nibble must be zero.
            FieldKind::Packed if length % 3 == 0 => (2 * length - 2) as u8,
            FieldKind::Packed => (2 * length - 1) as u8,
            FieldKind::Binary => super::super::layout::binary_capacity(length, signed),
        };
        let scale = scale.min(digits);
        let occurs_dims = if occurs > 1 {
            vec![super::super::layout::Occurs {
                max: occurs,
                min: occurs,
                depending_on: None,
                stride: length,
                table_offset: offset,
            }]
        } else {
            vec![]
        };
        fields.push(super::super::layout::Field {
            name: format!("F{i}"),
            offset,
            length,
            kind,
            digits,
            scale,
            signed,
            occurs: occurs_dims,
            variants: vec![],
            encoding: None,
        });
        offset += length * occurs;
    }
    Layout {
        record_length: offset,
        fields,
        selector: None,
        encoding: None,
        sign_convention: None,
    }
}

/// Bytes a field of `kind` might hold in `enc`: mostly valid, with every kind of bad byte.
fn field_bytes(enc: Encoding) -> impl Strategy<Value = u8> {
    let d0 = enc.digit(0);
    prop_oneof![
        6 => (0u8..10).prop_map(move |d| d0 + d),
        2 => prop::sample::select(vec![
            0x12u8, 0x99, 0x00, 0x9C, 0x1D, 0x0F, 0x5C, 0x3D, 0x40, 0x20, 0x7B, 0x7D, 0x41, 0x4A,
            0x52, 0x70, 0x79, 0x2B, 0x2D, 0x4E, 0x60, 0xC1, 0xC0, 0xD0, 0xD9, 0xC3, 0xA9, 0xE9,
            0xFF, 0x80, 0xFA,
        ]),
        1 => any::<u8>(),
    ]
}

/// A valid encoding of field element `f` of `layout` from the random `r`, in `enc`.
fn valid_element(
    f: &super::super::layout::Field,
    enc: Encoding,
    conv: SignConvention,
    r: u64,
) -> Vec<u8> {
    let n = f.length;
    let digit_text = |count: usize| -> Vec<u8> {
        let mut x = r;
        (0..count)
            .map(|_| {
                let d = (x % 10) as u8;
                x = (x / 10) ^ x.rotate_left(17);
                d
            })
            .collect()
    };
    let neg = f.signed && r.is_multiple_of(3);
    match f.kind {
        FieldKind::Text => {
            let words: [&str; 5] = ["A", "HELLO WORLD", "été", "x\"y", ""];
            let mut b = enc.encode(words[(r % 5) as usize]).unwrap_or_default();
            b.resize(n, enc.space());
            b.truncate(n);
            b
        }
        FieldKind::Zoned { sign } => {
            let sep = f.signed && sign.is_separate();
            let ds = digit_text(n - usize::from(sep));
            let mut b: Vec<u8> = ds.iter().map(|d| enc.digit(*d)).collect();
            if f.signed {
                let punch = |d: u8| -> u8 {
                    match (enc.is_ebcdic(), conv, neg) {
                        (true, _, false) => 0xC0 | d,
                        (true, _, true) => 0xD0 | d,
                        (false, SignConvention::Ibm, false) => b"{ABCDEFGHI"[usize::from(d)],
                        (false, SignConvention::Ibm, true) => b"}JKLMNOPQR"[usize::from(d)],
                        (false, SignConvention::MicroFocus, false) => b'0' + d,
                        (false, SignConvention::MicroFocus, true) => b'p' + d,
                    }
                };
                let (plus, minus) = enc.plus_minus();
                match sign {
                    SignPosition::Trailing => b[n - 1] = punch(ds[n - 1]),
                    SignPosition::Leading => b[0] = punch(ds[0]),
                    SignPosition::TrailingSeparate => b.push(if neg { minus } else { plus }),
                    SignPosition::LeadingSeparate => b.insert(0, if neg { minus } else { plus }),
                }
            }
            b
        }
        FieldKind::Packed => {
            let mut nibbles = digit_text(2 * n - 1);
            if usize::from(f.digits) < 2 * n - 1 {
                nibbles[0] = 0;
            }
            nibbles.push(match (f.signed, neg, r % 7) {
                (false, _, _) | (true, false, 0) => 0xF,
                (true, false, _) => 0xC,
                (true, true, _) => 0xD,
            });
            nibbles.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
        }
        FieldKind::Binary => r.to_be_bytes()[8 - n..].to_vec(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// The compiled decode gives what the general code gives, values or error, on arbitrary
    /// layouts and records (valid ones, with bad bytes mixed in, cut short or left long).
    #[test]
    fn compiled_decode_agrees_with_the_general_code(
        specs in prop::collection::vec(field_spec(), 1..8),
        gaps in prop::collection::vec(0usize..3, 8),
        enc in prop::sample::select(vec![Encoding::Ascii, Encoding::Latin1, Encoding::Cp037]),
        conv in prop::sample::select(vec![SignConvention::Ibm, SignConvention::MicroFocus]),
        values in prop::collection::vec(any::<u64>(), 32),
        bad in prop::collection::vec((any::<u16>(), field_bytes(Encoding::Ascii)), 0..3),
        cut in prop_oneof![8 => Just(0usize), 1 => 1usize..4],
        extra in prop::collection::vec(any::<u8>(), 0..3),
    ) {
        let layout = generated_layout(&specs, &gaps);
        let d = RecordDecoder::new(
            &layout,
            DecodeOptions { encoding: enc, sign_convention: conv, allow_short_text: cut > 0 },
        )
        .expect("decoder");
        let mut record = vec![enc.space(); layout.record_length];
        let mut v = values.iter().cycle();
        for f in &layout.fields {
            let count = f.occurs.first().map_or(1, |o| o.max);
            for i in 0..count {
                let at = f.offset + i * f.length;
                let bytes = valid_element(f, enc, conv, *v.next().unwrap_or(&0));
                record[at..at + f.length].copy_from_slice(&bytes);
            }
        }
        for (at, byte) in &bad {
            let at = usize::from(*at) % record.len().max(1);
            if let Some(b) = record.get_mut(at) {
                *b = *byte;
            }
        }
        record.extend(&extra);
        record.truncate(record.len().saturating_sub(cut));
        let mut buf = RowBuffer::new();
        let general = d.decode_general(&record);
        let text = std::str::from_utf8(&record).ok();
        let ascii = text.is_some() && record.is_ascii();
        if let Some(used) = d.compiled::<false>(&record, text, ascii, &mut buf) {
            let scratch = std::str::from_utf8(&buf.scratch[..used]).expect("UTF-8 scratch");
            let row = Row {
                cells: &buf.cells,
                record: text.unwrap_or(""),
                scratch,
                wide: &buf.wide,
                columns: layout.fields.len(),
            };
            prop_assert_eq!(Ok(row.to_values()), general.clone());
        }
        let fast = d.decode_row(&record, &mut buf).map(|r| r.to_values());
        prop_assert_eq!(&fast, &general);
        // The same program compiled for the x86-64 baseline (this CPU may take the other).
        let mut baseline = d.clone();
        baseline.baseline_only();
        let fast = baseline.decode_row(&record, &mut buf).map(|r| r.to_values());
        prop_assert_eq!(&fast, &general);
        // Blocks, by both builds: the record three times over, each decoded as above (an
        // empty record too: blocks count their records).
        let data = record.repeat(3);
        let block = Block {
            offset: 0,
            number: 1,
            data: &data,
            record_length: record.len(),
            records: 3,
            framed_length: record.len() as u64,
        };
        for dec in [&d, &baseline] {
            let mut got = Vec::new();
            dec.decode_block(&block, &mut buf, |i, row| {
                got.push((i, row.map(|r| r.to_values())));
            });
            let want: Vec<_> = (0..3).map(|i| (i, general.clone())).collect();
            prop_assert_eq!(got, want);
        }
    }
}

/// Valid records of layouts without OCCURS DEPENDING ON or a selector take the compiled
/// decode, whatever their types (a 31-digit number through a general step).
#[test]
fn valid_records_take_the_compiled_decode() {
    for (copybook, enc, conv) in [
        (
            "01 R. 05 A PIC 9(10). 05 B PIC X(30). 05 C PIC S9(13)V99. 05 D PIC X.
             05 E PIC S9(5) SIGN LEADING. 05 F PIC S9(3)V9 SIGN TRAILING SEPARATE.",
            Encoding::Ascii,
            SignConvention::Ibm,
        ),
        (
            "01 R. 05 A PIC 9(11) COMP-3. 05 B PIC X(4). 05 C PIC S9(4) COMP.
             05 D PIC S9(31) COMP-3. 05 E PIC S9(18) COMP. 05 F PIC S9(3) SIGN LEADING SEPARATE.",
            Encoding::Cp037,
            SignConvention::Ibm,
        ),
        (
            "01 R. 05 T OCCURS 3. 10 A PIC S9(3). 10 B PIC X(2) OCCURS 2. 05 P PIC S9(5) COMP-3.",
            Encoding::Ascii,
            SignConvention::MicroFocus,
        ),
    ] {
        let layout = Layout::from_copybook(copybook).expect("copybook");
        let d = decoder(copybook, enc, conv);
        assert!(d.steps.is_some(), "{copybook}");
        let mut buf = RowBuffer::new();
        for r in [0u64, 1, 99, 123_456_789_012_345, u64::MAX / 3] {
            let mut record = vec![enc.space(); layout.record_length];
            for f in &layout.fields {
                let mut count = 1;
                let mut strides = vec![];
                for o in f.occurs.iter().rev() {
                    strides = (0..o.max)
                        .flat_map(|i| {
                            let inner = if strides.is_empty() {
                                vec![0]
                            } else {
                                strides.clone()
                            };
                            inner.into_iter().map(move |s| s + i * o.stride)
                        })
                        .collect();
                    count *= o.max;
                }
                if strides.is_empty() {
                    strides.push(0);
                }
                assert_eq!(strides.len(), count);
                for s in strides {
                    let at = f.offset + s;
                    record[at..at + f.length].copy_from_slice(&valid_element(f, enc, conv, r));
                }
            }
            let text = std::str::from_utf8(&record).ok();
            let ascii = text.is_some() && record.is_ascii();
            assert!(
                d.compiled::<false>(&record, text, ascii, &mut buf)
                    .is_some(),
                "{copybook} {r}"
            );
            let row = d
                .decode_row(&record, &mut buf)
                .expect("decodes")
                .to_values();
            assert_eq!(Ok(row), d.decode_general(&record), "{copybook} {r}");
        }
    }
    let d = decoder(
        "01 R. 05 N PIC 9. 05 X PIC 9 OCCURS 0 TO 3 DEPENDING ON N.",
        Encoding::Ascii,
        SignConvention::Ibm,
    );
    assert!(d.steps.is_none());
}

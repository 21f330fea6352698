//! Unit tests of the flat-file codec through its public API: copybook and YAML layouts,
//! every field type in both sign conventions and each EBCDIC code page, framing, and every
//! error kind (with the field name and offset in the message).

use syncmesh_connectors::event::{ColumnType, Decimal, Value};
use syncmesh_connectors::sources::flatfile::{
    DecodeOptions, Encoding, FieldErrorKind, FieldKind, Layout, LayoutError, ReadError,
    RecordDecoder, RecordFormat, RecordReader, RecordSelector, SignConvention, SignPosition,
    record_to_json,
};

fn dec(text: &str) -> Value {
    Value::Decimal(Decimal::parse(text).unwrap())
}

fn s(text: &str) -> Value {
    Value::String(text.to_string())
}

fn opts(encoding: Encoding, sign_convention: SignConvention) -> DecodeOptions {
    DecodeOptions {
        encoding,
        sign_convention,
        ..Default::default()
    }
}

fn decoder(copybook: &str, o: DecodeOptions) -> RecordDecoder {
    RecordDecoder::new(&Layout::from_copybook(copybook).unwrap(), o).unwrap()
}

fn ascii_ibm() -> DecodeOptions {
    opts(Encoding::Ascii, SignConvention::Ibm)
}

/// Copybook lines in reference format (code from column 8).
fn cb(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("       {l}\n")).collect()
}

// ------------------------------------------------------------------------------------------
// Copybook parsing

#[test]
fn copybook_with_sequence_areas_comments_and_identification() {
    // Sequence numbers in columns 1-6, indicator in 7, code in 8-72, identification 73-80.
    let lines = [
        ('*', "A COMMENT LINE WITH A PERIOD. AND 01 LEVELS IN IT"),
        (' ', "01  CUSTOMER-REC."),
        (' ', "    05  CUST-ID             PIC 9(7)."),
        ('/', "    PAGE EJECT COMMENT"),
        (' ', "    05  CUST-NAME           PIC X(20)."),
        (' ', "    05  CUST-TYPE           PIC X."),
        (' ', "        88  CUST-RETAIL     VALUE 'R'."),
        (' ', "        88  CUST-CORP       VALUES ARE 'C' 'K'."),
        (' ', "    05  FILLER              PIC X(3) VALUE SPACES."),
        (
            ' ',
            "    05  CUST-LIMIT          PIC S9(7)V99 COMP-3 VALUE +0.",
        ),
        (
            ' ',
            "    05  CUST-SINCE          PIC 9(8) VALUE ZEROS. *> inline",
        ),
        ('D', "    05  DEBUG-ONLY          PIC X."),
    ];
    let text: String = lines
        .iter()
        .enumerate()
        .map(|(i, (ind, code))| format!("{:06}{ind}{code:<65}CUST{:04}\n", (i + 1) * 100, i))
        .collect();
    assert!(text.lines().all(|l| l.len() == 80));
    let layout = Layout::from_copybook(&text).unwrap();
    let got: Vec<(&str, usize, usize)> = layout
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.offset, f.length))
        .collect();
    assert_eq!(
        got,
        [
            ("CUST-ID", 0, 7),
            ("CUST-NAME", 7, 20),
            ("CUST-TYPE", 27, 1),
            ("CUST-LIMIT", 31, 5),
            ("CUST-SINCE", 36, 8)
        ]
    );
    assert_eq!(layout.record_length, 44);
    let limit = &layout.fields[3];
    assert_eq!(
        (limit.kind, limit.digits, limit.scale, limit.signed),
        (FieldKind::Packed, 9, 2, true)
    );
}

#[test]
fn copybook_free_format_and_a_fragment_without_01() {
    let free = "01 REC.\n  05 A PIC X(2).\n  05 B PIC S9(3)V9 COMP-3. *> packed\n";
    let layout = Layout::from_copybook(free).unwrap();
    assert_eq!(layout.record_length, 5);
    assert_eq!(layout.fields[1].offset, 2);
    let fragment = cb(&["05 A PIC X(2).", "05 B PIC 9(4) COMP."]);
    let layout = Layout::from_copybook(&fragment).unwrap();
    assert_eq!(layout.record_length, 4);
    assert_eq!(layout.fields[1].kind, FieldKind::Binary);
}

#[test]
fn pictures_usages_and_sign_clauses() {
    let text = cb(&[
        "01 R.",
        "  05 T1 PIC X(10).",
        "  05 T2 PIC A(3)X9.",
        "  05 Z1 PIC S9(5)V99.",
        "  05 Z2 PIC 9(3)V9(2).",
        "  05 Z3 PIC S9(4) SIGN LEADING.",
        "  05 Z4 PIC S9(4) SIGN IS TRAILING SEPARATE CHARACTER.",
        "  05 Z5 PIC S9(4) LEADING SEPARATE.",
        "  05 P1 PIC S9(7)V99 USAGE IS COMPUTATIONAL-3.",
        "  05 P2 PIC 9(4) PACKED-DECIMAL.",
        "  05 B1 PIC S9(4) COMP.",
        "  05 B2 PIC S9(5) BINARY.",
        "  05 B3 PIC 9(10) COMP-4.",
        "  05 B4 PIC S9(18) COMP-5.",
        "  05 E1 PIC ZZ,ZZ9.99-.",
        "  05 E2 PIC $$$9.99CR.",
        "  05 G1 COMP-3.",
        "     10 G1A PIC S9(3).",
        "     10 G1B PIC S9(5)V9.",
        "  05 G2 SIGN LEADING SEPARATE.",
        "     10 G2A PIC S99.",
    ]);
    let layout = Layout::from_copybook(&text).unwrap();
    let info: Vec<(&str, usize, usize, FieldKind, u8, u8, bool)> = layout
        .fields
        .iter()
        .map(|f| {
            (
                f.name.as_str(),
                f.offset,
                f.length,
                f.kind,
                f.digits,
                f.scale,
                f.signed,
            )
        })
        .collect();
    use FieldKind::*;
    let zoned = |sign| Zoned { sign };
    assert_eq!(
        info,
        [
            ("T1", 0, 10, Text, 0, 0, false),
            ("T2", 10, 5, Text, 0, 0, false),
            ("Z1", 15, 7, zoned(SignPosition::Trailing), 7, 2, true),
            ("Z2", 22, 5, zoned(SignPosition::Trailing), 5, 2, false),
            ("Z3", 27, 4, zoned(SignPosition::Leading), 4, 0, true),
            (
                "Z4",
                31,
                5,
                zoned(SignPosition::TrailingSeparate),
                4,
                0,
                true
            ),
            (
                "Z5",
                36,
                5,
                zoned(SignPosition::LeadingSeparate),
                4,
                0,
                true
            ),
            ("P1", 41, 5, Packed, 9, 2, true),
            ("P2", 46, 3, Packed, 4, 0, false),
            ("B1", 49, 2, Binary, 4, 0, true),
            ("B2", 51, 4, Binary, 5, 0, true),
            ("B3", 55, 8, Binary, 10, 0, false),
            ("B4", 63, 8, Binary, 18, 0, true),
            ("E1", 71, 10, Text, 0, 0, false),
            ("E2", 81, 9, Text, 0, 0, false),
            ("G1A", 90, 2, Packed, 3, 0, true),
            ("G1B", 92, 4, Packed, 6, 1, true),
            (
                "G2A",
                96,
                3,
                zoned(SignPosition::LeadingSeparate),
                2,
                0,
                true
            ),
        ]
    );
    assert_eq!(layout.record_length, 99);
}

#[test]
fn occurs_redefines_and_repeated_names() {
    let text = cb(&[
        "01 R.",
        "  05 N PIC 9.",
        "  05 AMT PIC S9(3) COMP-3 OCCURS 3 TIMES INDEXED BY AX.",
        "  05 ROW OCCURS 2 ASCENDING KEY IS CELL-ID.",
        "     10 CELL-ID PIC X.",
        "     10 CELL OCCURS 2 PIC 99.",
        "  05 DATE-N PIC 9(8).",
        "  05 DATE-X REDEFINES DATE-N.",
        "     10 YYYY PIC 9(4).",
        "     10 FILLER PIC X(4).",
        "  05 HEAD.",
        "     10 STAMP PIC X(2).",
        "  05 TAIL.",
        "     10 STAMP PIC X(2).",
    ]);
    let layout = Layout::from_copybook(&text).unwrap();
    let names: Vec<&str> = layout.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "N",
            "AMT",
            "CELL-ID",
            "CELL",
            "DATE-N",
            "YYYY",
            "HEAD.STAMP",
            "TAIL.STAMP"
        ]
    );
    let cell = &layout.fields[3];
    assert_eq!(cell.offset, 8);
    assert_eq!(
        cell.occurs
            .iter()
            .map(|o| (o.max, o.stride))
            .collect::<Vec<_>>(),
        [(2, 5), (2, 2)]
    );
    assert_eq!(layout.fields[5].offset, layout.fields[4].offset);
    assert_eq!(layout.fields[5].variants[0].group, "DATE-N");
    assert_eq!(layout.fields[5].variants[0].alternative, "DATE-X");
    assert_eq!(layout.record_length, 1 + 6 + 10 + 8 + 2 + 2);

    let d = RecordDecoder::new(&layout, ascii_ibm()).unwrap();
    let mut rec = b"3".to_vec();
    rec.extend_from_slice(&[0x00, 0x1C, 0x12, 0x3D, 0x99, 0x9C]);
    rec.extend_from_slice(b"A0102B0304");
    rec.extend_from_slice(b"20240131");
    rec.extend_from_slice(b"hdtl");
    let v = d.decode(&rec).unwrap();
    assert_eq!(
        v,
        [
            Value::Int(3),
            Value::Array(vec![Value::Int(1), Value::Int(-123), Value::Int(999)]),
            Value::Array(vec![s("A"), s("B")]),
            Value::Array(vec![
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
                Value::Array(vec![Value::Int(3), Value::Int(4)])
            ]),
            Value::Int(20240131),
            Value::Int(2024),
            s("hd"),
            s("tl"),
        ]
    );
    let columns = d.columns();
    assert_eq!(
        columns[3].column_type,
        ColumnType::Array(Box::new(ColumnType::Array(Box::new(ColumnType::Int))))
    );
    assert!(columns[4].nullable && columns[5].nullable && !columns[0].nullable);
    // The error in a nested element names its indexes.
    rec[10] = b'x';
    let e = d.decode(&rec).unwrap_err();
    assert_eq!(e.field, "CELL(1,2)");
    assert_eq!(e.offset, 10);
    assert!(e.to_string().contains("field CELL(1,2) at byte 10"), "{e}");
}

#[test]
fn copybook_errors_name_the_line() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "       01 R.\n           05 A PIC Q(3).\n",
            2,
            "unknown symbol `Q`",
        ),
        ("       01 R.\n           05 A.\n", 2, "needs a PICTURE"),
        (
            "       01 R.\n           05 A PIC X COMP-3.\n",
            2,
            "not numeric",
        ),
        (
            "       01 R.\n           05 A PIC S9(4) COMP-1.\n",
            2,
            "COMP-1 is not supported",
        ),
        (
            "       01 R.\n           05 A PIC X SYNC.\n",
            2,
            "SYNCHRONIZED",
        ),
        (
            "       01 R.\n\n           05 A PIC 9(3)P.\n",
            3,
            "scaling position P",
        ),
        (
            "       01 R.\n           05 A PIC 9(19) COMP.\n",
            2,
            "more than 18 digits",
        ),
        ("       01 R.\n           05 A PIC 9(39).\n", 2, "39 digits"),
        (
            "       01 R.\n           05 A PIC X.\n           05 B REDEFINES Q PIC X.\n",
            3,
            "REDEFINES `Q`",
        ),
        (
            "       01 R.\n           05 A PIC 9 OCCURS 1 TO 3.\n",
            2,
            "needs DEPENDING ON",
        ),
        (
            "       01 R.\n           05 T PIC X OCCURS 1 TO 3 DEPENDING ON NOPE.\n",
            2,
            "no such field",
        ),
        (
            "       01 R.\n           05 A PIC X VALUE 'open\n",
            2,
            "unterminated literal",
        ),
        ("       COPY OTHER.\n", 1, "COPY is not supported"),
        (
            "       01 R.\n           05 A PIC X(2) PIC X.\n           05 B BOGUS.\n",
            3,
            "unexpected word `BOGUS`",
        ),
        ("       01 R.\n      X    05 A PIC X.\n", 2, "column 7"),
    ];
    for (text, line, reason) in cases {
        match Layout::from_copybook(text) {
            Err(LayoutError::Copybook { line: l, reason: r }) => {
                assert_eq!(l, *line, "{text}: {r}");
                assert!(r.contains(reason), "{text}: `{r}` lacks `{reason}`");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn literal_continuation_lines() {
    let text = [
        "       01  R.",
        "           05  A   PIC X(40) VALUE 'A LONG LITERAL THAT GOES ON AND ON ",
        "      -    'AND ENDS HERE. REALLY.'.",
        "           05  B   PIC 9.",
    ]
    .join("\n");
    let layout = Layout::from_copybook(&text).unwrap();
    assert_eq!(layout.fields.len(), 2);
    assert_eq!(layout.fields[1].offset, 40);
}

// ------------------------------------------------------------------------------------------
// YAML layouts

const YAML: &str = r#"
encoding: cp037
sign_convention: ibm
fields:
  - {name: REC-TYPE, offset: 0, length: 1, type: text}
  - {name: ACCOUNT, offset: 1, length: 6, type: zoned}
  - {name: BALANCE, offset: 7, length: 4, type: packed, scale: 2, signed: true, variant: DETAIL}
  - {name: AMOUNT, offset: 11, length: 5, type: zoned, scale: 2, signed: true, sign: leading_separate, variant: DETAIL}
  - {name: COUNT, offset: 16, length: 2, type: binary}
  - {name: CODES, offset: 18, length: 2, type: text, occurs: 3, depending_on: COUNT, variant: DETAIL}
  - {name: BANK, offset: 7, length: 8, type: text, variant: HEADER}
selector: {field: REC-TYPE, cases: {"H": HEADER, "D": DETAIL}}
"#;

#[test]
fn yaml_layout_with_selector_occurs_and_ebcdic() {
    let layout = Layout::from_yaml(YAML).unwrap();
    assert_eq!(layout.record_length, 24);
    assert_eq!(layout.min_record_length(), 18);
    assert_eq!(layout.encoding, Some(Encoding::Cp037));
    let d = RecordDecoder::new(&layout, DecodeOptions::for_layout(&layout)).unwrap();
    let e = |t: &str| Encoding::Cp037.encode(t).unwrap();

    let mut detail = e("D000042");
    detail.extend_from_slice(&[0x00, 0x12, 0x34, 0x5D]);
    detail.extend(e("-0050"));
    detail.extend_from_slice(&[0x00, 0x02]);
    detail.extend(e("ABCD"));
    let v = d.decode(&detail).unwrap();
    assert_eq!(
        v,
        [
            s("D"),
            Value::Int(42),
            dec("-123.45"),
            dec("-0.50"),
            Value::Int(2),
            Value::Array(vec![s("AB"), s("CD")]),
            Value::Null
        ]
    );

    let mut header = e("H000001SYNCBANK ");
    header.extend_from_slice(&[0x00, 0x00]);
    let v = d.decode(&header).unwrap();
    assert_eq!(
        v,
        [
            s("H"),
            Value::Int(1),
            Value::Null,
            Value::Null,
            Value::Int(0),
            Value::Null,
            s("SYNCBANK")
        ]
    );

    let mut other = header.clone();
    other[0] = e("X")[0];
    let err = d.decode(&other).unwrap_err();
    assert_eq!(
        err.reason,
        FieldErrorKind::UnknownRecordType { value: "X".into() }
    );
    assert!(
        err.to_string().starts_with("field REC-TYPE at byte 0:"),
        "{err}"
    );
}

#[test]
fn yaml_errors_name_the_field() {
    let unknown = "fields:\n  - {name: A, offset: 0, length: 1, type: text, colour: red}\n";
    let err = Layout::from_yaml(unknown).unwrap_err().to_string();
    assert!(err.contains("colour"), "{err}");

    let bad_type = "fields:\n  - {name: A, offset: 0, length: 1, type: float}\n";
    let err = Layout::from_yaml(bad_type).unwrap_err().to_string();
    assert!(err.contains("float"), "{err}");

    let cases = [
        (
            "{name: P, offset: 0, length: 2, type: packed, digits: 4}",
            "fields[1] (P)",
            "holds 1 to 3 digits",
        ),
        (
            "{name: B, offset: 0, length: 3, type: binary}",
            "fields[1] (B)",
            "1, 2, 4 or 8 bytes",
        ),
        (
            "{name: Z, offset: 0, length: 3, type: zoned, scale: 4}",
            "fields[1] (Z)",
            "scale 4",
        ),
        (
            "{name: N, offset: 0, length: 0, type: text}",
            "fields[1] (N)",
            "the length is 0",
        ),
        (
            "{name: A, offset: 0, length: 3, type: text}",
            "fields[1] (A)",
            "used twice",
        ),
        (
            "{name: S, offset: 0, length: 3, type: text, sign: leading}",
            "fields[1] (S)",
            "zoned fields only",
        ),
        (
            "{name: O, offset: 0, length: 1, type: text, occurs: 2, depending_on: T}",
            "fields[1] (O)",
            "no such field",
        ),
    ];
    for (field, path, reason) in cases {
        let text =
            format!("fields:\n  - {{name: A, offset: 0, length: 1, type: text}}\n  - {field}\n");
        match Layout::from_yaml(&text) {
            Err(LayoutError::Field { path: p, reason: r }) => {
                assert_eq!(p, path);
                assert!(r.contains(reason), "`{r}` lacks `{reason}`");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    let sel = "fields:\n  - {name: A, offset: 0, length: 1, type: text}\nselector: {field: A, cases: {\"X\": NOPE}}\n";
    let err = Layout::from_yaml(sel).unwrap_err().to_string();
    assert!(err.contains("NOPE"), "{err}");
}

#[test]
fn load_chooses_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let cpy = dir.path().join("rec.cpy");
    std::fs::write(&cpy, cb(&["01 R.", "  05 A PIC X(3)."])).unwrap();
    assert_eq!(Layout::load(&cpy).unwrap().record_length, 3);
    let yml = dir.path().join("rec.yml");
    std::fs::write(
        &yml,
        "fields:\n  - {name: A, offset: 0, length: 4, type: text}\n",
    )
    .unwrap();
    assert_eq!(Layout::load(&yml).unwrap().record_length, 4);
    let txt = dir.path().join("rec.txt");
    std::fs::write(&txt, "").unwrap();
    assert!(matches!(
        Layout::load(&txt),
        Err(LayoutError::UnknownExtension { .. })
    ));
    assert!(matches!(
        Layout::load(dir.path().join("missing.cpy")),
        Err(LayoutError::Io { .. })
    ));
}

// ------------------------------------------------------------------------------------------
// Zoned decimal

fn zoned_decoder(pic: &str, o: DecodeOptions) -> RecordDecoder {
    decoder(&cb(&["01 R.", &format!("  05 V PIC {pic}.")]), o)
}

#[test]
fn zoned_ibm_overpunch_in_ascii() {
    let d = zoned_decoder("S9(3)V99", ascii_ibm());
    let positive = b"{ABCDEFGHI";
    let negative = b"}JKLMNOPQR";
    for digit in 0..10u8 {
        let mut rec = b"1234".to_vec();
        rec.push(positive[usize::from(digit)]);
        assert_eq!(d.decode(&rec).unwrap()[0], dec(&format!("123.4{digit}")));
        rec[4] = negative[usize::from(digit)];
        assert_eq!(d.decode(&rec).unwrap()[0], dec(&format!("-123.4{digit}")));
        // The other positive form: a plain digit.
        rec[4] = b'0' + digit;
        assert_eq!(d.decode(&rec).unwrap()[0], dec(&format!("123.4{digit}")));
    }
    // Micro Focus negatives are not IBM.
    let e = d.decode(b"1234p").unwrap_err();
    assert_eq!(e.reason, FieldErrorKind::BadSign { byte: b'p', at: 4 });
}

#[test]
fn zoned_micro_focus_in_ascii() {
    let d = zoned_decoder(
        "S9(3)V99",
        opts(Encoding::Ascii, SignConvention::MicroFocus),
    );
    for digit in 0..10u8 {
        let mut rec = b"0000".to_vec();
        rec.push(b'p' + digit);
        assert_eq!(d.decode(&rec).unwrap()[0], dec(&format!("-0.0{digit}")));
        rec[4] = b'0' + digit;
        assert_eq!(d.decode(&rec).unwrap()[0], dec(&format!("0.0{digit}")));
    }
    let e = d.decode(b"0000}").unwrap_err();
    assert_eq!(e.reason, FieldErrorKind::BadSign { byte: b'}', at: 4 });
}

#[test]
fn zoned_in_each_ebcdic_code_page() {
    for enc in [Encoding::Cp037, Encoding::Cp500, Encoding::Cp1047] {
        // Sign convention does not matter for EBCDIC.
        for conv in [SignConvention::Ibm, SignConvention::MicroFocus] {
            let d = zoned_decoder("S9(5)", opts(enc, conv));
            assert_eq!(
                d.decode(&[0xF1, 0xF2, 0xF3, 0xF4, 0xC5]).unwrap()[0],
                Value::Int(12345)
            );
            assert_eq!(
                d.decode(&[0xF1, 0xF2, 0xF3, 0xF4, 0xF5]).unwrap()[0],
                Value::Int(12345)
            );
            assert_eq!(
                d.decode(&[0xF0, 0xF0, 0xF0, 0xF0, 0xD7]).unwrap()[0],
                Value::Int(-7)
            );
            let e = d.decode(&[0xF0, 0xF0, 0xF0, 0xF0, 0xB7]).unwrap_err();
            assert_eq!(e.reason, FieldErrorKind::BadSign { byte: 0xB7, at: 4 });
            let e = d.decode(&[0xF0, 0x40, 0xF0, 0xF0, 0xC7]).unwrap_err();
            assert_eq!(e.reason, FieldErrorKind::NonDigit { byte: 0x40, at: 1 });
            // ASCII digits are not EBCDIC digits.
            assert!(d.decode(b"12345").is_err());
        }
        let lead = zoned_decoder(
            "S9(3) SIGN LEADING SEPARATE",
            opts(enc, SignConvention::Ibm),
        );
        assert_eq!(
            lead.decode(&[0x60, 0xF0, 0xF4, 0xF2]).unwrap()[0],
            Value::Int(-42)
        );
        assert_eq!(
            lead.decode(&[0x4E, 0xF0, 0xF4, 0xF2]).unwrap()[0],
            Value::Int(42)
        );
    }
}

#[test]
fn zoned_sign_positions() {
    let lead = zoned_decoder("S9(4)V9 SIGN LEADING", ascii_ibm());
    assert_eq!(lead.decode(b"J2345").unwrap()[0], dec("-1234.5"));
    assert_eq!(lead.decode(b"A2345").unwrap()[0], dec("1234.5"));
    let ts = zoned_decoder("S9(4) SIGN TRAILING SEPARATE", ascii_ibm());
    assert_eq!(ts.decode(b"0042-").unwrap()[0], Value::Int(-42));
    assert_eq!(ts.decode(b"0042+").unwrap()[0], Value::Int(42));
    let e = ts.decode(b"0042 ").unwrap_err();
    assert_eq!(e.reason, FieldErrorKind::BadSign { byte: b' ', at: 4 });
    assert_eq!(e.field, "V");
    let ls = zoned_decoder("SV9(5) SIGN LEADING SEPARATE", ascii_ibm());
    assert_eq!(ls.decode(b"-71051").unwrap()[0], dec("-0.71051"));
    let e = ls.decode(b"*71051").unwrap_err();
    assert_eq!(e.reason, FieldErrorKind::BadSign { byte: b'*', at: 0 });
}

#[test]
fn zoned_unsigned_and_wide() {
    let u = zoned_decoder("9(3)V9(2)", ascii_ibm());
    assert_eq!(u.decode(b"01250").unwrap()[0], dec("12.50"));
    // An overpunch in an unsigned field is not a digit.
    let e = u.decode(b"0125}").unwrap_err();
    assert_eq!(e.reason, FieldErrorKind::NonDigit { byte: b'}', at: 4 });
    let wide = zoned_decoder("S9(30)V9(8)", ascii_ibm());
    let mut rec = vec![b'9'; 37];
    rec.push(b'R');
    assert_eq!(
        wide.decode(&rec).unwrap()[0],
        dec("-999999999999999999999999999999.99999999")
    );
    let big_int = zoned_decoder("9(19)", ascii_ibm());
    assert_eq!(
        big_int.columns()[0].column_type,
        ColumnType::Decimal {
            precision: 19,
            scale: 0
        }
    );
    assert_eq!(
        big_int.decode(b"9999999999999999999").unwrap()[0],
        dec("9999999999999999999")
    );
}

#[test]
fn zoned_error_names_field_and_offset() {
    let d = decoder(
        &cb(&["01 R.", "  05 PAD PIC X(3).", "  05 AMOUNT PIC S9(4)."]),
        ascii_ibm(),
    );
    let e = d.decode(b"abc12x4").unwrap_err();
    assert_eq!(e.field, "AMOUNT");
    assert_eq!(e.offset, 3);
    assert_eq!(e.reason, FieldErrorKind::NonDigit { byte: b'x', at: 5 });
    assert_eq!(
        e.to_string(),
        "field AMOUNT at byte 3: byte 0x78 at byte 5 is not a digit"
    );
}

// ------------------------------------------------------------------------------------------
// Packed decimal

#[test]
fn packed_values_and_errors() {
    let d = decoder(
        &cb(&["01 R.", "  05 PAD PIC X.", "  05 P PIC S9(5)V99 COMP-3."]),
        ascii_ibm(),
    );
    assert_eq!(
        d.decode(&[b' ', 0x12, 0x34, 0x56, 0x7C]).unwrap()[1],
        dec("12345.67")
    );
    assert_eq!(
        d.decode(&[b' ', 0x12, 0x34, 0x56, 0x7D]).unwrap()[1],
        dec("-12345.67")
    );
    assert_eq!(
        d.decode(&[b' ', 0x00, 0x00, 0x00, 0x0F]).unwrap()[1],
        dec("0.00")
    );
    let e = d.decode(&[b' ', 0x12, 0x3A, 0x56, 0x7C]).unwrap_err();
    assert_eq!((e.field.as_str(), e.offset), ("P", 1));
    assert_eq!(
        e.reason,
        FieldErrorKind::BadPackedNibble { nibble: 0xA, at: 2 }
    );
    assert!(
        e.to_string()
            .contains("field P at byte 1: bad packed-decimal digit nibble 0xA at byte 2")
    );
    let e = d.decode(&[b' ', 0xF2, 0x34, 0x56, 0x7C]).unwrap_err();
    assert_eq!(
        e.reason,
        FieldErrorKind::BadPackedNibble { nibble: 0xF, at: 1 }
    );
    let e = d.decode(&[b' ', 0x12, 0x34, 0x56, 0x7B]).unwrap_err();
    assert_eq!(e.reason, FieldErrorKind::BadSign { byte: 0x7B, at: 4 });
    let e = d.decode(&[b' ', 0x12, 0x34, 0x56, 0x77]).unwrap_err();
    assert_eq!(e.reason, FieldErrorKind::BadSign { byte: 0x77, at: 4 });

    let u = decoder(&cb(&["01 R.", "  05 U PIC 9(4) COMP-3."]), ascii_ibm());
    assert_eq!(u.decode(&[0x01, 0x23, 0x4F]).unwrap()[0], Value::Int(1234));
    assert_eq!(u.decode(&[0x01, 0x23, 0x4C]).unwrap()[0], Value::Int(1234));
    let e = u.decode(&[0x01, 0x23, 0x4D]).unwrap_err();
    assert_eq!(
        e.reason,
        FieldErrorKind::NegativeUnsigned { byte: 0x4D, at: 2 }
    );

    let wide = decoder(
        &cb(&["01 R.", "  05 W PIC S9(31)V9(6) COMP-3."]),
        ascii_ibm(),
    );
    let mut rec = vec![0x99; 18];
    rec.push(0x9D);
    assert_eq!(
        wide.decode(&rec).unwrap()[0],
        dec("-9999999999999999999999999999999.999999")
    );
}

// ------------------------------------------------------------------------------------------
// Binary

#[test]
fn binary_sizes_signs_and_scale() {
    let d = decoder(
        &cb(&[
            "01 R.",
            "  05 H PIC S9(4) COMP.",
            "  05 UH PIC 9(4) COMP.",
            "  05 F PIC S9(9) BINARY.",
            "  05 D PIC S9(18) COMP-4.",
            "  05 UD PIC 9(18) COMP-5.",
            "  05 SC PIC S9(5)V99 COMP.",
        ]),
        ascii_ibm(),
    );
    let mut rec = Vec::new();
    rec.extend_from_slice(&(-2i16).to_be_bytes());
    rec.extend_from_slice(&65535u16.to_be_bytes());
    rec.extend_from_slice(&(-123_456_789i32).to_be_bytes());
    rec.extend_from_slice(&i64::MIN.to_be_bytes());
    rec.extend_from_slice(&(i64::MAX as u64).to_be_bytes());
    rec.extend_from_slice(&(-1_234_567i32).to_be_bytes());
    let v = d.decode(&rec).unwrap();
    assert_eq!(
        v,
        [
            Value::Int(-2),
            Value::Int(65535),
            Value::Int(-123_456_789),
            Value::Int(i64::MIN),
            Value::Int(i64::MAX),
            dec("-12345.67")
        ]
    );
    assert_eq!(
        d.columns()[5].column_type,
        ColumnType::Decimal {
            precision: 10,
            scale: 2
        }
    );
    // An unsigned 8-byte value beyond i64.
    rec[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    let e = d.decode(&rec).unwrap_err();
    assert_eq!((e.field.as_str(), e.offset), ("UD", 16));
    assert_eq!(e.reason, FieldErrorKind::Overflow { value: u64::MAX });
}

// ------------------------------------------------------------------------------------------
// Text

#[test]
fn text_trimmed_on_the_right_in_every_encoding() {
    let layout = Layout::from_copybook(&cb(&["01 R.", "  05 T PIC X(8)."])).unwrap();
    for enc in Encoding::ALL {
        let d = RecordDecoder::new(&layout, opts(enc, SignConvention::Ibm)).unwrap();
        let mut rec = enc.encode("  a[b]  ").unwrap();
        assert_eq!(d.decode(&rec).unwrap()[0], s("  a[b]"), "{enc}");
        rec[6] = 0;
        rec[7] = 0;
        assert_eq!(
            d.decode(&rec).unwrap()[0],
            s("  a[b]"),
            "{enc}: NULs trimmed"
        );
    }
    let d = RecordDecoder::new(&layout, ascii_ibm()).unwrap();
    let e = d.decode(b"ab\xFFcdefg").unwrap_err();
    assert_eq!(e.reason, FieldErrorKind::InvalidText { at: 2 });
    let d = RecordDecoder::new(&layout, opts(Encoding::Latin1, SignConvention::Ibm)).unwrap();
    assert_eq!(d.decode(b"M\xFCller  ").unwrap()[0], s("Müller"));
}

#[test]
fn brackets_differ_between_code_pages() {
    let layout = Layout::from_copybook(&cb(&["01 R.", "  05 T PIC X(2)."])).unwrap();
    let decode = |enc, bytes: &[u8]| {
        RecordDecoder::new(&layout, opts(enc, SignConvention::Ibm))
            .unwrap()
            .decode(bytes)
            .unwrap()[0]
            .clone()
    };
    assert_eq!(decode(Encoding::Cp037, &[0xBA, 0xBB]), s("[]"));
    assert_eq!(decode(Encoding::Cp500, &[0x4A, 0x5A]), s("[]"));
    assert_eq!(decode(Encoding::Cp1047, &[0xAD, 0xBD]), s("[]"));
}

// ------------------------------------------------------------------------------------------
// OCCURS DEPENDING ON

#[test]
fn occurs_depending_on_moves_the_fields_after_the_table() {
    let text = cb(&[
        "01 R.",
        "  05 CNT PIC 9.",
        "  05 ITEM OCCURS 1 TO 3 TIMES DEPENDING ON CNT.",
        "     10 CODE PIC X.",
        "     10 QTY PIC 9.",
        "  05 TRAILER PIC X(2).",
    ]);
    let layout = Layout::from_copybook(&text).unwrap();
    assert_eq!((layout.record_length, layout.min_record_length()), (9, 5));
    let d = RecordDecoder::new(&layout, ascii_ibm()).unwrap();
    assert_eq!(
        d.decode(b"2a1b2ZZ").unwrap(),
        [
            Value::Int(2),
            Value::Array(vec![s("a"), s("b")]),
            Value::Array(vec![Value::Int(1), Value::Int(2)]),
            s("ZZ")
        ]
    );
    assert_eq!(d.decode(b"3a1b2c3ZZ").unwrap()[3], s("ZZ"));
    let e = d.decode(b"4a1b2c3d4ZZ").unwrap_err();
    assert_eq!((e.field.as_str(), e.offset), ("CNT", 0));
    assert_eq!(
        e.reason,
        FieldErrorKind::OccursOutOfRange {
            counter: "CNT".into(),
            count: 4,
            min: 1,
            max: 3
        }
    );
    assert!(
        e.to_string()
            .contains("OCCURS DEPENDING ON CNT = 4 is outside 1 to 3"),
        "{e}"
    );
    assert!(d.decode(b"0ZZ").is_err());
    // A record cut inside the table.
    let e = d.decode(b"3a1b").unwrap_err();
    assert_eq!(e.field, "CODE(3)");
    assert_eq!(
        e.reason,
        FieldErrorKind::ShortRecord {
            needed: 6,
            actual: 4
        }
    );
}

#[test]
fn short_records() {
    let d = decoder(
        &cb(&["01 R.", "  05 N PIC 9(3).", "  05 T PIC X(5)."]),
        ascii_ibm(),
    );
    let e = d.decode(b"12").unwrap_err();
    assert_eq!((e.field.as_str(), e.offset), ("N", 0));
    assert_eq!(
        e.reason,
        FieldErrorKind::ShortRecord {
            needed: 3,
            actual: 2
        }
    );
    assert!(e.to_string().contains("short record"));
    let e = d.decode(b"123ab").unwrap_err();
    assert_eq!((e.field.as_str(), e.offset), ("T", 3));
    let mut o = ascii_ibm();
    o.allow_short_text = true;
    let lenient = decoder(&cb(&["01 R.", "  05 N PIC 9(3).", "  05 T PIC X(5)."]), o);
    assert_eq!(lenient.decode(b"123ab").unwrap()[1], s("ab"));
    assert_eq!(lenient.decode(b"123").unwrap()[1], s(""));
    assert!(lenient.decode(b"12").is_err(), "numbers are never short");
}

// ------------------------------------------------------------------------------------------
// Selector on copybooks

#[test]
fn several_01_records_with_a_selector() {
    let text = cb(&[
        "01 HDR.",
        "  05 HDR-TYPE PIC X.",
        "  05 HDR-DATE PIC 9(8).",
        "01 DTL.",
        "  05 DTL-TYPE PIC X.",
        "  05 DTL-AMT PIC S9(7)V99.",
    ]);
    let layout = Layout::from_copybook(&text).unwrap();
    assert_eq!(layout.record_length, 10);
    // Without a selector, both views are decoded (and must both be valid).
    let all = RecordDecoder::new(&layout, ascii_ibm()).unwrap();
    assert!(all.decode(b"H20240101 ").is_err());
    let sel = RecordSelector::from_yaml("field: HDR-TYPE\ncases: {H: HDR, D: DTL}\n").unwrap();
    let layout = layout.with_selector(sel).unwrap();
    let d = RecordDecoder::new(&layout, ascii_ibm()).unwrap();
    assert_eq!(
        d.decode(b"H20240101 ").unwrap(),
        [s("H"), Value::Int(20240101), Value::Null, Value::Null]
    );
    assert_eq!(
        d.decode(b"D00123456J").unwrap(),
        [Value::Null, Value::Null, s("D"), dec("-12345.61")]
    );
    let bad = RecordSelector::from_yaml("field: NOPE\ncases: {H: HDR}\n").unwrap();
    let layout = Layout::from_copybook(&text).unwrap();
    assert!(matches!(
        layout.with_selector(bad),
        Err(LayoutError::Selector(_))
    ));
}

// ------------------------------------------------------------------------------------------
// JSON

#[test]
fn json_rendering_rules() {
    let text = cb(&[
        "01 R.",
        "  05 ID PIC 9(6).",
        "  05 FILLER PIC X(2).",
        "  05 BAL PIC S9(9)V99.",
        "  05 RATE PIC SV9(5).",
        "  05 RATE2 PIC V9(5).",
        "  05 BIG PIC 9(20).",
        "  05 NAME PIC X(4).",
        "  05 Q PIC 99 OCCURS 2.",
    ]);
    let d = decoder(&text, ascii_ibm());
    let record = |bal: &str, rate: &str, big: &str| {
        ["000042", "xx", bal, rate, "41567", big, "Bob ", "0102"]
            .concat()
            .into_bytes()
    };
    let v = d
        .decode(&record("4990459783R", "7105A", "12345678901234567890"))
        .unwrap();
    let json = record_to_json(&d.columns(), &v);
    assert_eq!(
        serde_json::Value::Object(json),
        serde_json::json!({
            "ID": 42,
            "BAL": "-499045978.39",
            "RATE": "0.71051",
            "RATE2": "0.41567",
            "BIG": 12345678901234567890u64,
            "NAME": "Bob",
            "Q": [1, 2]
        })
    );
    let v = d
        .decode(&record("4990459783R", "7105J", "00000000000000000001"))
        .unwrap();
    let json = record_to_json(&d.columns(), &v);
    assert_eq!(json["RATE"], "-0.71051");
    assert_eq!(json["BIG"], 1);
    // Beyond what a JSON number holds exactly in serde_json: a string of the digits.
    let v = d
        .decode(&record("4990459783R", "7105J", "99999999999999999999"))
        .unwrap();
    let json = record_to_json(&d.columns(), &v);
    assert_eq!(json["BIG"], "99999999999999999999");
}

// ------------------------------------------------------------------------------------------
// Framing

/// (offset, number, bytes) of each record, and the error that ended the reading.
type Collected = (Vec<(u64, u64, Vec<u8>)>, Option<ReadError>);

fn collect<R: std::io::Read>(mut r: RecordReader<R>) -> Collected {
    let mut out = Vec::new();
    loop {
        match r.next_record() {
            Ok(Some(rec)) => out.push((rec.offset, rec.number, rec.data.to_vec())),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// `collect` through `next_block`: each block cut into its records, whose positions must
/// follow one another (a record's framed length leads to the next one's offset).
fn collect_blocks<R: std::io::Read>(mut r: RecordReader<R>) -> Collected {
    let mut out: Vec<(u64, u64, Vec<u8>)> = Vec::new();
    let mut next: Option<(u64, u64)> = None;
    loop {
        match r.next_block() {
            Ok(Some(b)) => {
                assert!(b.records >= 1);
                assert_eq!(b.data.len() as u64, b.records * b.record_length as u64);
                let records: Vec<&[u8]> = if b.record_length == 0 {
                    vec![b.data]
                } else {
                    b.data.chunks(b.record_length).collect()
                };
                assert_eq!(records.len() as u64, b.records);
                for (i, data) in records.into_iter().enumerate() {
                    let (offset, number) = b.position_of(i);
                    if let Some(want) = next {
                        assert_eq!((offset, number), want, "positions follow on");
                    }
                    next = Some((offset + b.framed_length, number + 1));
                    out.push((offset, number, data.to_vec()));
                }
                assert_eq!(Some(r.position()), next);
            }
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

#[test]
fn blocks_frame_exactly_as_records_do() {
    let fixed: Vec<u8> = (0..3_000u32)
        .flat_map(|i| format!("{i:07}").into_bytes())
        .chain(*b"123")
        .collect();
    let lines: Vec<u8> = (0..2_000u32)
        .flat_map(|i| format!("{i:05}{}", if i % 2 == 0 { "\n" } else { "\r\n" }).into_bytes())
        .collect();
    let mut rdws = Vec::new();
    for i in 0..500usize {
        rdws.extend(rdw(&vec![b'x'; i % 37]));
    }
    let mut bad_rdw = rdws.clone();
    bad_rdw.extend_from_slice(&[0x00, 0x08, 0x01, 0x00, 1, 2, 3, 4]);
    let cases: [(&[u8], RecordFormat, usize); 5] = [
        (&fixed, RecordFormat::Fixed, 7),
        (&fixed[..21_000], RecordFormat::Fixed, 7),
        (&lines, RecordFormat::Lines, 5),
        (&rdws, RecordFormat::Rdw, 0),
        (&bad_rdw, RecordFormat::Rdw, 0),
    ];
    for (data, format, length) in cases {
        for (chunk, buffer) in [
            (1, 7),
            (3, 16),
            (5000, 14),
            (7, 1 << 20),
            (1 << 20, 1 << 20),
        ] {
            let reader =
                || RecordReader::with_buffer(Trickle(data, chunk), format, length, 0, 1, buffer);
            let (want, want_err) = collect(reader());
            let (got, got_err) = collect_blocks(reader());
            assert_eq!(got, want, "{format:?} {chunk} {buffer}");
            assert_eq!(
                got_err.map(|e| e.to_string()),
                want_err.map(|e| e.to_string()),
                "{format:?} {chunk} {buffer}"
            );
        }
    }
}

/// A reader that hands out at most `n` bytes a call, to cross every buffer boundary.
struct Trickle<'a>(&'a [u8], usize);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.1.min(buf.len()).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn fixed_records_and_a_short_final_record() {
    let data = b"AAAABBBBCCCCDD";
    let (recs, err) = collect(RecordReader::new(&data[..], RecordFormat::Fixed, 4));
    assert_eq!(
        recs,
        [
            (0, 1, b"AAAA".to_vec()),
            (4, 2, b"BBBB".to_vec()),
            (8, 3, b"CCCC".to_vec())
        ]
    );
    let err = err.unwrap();
    assert!(matches!(
        err,
        ReadError::ShortRecord {
            offset: 12,
            number: 4,
            expected: 4,
            actual: 2
        }
    ));
    assert_eq!(err.offset(), 12);
    assert!(err.to_string().contains("at byte 12"), "{err}");
    // Resume from the second record.
    let (recs, err) = collect(RecordReader::resume(
        &data[4..12],
        RecordFormat::Fixed,
        4,
        4,
        2,
    ));
    assert_eq!(recs, [(4, 2, b"BBBB".to_vec()), (8, 3, b"CCCC".to_vec())]);
    assert!(err.is_none());
}

#[test]
fn framing_survives_tiny_reads_and_small_buffers() {
    let data: Vec<u8> = (0..10_000u32)
        .flat_map(|i| format!("{i:07}").into_bytes())
        .collect();
    for (chunk, buffer) in [(1, 7), (3, 16), (5000, 14), (7, 1 << 20)] {
        let r =
            RecordReader::with_buffer(Trickle(&data, chunk), RecordFormat::Fixed, 7, 0, 1, buffer);
        let (recs, err) = collect(r);
        assert!(err.is_none());
        assert_eq!(recs.len(), 10_000);
        assert_eq!(recs[9_999], (69_993, 10_000, b"0009999".to_vec()));
    }
    let lines: Vec<u8> = (0..5_000u32)
        .flat_map(|i| format!("{i:05}{}", if i % 2 == 0 { "\n" } else { "\r\n" }).into_bytes())
        .collect();
    for chunk in [1, 2, 9, 100_000] {
        let r = RecordReader::with_buffer(Trickle(&lines, chunk), RecordFormat::Lines, 5, 0, 1, 8);
        let (recs, err) = collect(r);
        assert!(err.is_none());
        assert_eq!(recs.len(), 5_000);
        assert!(
            recs.iter()
                .enumerate()
                .all(|(i, r)| r.2 == format!("{i:05}").into_bytes())
        );
        assert_eq!(recs[3].0, 6 + 7 + 6);
    }
}

#[test]
fn lines_framing() {
    let data = b"ab\ncd\r\n\nef";
    let (recs, err) = collect(RecordReader::new(&data[..], RecordFormat::Lines, 2));
    assert!(err.is_none());
    assert_eq!(
        recs,
        [
            (0, 1, b"ab".to_vec()),
            (3, 2, b"cd".to_vec()),
            (7, 3, b"".to_vec()),
            (8, 4, b"ef".to_vec())
        ]
    );
    let (recs, _) = collect(RecordReader::new(&b"ab\n"[..], RecordFormat::Lines, 2));
    assert_eq!(recs.len(), 1);
}

fn rdw(body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 4) as u16).to_be_bytes().to_vec();
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(body);
    v
}

#[test]
fn rdw_framing_and_its_errors() {
    let mut data = rdw(b"hello");
    data.extend(rdw(b""));
    data.extend(rdw(&[7u8; 300]));
    let (recs, err) = collect(RecordReader::new(&data[..], RecordFormat::Rdw, 0));
    assert!(err.is_none());
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0], (0, 1, b"hello".to_vec()));
    assert_eq!(recs[1], (9, 2, Vec::new()));
    assert_eq!((recs[2].0, recs[2].2.len()), (13, 300));

    let mut bad = rdw(b"ok");
    bad.extend_from_slice(&[0x00, 0x08, 0x01, 0x00, 1, 2, 3, 4]);
    let (recs, err) = collect(RecordReader::new(&bad[..], RecordFormat::Rdw, 0));
    assert_eq!(recs.len(), 1);
    let err = err.unwrap();
    assert!(
        matches!(
            err,
            ReadError::BadRdw {
                offset: 6,
                number: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("spanned"), "{err}");

    let (_, err) = collect(RecordReader::new(
        &[0x00, 0x02, 0, 0][..],
        RecordFormat::Rdw,
        0,
    ));
    assert!(
        err.unwrap()
            .to_string()
            .contains("less than the 4 RDW bytes")
    );

    let mut cut = rdw(b"hello");
    cut.truncate(7);
    let (_, err) = collect(RecordReader::new(&cut[..], RecordFormat::Rdw, 0));
    assert!(matches!(
        err,
        Some(ReadError::ShortRecord {
            offset: 0,
            expected: 5,
            actual: 3,
            ..
        })
    ));
    let (_, err) = collect(RecordReader::new(&[0x00][..], RecordFormat::Rdw, 0));
    assert!(matches!(
        err,
        Some(ReadError::ShortRecord {
            offset: 0,
            actual: 1,
            ..
        })
    ));
}

#[test]
fn io_errors_carry_the_offset() {
    struct Failing(usize);
    impl std::io::Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = self.0.min(buf.len());
            buf[..n].fill(b'x');
            self.0 -= n;
            Ok(n)
        }
    }
    let (recs, err) = collect(RecordReader::new(Failing(10), RecordFormat::Fixed, 4));
    assert_eq!(recs.len(), 2);
    let err = err.unwrap();
    assert!(matches!(err, ReadError::Io { .. }));
    assert!(err.to_string().contains("disk on fire"));
}

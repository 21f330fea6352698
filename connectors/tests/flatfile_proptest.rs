//! Property tests: values encoded by small independent encoders (written here, from the
//! format definitions) decode back to themselves, for zoned (every sign position, both ASCII
//! conventions, EBCDIC), packed and binary fields of every size.

use proptest::prelude::*;
use syncmesh_connectors::event::{Decimal, Value};
use syncmesh_connectors::sources::flatfile::{
    DecodeOptions, Encoding, Field, FieldKind, Layout, RecordDecoder, SignConvention, SignPosition,
};

fn layout_of(kind: FieldKind, length: usize, digits: u8, scale: u8, signed: bool) -> Layout {
    Layout {
        record_length: length + 2,
        fields: vec![Field {
            name: "V".into(),
            // One byte of padding in front, so offsets are not all 0.
            offset: 1,
            length,
            kind,
            digits,
            scale,
            signed,
            occurs: vec![],
            variants: vec![],
            encoding: None,
        }],
        selector: None,
        encoding: None,
        sign_convention: None,
    }
}

fn expected(unscaled: i128, digits: u8, scale: u8, binary: bool) -> Value {
    if scale == 0 && (binary || digits <= 18) {
        Value::Int(i64::try_from(unscaled).unwrap())
    } else {
        Value::Decimal(Decimal::new(unscaled, scale))
    }
}

fn digit_byte(enc: Encoding, d: u8) -> u8 {
    if enc.is_ebcdic() { 0xF0 + d } else { b'0' + d }
}

/// Zoned encoder: digits, and the sign where `sign` puts it.
fn encode_zoned(
    unscaled: i128,
    digits: u8,
    signed: bool,
    sign: SignPosition,
    enc: Encoding,
    conv: SignConvention,
    plain_positive: bool,
) -> Vec<u8> {
    let neg = unscaled < 0;
    let text = format!(
        "{:0width$}",
        unscaled.unsigned_abs(),
        width = usize::from(digits)
    );
    let mut body: Vec<u8> = text.bytes().map(|b| digit_byte(enc, b - b'0')).collect();
    if !signed {
        return body;
    }
    let punch = |d: u8| -> u8 {
        if enc.is_ebcdic() {
            if neg {
                0xD0 + d
            } else if plain_positive {
                0xF0 + d
            } else {
                0xC0 + d
            }
        } else {
            match (conv, neg) {
                (_, false) if plain_positive => b'0' + d,
                (SignConvention::Ibm, false) => b"{ABCDEFGHI"[usize::from(d)],
                (SignConvention::Ibm, true) => b"}JKLMNOPQR"[usize::from(d)],
                (SignConvention::MicroFocus, false) => b'0' + d,
                (SignConvention::MicroFocus, true) => b'p' + d,
            }
        }
    };
    let (plus, minus) = if enc.is_ebcdic() {
        (0x4E, 0x60)
    } else {
        (b'+', b'-')
    };
    let digit_of = |b: u8| b & 0x0F;
    match sign {
        SignPosition::Trailing => {
            let last = body.len() - 1;
            body[last] = punch(digit_of(body[last]));
        }
        SignPosition::Leading => body[0] = punch(digit_of(body[0])),
        SignPosition::TrailingSeparate => body.push(if neg { minus } else { plus }),
        SignPosition::LeadingSeparate => body.insert(0, if neg { minus } else { plus }),
    }
    body
}

fn encode_packed(unscaled: i128, digits: u8, signed: bool, sign_f: bool) -> Vec<u8> {
    let len = usize::from(digits) / 2 + 1;
    let mut nibbles: Vec<u8> = format!("{:0width$}", unscaled.unsigned_abs(), width = len * 2 - 1)
        .bytes()
        .map(|b| b - b'0')
        .collect();
    nibbles.push(match (signed, unscaled < 0, sign_f) {
        (_, true, _) => 0xD,
        (false, _, _) | (_, _, true) => 0xF,
        _ => 0xC,
    });
    nibbles.chunks(2).map(|p| (p[0] << 4) | p[1]).collect()
}

fn max_unscaled(digits: u8) -> i128 {
    10i128.pow(u32::from(digits)) - 1
}

fn encodings() -> impl Strategy<Value = (Encoding, SignConvention)> {
    prop_oneof![
        Just((Encoding::Ascii, SignConvention::Ibm)),
        Just((Encoding::Ascii, SignConvention::MicroFocus)),
        Just((Encoding::Latin1, SignConvention::Ibm)),
        Just((Encoding::Cp037, SignConvention::Ibm)),
        Just((Encoding::Cp500, SignConvention::Ibm)),
        Just((Encoding::Cp1047, SignConvention::MicroFocus)),
    ]
}

fn sign_positions() -> impl Strategy<Value = SignPosition> {
    prop_oneof![
        Just(SignPosition::Trailing),
        Just(SignPosition::Leading),
        Just(SignPosition::TrailingSeparate),
        Just(SignPosition::LeadingSeparate),
    ]
}

/// (digits, scale, unscaled value within the digits).
fn numbers(max_digits: u8) -> impl Strategy<Value = (u8, u8, i128)> {
    (1..=max_digits).prop_flat_map(|digits| {
        let max = max_unscaled(digits);
        (
            Just(digits),
            0..=digits,
            prop_oneof![Just(0), Just(max), Just(-max), -max..=max],
        )
    })
}

fn record(body: &[u8], pad: u8) -> Vec<u8> {
    let mut r = vec![pad];
    r.extend_from_slice(body);
    r.push(pad);
    r
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn zoned_round_trip(
        (digits, scale, value) in numbers(38),
        signed in any::<bool>(),
        sign in sign_positions(),
        (enc, conv) in encodings(),
        plain_positive in any::<bool>(),
    ) {
        let value = if signed { value } else { value.abs() };
        let body = encode_zoned(value, digits, signed, sign, enc, conv, plain_positive);
        let len = body.len();
        let layout = layout_of(FieldKind::Zoned { sign }, len, digits, scale, signed);
        let d = RecordDecoder::new(&layout, DecodeOptions { encoding: enc, sign_convention: conv, ..Default::default() }).unwrap();
        let got = d.decode(&record(&body, enc.space())).unwrap();
        prop_assert_eq!(&got[0], &expected(value, digits, scale, false));
    }

    #[test]
    fn packed_round_trip(
        (digits, scale, value) in numbers(38),
        signed in any::<bool>(),
        sign_f in any::<bool>(),
    ) {
        let value = if signed { value } else { value.abs() };
        let body = encode_packed(value, digits, signed, sign_f);
        let layout = layout_of(FieldKind::Packed, body.len(), digits, scale, signed);
        let d = RecordDecoder::new(&layout, DecodeOptions::default()).unwrap();
        let got = d.decode(&record(&body, 0x40)).unwrap();
        prop_assert_eq!(&got[0], &expected(value, digits, scale, false));
    }

    #[test]
    fn binary_round_trip(
        len in prop_oneof![Just(1usize), Just(2), Just(4), Just(8)],
        signed in any::<bool>(),
        raw in any::<i64>(),
        scale in 0u8..=4,
    ) {
        let (value, body): (i128, Vec<u8>) = match (len, signed) {
            (1, true) => (i128::from(raw as i8), (raw as i8).to_be_bytes().to_vec()),
            (1, false) => (i128::from(raw as u8), (raw as u8).to_be_bytes().to_vec()),
            (2, true) => (i128::from(raw as i16), (raw as i16).to_be_bytes().to_vec()),
            (2, false) => (i128::from(raw as u16), (raw as u16).to_be_bytes().to_vec()),
            (4, true) => (i128::from(raw as i32), (raw as i32).to_be_bytes().to_vec()),
            (4, false) => (i128::from(raw as u32), (raw as u32).to_be_bytes().to_vec()),
            (8, true) => (i128::from(raw), raw.to_be_bytes().to_vec()),
            _ => (i128::from(raw as u64), (raw as u64).to_be_bytes().to_vec()),
        };
        let digits = match len { 1 => 2, 2 => 4, 4 => 9, _ => 18 };
        let scale = scale.min(digits);
        let layout = layout_of(FieldKind::Binary, len, digits, scale, signed);
        let d = RecordDecoder::new(&layout, DecodeOptions::default()).unwrap();
        let got = d.decode(&record(&body, 0));
        if scale == 0 && value > i128::from(i64::MAX) {
            prop_assert!(got.is_err(), "u64 beyond i64 is an overflow error");
        } else {
            prop_assert_eq!(&got.unwrap()[0], &expected(value, digits, scale, true));
        }
    }

    /// Arbitrary bytes never panic the decoder: every field either decodes or errors.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        (enc, conv) in encodings(),
    ) {
        let layout = Layout::from_copybook(
            "       01 R.\n           05 N PIC 9.\n           05 T PIC X(3).\n           05 Z PIC S9(5)V99.\n           05 P PIC S9(7) COMP-3.\n           05 B PIC S9(9) COMP.\n           05 L PIC S9(3) SIGN LEADING SEPARATE.\n           05 O PIC 9 OCCURS 0 TO 9 DEPENDING ON N.\n",
        ).unwrap();
        let d = RecordDecoder::new(&layout, DecodeOptions { encoding: enc, sign_convention: conv, allow_short_text: true }).unwrap();
        let _ = d.decode(&bytes);
    }
}

//! Byte work on 16 bytes at once for the compiled decode: SSE2 on x86_64 (which every x86_64
//! has, so no detection is needed), 8-byte words elsewhere. [`Lanes`] holds what a record's
//! decode repeats: the zone of digits and the space of text, spread over every byte.

/// The per-decoder constants of the 16-byte operations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lanes {
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    zone: u8,
    space: u8,
    /// `zone` in every byte of a word.
    zones: u64,
    #[cfg(target_arch = "x86_64")]
    sse: sse::Consts,
}

impl Lanes {
    /// For digits in zone `zone` (0x30 ASCII, 0xF0 EBCDIC) and text padded with `space` (a
    /// single-bit byte: 0x20 or 0x40).
    #[inline(always)]
    pub(crate) fn new(zone: u8, space: u8) -> Self {
        Self {
            zone,
            space,
            zones: u64::from(zone) * 0x0101_0101_0101_0101,
            #[cfg(target_arch = "x86_64")]
            sse: sse::Consts::new(zone, space),
        }
    }

    pub(crate) fn zones(&self) -> u64 {
        self.zones
    }

    pub(crate) fn space(&self) -> u8 {
        self.space
    }

    /// Bit `i` set when byte `i` is one a right trim drops: the space or NUL.
    #[inline(always)]
    pub(crate) fn trimmable(&self, bytes: &[u8; 16]) -> u16 {
        #[cfg(target_arch = "x86_64")]
        {
            self.sse.trimmable(bytes)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            words::trimmable(bytes, !self.space)
        }
    }

    /// The number written by the bytes of `bytes` under `keep` (0xFF for a digit, 0 for a
    /// byte that reads as a leading zero), the last byte the units; `None` if one of those
    /// bytes is not a digit of the zone.
    #[inline(always)]
    pub(crate) fn digits16(&self, bytes: &[u8; 16], keep: &[u8; 16]) -> Option<u64> {
        #[cfg(target_arch = "x86_64")]
        {
            self.sse
                .digits16(safe_arch::load_unaligned_m128i(bytes), keep)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            words::digits16(bytes, keep, self.zone)
        }
    }

    /// [`Lanes::digits16`] of 16 bytes held as a little-endian `u128` (kept in registers: a
    /// 16-byte load of two 8-byte stores would stall on store forwarding).
    #[inline(always)]
    pub(crate) fn digits16_word(&self, word: u128, keep: &[u8; 16]) -> Option<u64> {
        #[cfg(target_arch = "x86_64")]
        {
            let lanes = safe_arch::set_i64_m128i((word >> 64) as i64, word as i64);
            self.sse.digits16(lanes, keep)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            words::digits16(&word.to_le_bytes(), keep, self.zone)
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod sse {
    use safe_arch::{
        add_i16_m128i, bitand_m128i, bitxor_m128i, cmp_eq_mask_i8_m128i, get_i64_from_m128i_s,
        load_unaligned_m128i, m128i, max_u8_m128i, move_mask_i8_m128i,
        mul_i16_horizontal_add_m128i, mul_i16_keep_low_m128i, pack_i32_to_i16_m128i,
        set_splat_i8_m128i, set_splat_i16_m128i, set_splat_i32_m128i, shr_imm_u16_m128i,
        zeroed_m128i,
    };

    #[derive(Debug, Clone, Copy)]
    pub(super) struct Consts {
        clear: m128i,
        zones: m128i,
    }

    impl Consts {
        #[inline(always)]
        pub(super) fn new(zone: u8, space: u8) -> Self {
            Self {
                clear: set_splat_i8_m128i(!space as i8),
                zones: set_splat_i8_m128i(zone as i8),
            }
        }

        #[inline(always)]
        pub(super) fn trimmable(&self, bytes: &[u8; 16]) -> u16 {
            let x = bitand_m128i(load_unaligned_m128i(bytes), self.clear);
            move_mask_i8_m128i(cmp_eq_mask_i8_m128i(x, zeroed_m128i())) as u16
        }

        #[inline(always)]
        pub(super) fn digits16(&self, bytes: m128i, keep: &[u8; 16]) -> Option<u64> {
            // Digit values 0..=9 a byte (0 below the digits); anything else is above 9.
            let d = bitand_m128i(bitxor_m128i(bytes, self.zones), load_unaligned_m128i(keep));
            let nine = set_splat_i8_m128i(9);
            if move_mask_i8_m128i(cmp_eq_mask_i8_m128i(max_u8_m128i(d, nine), nine)) != 0xFFFF {
                return None;
            }
            // Pairs: each 16-bit lane holds the more significant digit in its low byte.
            let high = bitand_m128i(d, set_splat_i16_m128i(0x00FF));
            let pairs = add_i16_m128i(
                mul_i16_keep_low_m128i(high, set_splat_i16_m128i(10)),
                shr_imm_u16_m128i::<8>(d),
            );
            // Fours (100 * pair + pair, 32-bit), narrowed back to 16 bits (at most 9999),
            // then eights (10000 * four + four) in the low two 32-bit lanes.
            let fours = mul_i16_horizontal_add_m128i(pairs, set_splat_i32_m128i(0x0001_0064));
            let fours = pack_i32_to_i16_m128i(fours, fours);
            let eights = mul_i16_horizontal_add_m128i(fours, set_splat_i32_m128i(0x0001_2710));
            let both = get_i64_from_m128i_s(eights) as u64;
            Some((both & 0xFFFF_FFFF) * 100_000_000 + (both >> 32))
        }
    }
}

/// The portable versions (also tested against SSE2 on x86_64).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
mod words {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    const ONES: u64 = 0x0101_0101_0101_0101;

    fn halves(bytes: &[u8; 16]) -> (u64, u64) {
        let (lo, hi) = bytes.split_at(8);
        let word = |h: &[u8]| u64::from_le_bytes(h.try_into().unwrap_or_default());
        (word(lo), word(hi))
    }

    pub(super) fn trimmable(bytes: &[u8; 16], clear: u8) -> u16 {
        let clear = u64::from(clear) * ONES;
        let mask = |w: u64| {
            let w = w & clear;
            // The high bit of each byte that is zero (exact: no carry between bytes), then
            // gathered into the low 8 bits, byte 0 in bit 0.
            let zero = !((((w & LOW7) + LOW7) | w) | LOW7);
            ((zero >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u16
        };
        let (lo, hi) = halves(bytes);
        mask(lo) | (mask(hi) << 8)
    }

    pub(super) fn digits16(bytes: &[u8; 16], keep: &[u8; 16], zone: u8) -> Option<u64> {
        let ((lo, hi), (keep_lo, keep_hi)) = (halves(bytes), halves(keep));
        let zones = u64::from(zone) * ONES;
        let first = super::super::fast::eight_digits((lo ^ zones) & keep_lo)?;
        let last = super::super::fast::eight_digits((hi ^ zones) & keep_hi)?;
        Some(first * 100_000_000 + last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_bytes(bytes: &[u8; 16], clear: u8) -> u16 {
        (0..16).fold(0, |m, i| m | (u16::from(bytes[i] & clear == 0) << i))
    }

    fn digits_by_bytes(bytes: &[u8; 16], keep: &[u8; 16], zone: u8) -> Option<u64> {
        bytes.iter().zip(keep).try_fold(0u64, |v, (&b, &k)| {
            let d = (b ^ zone) & k;
            (d <= 9).then_some(v * 10 + u64::from(d))
        })
    }

    proptest! {
        #[test]
        fn trims_as_a_byte_loop_does(
            bytes in prop::array::uniform16(prop::sample::select(
                vec![0u8, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0, 0xE0, b'a', b'Z', 0xFF, 0x7F])),
            space in prop::sample::select(vec![0x20u8, 0x40]),
        ) {
            let lanes = Lanes::new(0x30, space);
            prop_assert_eq!(lanes.trimmable(&bytes), by_bytes(&bytes, !space));
            prop_assert_eq!(words::trimmable(&bytes, !space), by_bytes(&bytes, !space));
        }

        #[test]
        fn reads_digits_as_a_byte_loop_does(
            digits in prop::array::uniform16(0u8..=9),
            n in 0usize..=16,
            bad in prop::option::of((0usize..16, any::<u8>())),
            zone in prop::sample::select(vec![0x30u8, 0xF0]),
        ) {
            let mut bytes = digits.map(|d| zone | d);
            if let Some((at, b)) = bad {
                bytes[at] = b;
            }
            let mut keep = [0u8; 16];
            keep[16 - n..].fill(0xFF);
            let want = digits_by_bytes(&bytes, &keep, zone);
            let lanes = Lanes::new(zone, 0x20);
            prop_assert_eq!(lanes.digits16(&bytes, &keep), want);
            prop_assert_eq!(words::digits16(&bytes, &keep, zone), want);
        }
    }
}

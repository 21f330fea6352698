//! Fixed-width flat files, as COBOL systems export them: a record layout (from a copybook or
//! YAML), record framing, and a decoder from record bytes to typed [`Value`](crate::event::Value)s.
//!
//! ```text
//! bytes ──RecordReader (Fixed | Lines | Rdw)──> &[u8] record ──RecordDecoder(Layout)──> Vec<Value>
//! ```
//!
//! * [`Layout`]: the flattened fields (name, offset, length, [`FieldKind`], digits, scale,
//!   signedness, OCCURS dimensions, REDEFINES memberships) and the record length.
//!   [`Layout::from_copybook`], [`Layout::from_yaml`], [`Layout::load`] (by file extension).
//! * [`RecordReader`]: framing over any `std::io::Read` through one large buffer; yields
//!   [`Record`]s (`offset`, `number`, `data`) borrowed from it; can resume at an offset.
//! * [`RecordDecoder`]: `columns()` (the event model's [`Column`](crate::event::Column)s),
//!   `decode_row(record, &mut RowBuffer)` (the allocation-free hot path: a [`Row`] of
//!   [`FieldRef`]s borrowed from the record and the buffer) and `decode(record)` (owned values).
//!   Decimals stay exact ([`Decimal`](crate::event::Decimal)); scale-0 numbers of up to 18
//!   digits (and binary fields) come out as `Value::Int`; text is trimmed on the right
//!   (spaces and NULs); an OCCURS field is a `Value::Array` (nested for nested OCCURS).
//! * [`record_to_json`]: the JSON rendering of a decoded record; [`JsonWriter`] writes the
//!   same text from a [`Row`] straight into a byte buffer.
//!
//! # Copybooks
//!
//! Levels 01-49 (88 and 66 skipped), group items, FILLER (omitted from the output), PIC X/A/9
//! with `S`, `V` and repeat counts, edited pictures (read as text), USAGE DISPLAY (zoned,
//! sign overpunched in the last byte unless `SIGN LEADING` / `SEPARATE`), COMP-3 /
//! PACKED-DECIMAL, COMP / COMP-4 / BINARY / COMP-5 (big-endian; 1-4 digits 2 bytes, 5-9 four,
//! 10-18 eight), `OCCURS n [TIMES]`, `OCCURS m TO n [TIMES] DEPENDING ON x` (outermost table
//! only; items after such a table move down when it is short, as IBM lays them out), nested
//! OCCURS, REDEFINES, several 01 records (which redefine each other), USAGE and SIGN given
//! on a group. Not supported, with a clear error: COMP-1/COMP-2, national and DBCS
//! pictures, `P` scaling, SYNCHRONIZED, COPY.
//!
//! A repeated group is flattened into its leaves, each an array: `05 TXN OCCURS 3. 10 AMT ...
//! 10 DAT ...` gives the columns `AMT` and `DAT`, each with 3 elements. A leaf name that
//! repeats in the copybook is qualified by its parent group: `HEADER.DATE`, `TRAILER.DATE`.
//!
//! # YAML layouts
//!
//! ```yaml
//! record_length: 40          # optional: the end of the last field by default
//! encoding: cp037            # optional: ascii | latin1 | cp037 | cp500 | cp1047
//! sign_convention: ibm       # optional: ibm | micro_focus
//! fields:
//!   - {name: REC-TYPE, offset: 0, length: 1, type: text}
//!   - {name: ACCOUNT, offset: 1, length: 10, type: zoned}
//!   - {name: BALANCE, offset: 11, length: 7, type: packed, scale: 2, signed: true}
//!   - {name: AMOUNT, offset: 18, length: 8, type: zoned, scale: 2, signed: true,
//!      sign: leading_separate}    # trailing (default) | leading | trailing_separate | leading_separate
//!   - {name: COUNT, offset: 26, length: 2, type: binary}
//!   - {name: CODES, offset: 28, length: 3, type: text, occurs: 4, depending_on: COUNT,
//!      occurs_min: 0, stride: 3, variant: DETAIL}
//! selector: {field: REC-TYPE, cases: {"H": HEADER, "D": DETAIL}}
//! ```
//!
//! Field keys: `name`, `offset`, `length`, `type` (text | zoned | packed | binary), `scale`,
//! `signed`, `digits` (precision; all the bytes hold by default), `sign`, `encoding` (a text
//! field encoded differently from the file), `occurs`, `occurs_min`, `depending_on`,
//! `stride`, `variant` (the record type a field belongs to). Unknown keys are errors.
//!
//! # REDEFINES and the selector
//!
//! Without a selector every alternative of a REDEFINES is decoded (the overlapping bytes
//! must then be valid for all of them). A [`RecordSelector`] names a field and maps its
//! (trimmed) text to the alternative that applies; the fields of the other alternatives of
//! the groups it governs decode as `Value::Null`, and a value with no case is an error.
//! For a copybook, give it with [`Layout::with_selector`] (it may come from YAML,
//! [`RecordSelector::from_yaml`]).
//!
//! # Signs and encodings
//!
//! [`SignConvention`] applies to ASCII files: `Ibm` reads `{` `A`-`I` as +0..+9 and `}`
//! `J`-`R` as -0..-9 in the sign byte (and accepts plain digits as positive); `MicroFocus`
//! (GnuCOBOL's default) reads `0`-`9` as positive and `p`-`y` as negative. EBCDIC files use
//! the zone nibble: `C` or `F` positive, `D` negative. Packed fields take `C`/`F` as positive
//! and `D` as negative sign nibbles; unsigned fields must not be negative. The architecturally
//! tolerated `A`, `B`, `E` signs are not accepted: compilers do not write them, so they point
//! to corruption or a wrong layout.

mod copybook;
mod decode;
mod encoding;
mod fast;
mod files;
mod json;
mod lanes;
mod layout;
mod numeric;
mod reader;
mod row;

pub use decode::{
    DecodeOptions, FieldError, FieldErrorKind, MAX_ODO_TABLES, RecordDecoder, SignConvention,
    record_to_json,
};
pub use encoding::Encoding;
pub use json::JsonWriter;
pub use layout::{
    Field, FieldKind, Layout, LayoutError, Occurs, RecordSelector, SignPosition, Variant,
    YAML_VARIANT_GROUP,
};
pub use reader::{Block, DEFAULT_BUFFER, MAX_LINE, ReadError, Record, RecordFormat, RecordReader};
pub use row::{FieldRef, Fields, Row, RowBuffer};

mod source;
pub use source::{FlatFileError, FlatFileSource};

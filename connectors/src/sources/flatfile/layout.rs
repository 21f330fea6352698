//! The record layout: a flat list of fields with byte offsets, from a COBOL copybook or YAML.

use super::copybook;
use super::decode::SignConvention;
use super::encoding::Encoding;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How a field's bytes hold its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// Characters (PIC X/A, and edited pictures such as `ZZ,ZZ9.99-`), trimmed on the right.
    Text,
    /// USAGE DISPLAY numbers: one digit a byte; the sign (if the field is signed) where
    /// `sign` says.
    Zoned { sign: SignPosition },
    /// COMP-3 / PACKED-DECIMAL: two digits a byte, the sign in the last nibble.
    Packed,
    /// COMP / COMP-4 / BINARY / COMP-5: a big-endian two's-complement (or unsigned) integer
    /// of 1, 2, 4 or 8 bytes.
    Binary,
}

/// Where a zoned field keeps its sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignPosition {
    /// Overpunched in the zone of the last digit (COBOL's default).
    #[default]
    Trailing,
    /// Overpunched in the zone of the first digit (`SIGN LEADING`).
    Leading,
    /// A separate `+`/`-` byte after the digits (`SIGN TRAILING SEPARATE`).
    TrailingSeparate,
    /// A separate `+`/`-` byte before the digits (`SIGN LEADING SEPARATE`).
    LeadingSeparate,
}

impl SignPosition {
    pub fn is_separate(self) -> bool {
        matches!(
            self,
            SignPosition::TrailingSeparate | SignPosition::LeadingSeparate
        )
    }
}

/// One dimension of a repeated field (COBOL OCCURS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occurs {
    /// The number of elements (the maximum for OCCURS DEPENDING ON).
    pub max: usize,
    /// The smallest count OCCURS DEPENDING ON allows (`m` in `OCCURS m TO n`); `max` otherwise.
    pub min: usize,
    /// The field holding the actual count (OCCURS DEPENDING ON); only the outermost
    /// dimension may have one.
    pub depending_on: Option<String>,
    /// Bytes from one element to the next.
    pub stride: usize,
    /// Offset of the whole table (the repeated group's first byte). Items after an OCCURS
    /// DEPENDING ON table move down when the table has fewer than `max` elements.
    pub table_offset: usize,
}

/// Membership in one alternative of a REDEFINES group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Variant {
    /// The group: the name of the redefined item (for several 01 records, the first one's).
    pub group: String,
    /// The alternative: the name of the item (redefined or redefining) the field lies in.
    pub alternative: String,
}

/// One field of the flattened layout: an elementary item; FILLER is not listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// The name as written (qualified as `GROUP.NAME` only when the bare name repeats).
    pub name: String,
    /// Byte offset of the (first element of the) field in the record.
    pub offset: usize,
    /// Bytes of one element.
    pub length: usize,
    pub kind: FieldKind,
    /// Decimal digits (precision) of numeric fields; 0 for text.
    pub digits: u8,
    /// Implied decimal places (the digits after `V`).
    pub scale: u8,
    pub signed: bool,
    /// OCCURS dimensions, outermost first; empty for a scalar.
    pub occurs: Vec<Occurs>,
    /// REDEFINES memberships, outermost first; empty when the bytes have one meaning only.
    pub variants: Vec<Variant>,
    /// Text encoding of this field when it differs from the file's.
    pub encoding: Option<Encoding>,
}

impl Field {
    /// Bytes the field spans in the record at its largest (all OCCURS elements).
    pub fn span(&self) -> usize {
        self.occurs
            .iter()
            .map(|o| o.max.saturating_sub(1) * o.stride)
            .sum::<usize>()
            + self.length
    }

    pub fn is_numeric(&self) -> bool {
        self.kind != FieldKind::Text
    }
}

/// Chooses among REDEFINES alternatives by the value of a field: `cases` maps the field's
/// text (trimmed) to the name of the alternative that applies. Fields of other alternatives
/// in the same REDEFINES group decode as null; a value with no case is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSelector {
    pub field: String,
    pub cases: BTreeMap<String, String>,
}

impl RecordSelector {
    /// Reads `{field: REC-TYPE, cases: {"H": HEADER-REC}}`.
    pub fn from_yaml(text: &str) -> Result<Self, LayoutError> {
        serde_saphyr::from_str(text).map_err(|e| LayoutError::Yaml(e.to_string()))
    }
}

/// Why a layout was refused.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("copybook line {line}: {reason}")]
    Copybook { line: usize, reason: String },
    #[error("layout field {path}: {reason}")]
    Field { path: String, reason: String },
    #[error("layout YAML: {0}")]
    Yaml(String),
    #[error("layout selector: {0}")]
    Selector(String),
    #[error("layout: {0}")]
    Invalid(String),
    #[error("reading layout {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("layout {path}: unknown file extension (expected .cpy, .cob, .cbl, .yaml or .yml)")]
    UnknownExtension { path: PathBuf },
}

/// A record layout: the fields in offset order and the record length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Bytes of a record at its longest (all OCCURS DEPENDING ON tables full).
    pub record_length: usize,
    pub fields: Vec<Field>,
    pub selector: Option<RecordSelector>,
    /// The file encoding the layout declares, if any (YAML `encoding`).
    pub encoding: Option<Encoding>,
    /// The sign convention the layout declares, if any (YAML `sign_convention`).
    pub sign_convention: Option<SignConvention>,
}

impl Layout {
    /// Parses a COBOL copybook (fixed reference format with sequence area and indicator
    /// column, or free format when the text starts its level numbers in columns 1-6).
    pub fn from_copybook(text: &str) -> Result<Layout, LayoutError> {
        let layout = copybook::parse(text)?;
        layout.validate()?;
        Ok(layout)
    }

    /// Parses the YAML form (see the module documentation for the keys).
    pub fn from_yaml(text: &str) -> Result<Layout, LayoutError> {
        let doc: YamlLayout =
            serde_saphyr::from_str(text).map_err(|e| LayoutError::Yaml(e.to_string()))?;
        doc.into_layout()
    }

    /// Reads a layout file: `.cpy`, `.cob`, `.cbl` (and `.copy`) as a copybook, `.yaml`/`.yml`
    /// as YAML.
    pub fn load(path: impl AsRef<Path>) -> Result<Layout, LayoutError> {
        let path = path.as_ref();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let read = || {
            std::fs::read_to_string(path).map_err(|source| LayoutError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        match ext.as_str() {
            "cpy" | "cob" | "cbl" | "copy" => Layout::from_copybook(&read()?),
            "yaml" | "yml" => Layout::from_yaml(&read()?),
            _ => Err(LayoutError::UnknownExtension {
                path: path.to_path_buf(),
            }),
        }
    }

    /// Sets the REDEFINES selector, checking that its field and alternatives exist.
    pub fn with_selector(mut self, selector: RecordSelector) -> Result<Layout, LayoutError> {
        self.selector = Some(selector);
        self.validate()?;
        Ok(self)
    }

    /// The field called `name` (exact match first, then ignoring ASCII case).
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.field_index(name).map(|i| &self.fields[i])
    }

    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name).or_else(|| {
            self.fields
                .iter()
                .position(|f| f.name.eq_ignore_ascii_case(name))
        })
    }

    /// Bytes of a record with every OCCURS DEPENDING ON table at its minimum.
    pub fn min_record_length(&self) -> usize {
        let mut seen: Vec<(usize, usize)> = Vec::new();
        let mut shrink = 0;
        for f in &self.fields {
            if let Some(o) = f.occurs.first().filter(|o| o.depending_on.is_some())
                && !seen.contains(&(o.table_offset, o.stride))
            {
                seen.push((o.table_offset, o.stride));
                shrink += (o.max - o.min) * o.stride;
            }
        }
        self.record_length - shrink
    }

    /// Checks offsets, lengths, digits, OCCURS DEPENDING ON and the selector.
    pub fn validate(&self) -> Result<(), LayoutError> {
        if self.record_length == 0 {
            return Err(LayoutError::Invalid("the record length is 0".into()));
        }
        let mut names = std::collections::HashSet::new();
        for (i, f) in self.fields.iter().enumerate() {
            let err = |reason: String| LayoutError::Field {
                path: format!("fields[{i}] ({})", f.name),
                reason,
            };
            if f.name.is_empty() {
                return Err(err("the name is empty".into()));
            }
            if !names.insert(f.name.as_str()) {
                return Err(err("the name is used twice".into()));
            }
            if f.length == 0 {
                return Err(err("the length is 0".into()));
            }
            if f.offset + f.span() > self.record_length {
                return Err(err(format!(
                    "bytes {}..{} lie beyond the {}-byte record",
                    f.offset,
                    f.offset + f.span(),
                    self.record_length
                )));
            }
            match f.kind {
                FieldKind::Text => {
                    if f.scale != 0 {
                        return Err(err("a text field has no scale".into()));
                    }
                }
                FieldKind::Zoned { sign } => {
                    let sep = usize::from(f.signed && sign.is_separate());
                    if f.length <= sep || f.length - sep != usize::from(f.digits) {
                        return Err(err(format!(
                            "a zoned field of {} digits{} takes {} bytes, not {}",
                            f.digits,
                            if sep == 1 { " and a separate sign" } else { "" },
                            usize::from(f.digits) + sep,
                            f.length
                        )));
                    }
                }
                FieldKind::Packed => {
                    if f.length > 20 || usize::from(f.digits) > f.length * 2 - 1 || f.digits == 0 {
                        return Err(err(format!(
                            "a packed field of {} bytes holds 1 to {} digits, not {}",
                            f.length,
                            (f.length * 2 - 1).min(38),
                            f.digits
                        )));
                    }
                }
                FieldKind::Binary => {
                    if ![1, 2, 4, 8].contains(&f.length) {
                        return Err(err(format!(
                            "a binary field is 1, 2, 4 or 8 bytes, not {}",
                            f.length
                        )));
                    }
                    let capacity = binary_capacity(f.length, f.signed);
                    if f.digits == 0 || f.digits > capacity {
                        return Err(err(format!(
                            "a {}-byte binary field holds 1 to {capacity} digits, not {}",
                            f.length, f.digits
                        )));
                    }
                }
            }
            if f.digits > 38 {
                return Err(err(format!("{} digits exceed the 38 supported", f.digits)));
            }
            if f.is_numeric() && f.scale > f.digits {
                return Err(err(format!(
                    "scale {} is larger than the {} digits",
                    f.scale, f.digits
                )));
            }
            for (d, o) in f.occurs.iter().enumerate() {
                if o.max == 0 || o.min > o.max {
                    return Err(err(format!(
                        "OCCURS {} TO {} is empty or reversed",
                        o.min, o.max
                    )));
                }
                if o.depending_on.is_none() && o.min != o.max {
                    return Err(err("OCCURS m TO n needs DEPENDING ON".into()));
                }
                if d > 0 && o.depending_on.is_some() {
                    return Err(err(
                        "OCCURS DEPENDING ON is supported on the outermost table only".into(),
                    ));
                }
                if o.stride == 0 {
                    return Err(err("the OCCURS stride is 0".into()));
                }
            }
            if let Some(counter) = f.occurs.first().and_then(|o| o.depending_on.as_ref()) {
                let table = f.occurs[0].table_offset;
                let c = self
                    .field(counter)
                    .ok_or_else(|| err(format!("DEPENDING ON `{counter}`: no such field")))?;
                if !c.is_numeric() || !c.occurs.is_empty() {
                    return Err(err(format!(
                        "DEPENDING ON `{counter}` must be a numeric field outside any OCCURS"
                    )));
                }
                if c.scale != 0 {
                    return Err(err(format!("DEPENDING ON `{counter}` has decimal places")));
                }
                if c.offset + c.length > table {
                    return Err(err(format!(
                        "DEPENDING ON `{counter}` must lie before the table at byte {table}"
                    )));
                }
            }
        }
        let odo_tables = self
            .fields
            .iter()
            .filter_map(|f| f.occurs.first().filter(|o| o.depending_on.is_some()))
            .map(|o| (o.table_offset, o.stride))
            .collect::<std::collections::BTreeSet<_>>();
        if odo_tables.len() > super::decode::MAX_ODO_TABLES {
            return Err(LayoutError::Invalid(format!(
                "{} OCCURS DEPENDING ON tables; at most {} are supported",
                odo_tables.len(),
                super::decode::MAX_ODO_TABLES
            )));
        }
        if let Some(sel) = &self.selector {
            let f = self
                .field(&sel.field)
                .ok_or_else(|| LayoutError::Selector(format!("no field `{}`", sel.field)))?;
            if !f.occurs.is_empty() {
                return Err(LayoutError::Selector(format!(
                    "field `{}` is repeated (OCCURS)",
                    sel.field
                )));
            }
            if let Some((table, _)) = odo_tables.first()
                && f.offset >= *table
            {
                return Err(LayoutError::Selector(format!(
                    "field `{}` must come before the OCCURS DEPENDING ON table at byte {table}",
                    sel.field
                )));
            }
            if sel.cases.is_empty() {
                return Err(LayoutError::Selector("no cases".into()));
            }
            for (value, alt) in &sel.cases {
                let known = self.fields.iter().any(|f| {
                    f.variants
                        .iter()
                        .any(|v| v.alternative.eq_ignore_ascii_case(alt))
                });
                if !known {
                    return Err(LayoutError::Selector(format!(
                        "case `{value}` names `{alt}`, which is no REDEFINES alternative (or has no fields)"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The most decimal digits a binary field of `len` bytes can hold in full.
pub(crate) fn binary_capacity(len: usize, signed: bool) -> u8 {
    match (len, signed) {
        (1, _) => 2,
        (2, _) => 4,
        (4, _) => 9,
        (8, true) => 18,
        (8, false) => 19,
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------
// YAML form

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlLayout {
    #[serde(default)]
    record_length: Option<usize>,
    #[serde(default)]
    encoding: Option<Encoding>,
    #[serde(default)]
    sign_convention: Option<SignConvention>,
    fields: Vec<YamlField>,
    #[serde(default)]
    selector: Option<RecordSelector>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum YamlType {
    #[serde(alias = "string", alias = "alphanumeric")]
    Text,
    #[serde(alias = "display", alias = "zoned_decimal")]
    Zoned,
    #[serde(alias = "comp-3", alias = "comp3", alias = "packed_decimal")]
    Packed,
    #[serde(alias = "comp", alias = "comp-4", alias = "comp-5")]
    Binary,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlField {
    name: String,
    offset: usize,
    length: usize,
    #[serde(rename = "type")]
    kind: YamlType,
    #[serde(default)]
    scale: u8,
    #[serde(default)]
    signed: bool,
    /// Precision; by default all the digits the bytes hold.
    #[serde(default)]
    digits: Option<u8>,
    /// Zoned sign position; trailing overpunch by default.
    #[serde(default)]
    sign: Option<SignPosition>,
    #[serde(default)]
    encoding: Option<Encoding>,
    #[serde(default)]
    occurs: Option<usize>,
    #[serde(default)]
    occurs_min: Option<usize>,
    #[serde(default)]
    depending_on: Option<String>,
    #[serde(default)]
    stride: Option<usize>,
    /// Name of the record type (REDEFINES alternative) the field belongs to.
    #[serde(default)]
    variant: Option<String>,
}

/// The REDEFINES group name YAML `variant`s belong to.
pub const YAML_VARIANT_GROUP: &str = "variant";

impl YamlLayout {
    fn into_layout(self) -> Result<Layout, LayoutError> {
        let mut fields = Vec::with_capacity(self.fields.len());
        for (i, y) in self.fields.into_iter().enumerate() {
            let path = format!("fields[{i}] ({})", y.name);
            let err = |reason: String| LayoutError::Field {
                path: path.clone(),
                reason,
            };
            let sign = y.sign.unwrap_or_default();
            if y.sign.is_some() && !matches!(y.kind, YamlType::Zoned) {
                return Err(err("`sign` applies to zoned fields only".into()));
            }
            if y.sign.is_some() && !y.signed {
                return Err(err("`sign` needs `signed: true`".into()));
            }
            let (kind, full_digits) = match y.kind {
                YamlType::Text => (FieldKind::Text, 0),
                YamlType::Zoned => (
                    FieldKind::Zoned { sign },
                    y.length
                        .saturating_sub(usize::from(y.signed && sign.is_separate())),
                ),
                YamlType::Packed => (FieldKind::Packed, (y.length * 2).saturating_sub(1)),
                YamlType::Binary => (
                    FieldKind::Binary,
                    usize::from(binary_capacity(y.length, y.signed)),
                ),
            };
            let digits = match y.digits {
                Some(d) => d,
                None if full_digits > 38 => {
                    return Err(err(format!(
                        "{full_digits} digits exceed the 38 supported; give `digits`"
                    )));
                }
                None => full_digits as u8,
            };
            if matches!(y.kind, YamlType::Text) && y.digits.is_some_and(|d| d != 0) {
                return Err(err("a text field has no `digits`".into()));
            }
            if y.encoding.is_some() && !matches!(y.kind, YamlType::Text) {
                return Err(err("`encoding` applies to text fields only".into()));
            }
            let mut occurs = Vec::new();
            match (y.occurs, y.occurs_min, y.depending_on, y.stride) {
                (None, None, None, None) => {}
                (Some(max), min, depending_on, stride) => {
                    if min.is_some() && depending_on.is_none() {
                        return Err(err("`occurs_min` needs `depending_on`".into()));
                    }
                    occurs.push(Occurs {
                        max,
                        min: min.unwrap_or(if depending_on.is_some() { 0 } else { max }),
                        depending_on,
                        stride: stride.unwrap_or(y.length),
                        table_offset: y.offset,
                    });
                }
                (None, ..) => {
                    return Err(err(
                        "`occurs_min`, `depending_on` and `stride` need `occurs`".into(),
                    ));
                }
            }
            fields.push(Field {
                name: y.name,
                offset: y.offset,
                length: y.length,
                kind,
                digits,
                scale: y.scale,
                signed: y.signed,
                occurs,
                variants: y
                    .variant
                    .map(|alternative| Variant {
                        group: YAML_VARIANT_GROUP.to_string(),
                        alternative,
                    })
                    .into_iter()
                    .collect(),
                encoding: y.encoding,
            });
        }
        let end = fields
            .iter()
            .map(|f| f.offset + f.span())
            .max()
            .unwrap_or(0);
        let record_length = self.record_length.unwrap_or(end);
        let layout = Layout {
            record_length,
            fields,
            selector: self.selector,
            encoding: self.encoding,
            sign_convention: self.sign_convention,
        };
        layout.validate()?;
        Ok(layout)
    }
}

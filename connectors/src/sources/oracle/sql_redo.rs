//! A hand-written parser for the DML statements LogMiner writes into `SQL_REDO`:
//!
//! ```text
//! insert into "HR"."EMP"("ID","NAME") values ('7','O''Brien');
//! update "HR"."EMP" set "NAME" = 'Smith' where "ID" = '7' and "NAME" IS NULL and ROWID = 'AAAR...';
//! delete from "HR"."EMP" where "ID" = '7' and "NAME" = 'Smith';
//! ```
//!
//! It walks the bytes once and borrows every name and literal from the input; decoding a
//! literal (escaped quotes, `UNISTR`, `HEXTORAW`, dates) is left to whoever needs the value.

use std::borrow::Cow;
use std::fmt;

/// Which DML statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmlKind {
    Insert,
    Update,
    Delete,
}

/// One value as written in `SQL_REDO`, borrowed from the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Literal<'a> {
    /// `NULL` (or `IS NULL` in a where clause).
    Null,
    /// A quoted string, the text between the quotes with `''` escapes still in place.
    Str(RawStr<'a>),
    /// An unquoted number (`12`, `-0.5`, `1.5E+10`).
    Number(&'a str),
    /// `TO_DATE('text', 'format')`.
    Date(RawStr<'a>, RawStr<'a>),
    /// `TO_TIMESTAMP('text', 'format')`.
    Timestamp(RawStr<'a>, RawStr<'a>),
    /// `TO_TIMESTAMP_TZ('text', 'format')`.
    TimestampTz(RawStr<'a>, RawStr<'a>),
    /// `HEXTORAW('0A1B')`.
    HexToRaw(RawStr<'a>),
    /// `UNISTR('caf\00E9')`.
    Unistr(RawStr<'a>),
    /// `TO_YMINTERVAL('+01-02')` / `TO_DSINTERVAL('+01 02:03:04')`, kept as text.
    Interval(RawStr<'a>),
    /// `EMPTY_CLOB()`: the LOB is written by later `LOB_WRITE` rows, not by this statement.
    EmptyClob,
    /// `EMPTY_BLOB()`.
    EmptyBlob,
}

/// The inside of a quoted SQL string literal, `''` escapes undecoded. Inside the quotes a
/// `'` only occurs doubled, so any `'` means the text needs unescaping; not storing a flag
/// keeps a literal at 40 bytes and a 16-column row in one small allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawStr<'a> {
    pub raw: &'a str,
}

impl<'a> RawStr<'a> {
    /// Whether `raw` holds at least one `''`.
    #[inline]
    pub fn escaped(&self) -> bool {
        find_byte(self.raw.as_bytes(), 0, b'\'').is_some()
    }

    /// The string's value: borrowed unless it held escaped quotes.
    #[inline]
    pub fn text(&self) -> Cow<'a, str> {
        if self.escaped() {
            Cow::Owned(self.raw.replace("''", "'"))
        } else {
            Cow::Borrowed(self.raw)
        }
    }
}

/// A parsed DML statement. For inserts `values` holds the new row; for updates `values` holds
/// the `SET` columns and `before` the `WHERE` columns; for deletes only `before` is filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedoStatement<'a> {
    pub kind: DmlKind,
    pub schema: &'a str,
    pub table: &'a str,
    pub values: Vec<(&'a str, Literal<'a>)>,
    pub before: Vec<(&'a str, Literal<'a>)>,
}

impl<'a> RedoStatement<'a> {
    /// The row after the change: for an update, the before image overlaid with the `SET`
    /// columns (with all-column supplemental logging the where clause holds every column).
    pub fn after_image(&self) -> Option<Vec<(&'a str, Literal<'a>)>> {
        match self.kind {
            DmlKind::Insert => Some(self.values.clone()),
            DmlKind::Delete => None,
            DmlKind::Update => {
                let mut row = self.before.clone();
                for (name, value) in &self.values {
                    match row.iter_mut().find(|(n, _)| n == name) {
                        Some(slot) => slot.1 = *value,
                        None => row.push((name, *value)),
                    }
                }
                Some(row)
            }
        }
    }
}

/// Where and why a statement could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SQL_REDO at byte {offset}: expected {expected}, found {found}")]
pub struct RedoError {
    pub offset: usize,
    pub expected: &'static str,
    /// A short excerpt of the input at `offset` (or `end of statement`).
    pub found: String,
}

type Result<T> = std::result::Result<T, RedoError>;

/// A parse failure inside the cursor: where and what was expected. The excerpt for the user
/// is cut only once, when the failure leaves `parse_redo`, so the hot paths carry 24 bytes.
#[derive(Debug)]
struct Fail {
    offset: usize,
    expected: &'static str,
}

type Step<T> = std::result::Result<T, Fail>;

/// The first `needle` at or after `from`. Names and most literals are short, so this reads
/// eight bytes at a time inline and hands long stretches to memchr.
#[inline]
fn find_byte(b: &[u8], from: usize, needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(needle);
    let mut i = from;
    let stop = (from + 64).min(b.len());
    while i + 8 <= stop {
        let mut word = [0u8; 8];
        word.copy_from_slice(&b[i..i + 8]);
        let x = u64::from_le_bytes(word) ^ pattern;
        // The lowest set bit marks the first zero byte (borrows only run upwards).
        let zero = x.wrapping_sub(LO) & !x & HI;
        if zero != 0 {
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    if stop < b.len() {
        return memchr::memchr(needle, &b[i..]).map(|n| i + n);
    }
    b[i..].iter().position(|c| *c == needle).map(|n| i + n)
}

struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    #[cold]
    fn fail<T>(&self, expected: &'static str) -> Step<T> {
        Err(Fail {
            offset: self.pos,
            expected,
        })
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(c) = self.b.get(self.pos) {
            if c.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    /// Consumes `word` (ASCII, case-insensitive) if it is next and not followed by a name byte.
    #[inline]
    fn keyword(&mut self, word: &str) -> bool {
        let end = self.pos + word.len();
        match self.b.get(self.pos..end) {
            Some(got) if got.eq_ignore_ascii_case(word.as_bytes()) => {
                if self.b.get(end).is_some_and(|c| is_name_byte(*c)) {
                    return false;
                }
                self.pos = end;
                true
            }
            _ => false,
        }
    }

    #[inline]
    fn expect_keyword(&mut self, word: &str, expected: &'static str) -> Step<()> {
        self.ws();
        if self.keyword(word) {
            Ok(())
        } else {
            self.fail(expected)
        }
    }

    #[inline]
    fn byte(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    #[inline]
    fn expect_byte(&mut self, c: u8, expected: &'static str) -> Step<()> {
        if self.byte(c) {
            return Ok(());
        }
        self.ws();
        if self.byte(c) {
            Ok(())
        } else {
            self.fail(expected)
        }
    }

    /// `"NAME"` or an unquoted name; returns the name without quotes.
    #[inline]
    fn name(&mut self) -> Step<&'a str> {
        self.ws();
        if self.byte(b'"') {
            let start = self.pos;
            match find_byte(self.b, start, b'"') {
                Some(end) => {
                    self.pos = end + 1;
                    Ok(&self.s[start..end])
                }
                None => self.fail("a closing `\"` of the name"),
            }
        } else {
            let start = self.pos;
            while self.peek().is_some_and(is_name_byte) {
                self.pos += 1;
            }
            if self.pos == start {
                self.fail("a name")
            } else {
                Ok(&self.s[start..self.pos])
            }
        }
    }

    /// `"SCHEMA"."TABLE"`.
    fn table(&mut self) -> Step<(&'a str, &'a str)> {
        let schema = self.name()?;
        if !self.byte(b'.') {
            return self.fail("`.` between schema and table");
        }
        let table = self.name()?;
        Ok((schema, table))
    }

    /// A `'...'` literal, after optional whitespace.
    #[inline]
    fn quoted(&mut self) -> Step<RawStr<'a>> {
        self.ws();
        if !self.byte(b'\'') {
            return self.fail("a quoted string");
        }
        self.quoted_rest()
    }

    /// The rest of a `'...'` literal; the opening quote is consumed.
    #[inline]
    fn quoted_rest(&mut self) -> Step<RawStr<'a>> {
        let start = self.pos;
        let mut at = start;
        loop {
            match find_byte(self.b, at, b'\'') {
                None => {
                    self.pos = start - 1;
                    return self.fail("a closing `'` of the string");
                }
                Some(q) => {
                    if self.b.get(q + 1) == Some(&b'\'') {
                        at = q + 2;
                    } else {
                        self.pos = q + 1;
                        return Ok(RawStr {
                            raw: &self.s[start..q],
                        });
                    }
                }
            }
        }
    }

    fn call1(&mut self) -> Step<RawStr<'a>> {
        self.expect_byte(b'(', "`(`")?;
        let a = self.quoted()?;
        self.expect_byte(b')', "`)`")?;
        Ok(a)
    }

    fn call2(&mut self) -> Step<(RawStr<'a>, RawStr<'a>)> {
        self.expect_byte(b'(', "`(`")?;
        let a = self.quoted()?;
        self.expect_byte(b',', "`,` between value and format")?;
        let b = self.quoted()?;
        self.expect_byte(b')', "`)`")?;
        Ok((a, b))
    }

    fn call0(&mut self) -> Step<()> {
        self.expect_byte(b'(', "`(`")?;
        self.expect_byte(b')', "`)`")
    }

    #[inline]
    fn literal(&mut self) -> Step<Literal<'a>> {
        self.ws();
        match self.peek() {
            Some(b'\'') => {
                self.pos += 1;
                Ok(Literal::Str(self.quoted_rest()?))
            }
            Some(c) if c == b'-' || c == b'+' || c == b'.' || c.is_ascii_digit() => self.number(),
            _ => self.word_literal(),
        }
    }

    /// An unquoted number: sign, digits, point, exponent.
    fn number(&mut self) -> Step<Literal<'a>> {
        let start = self.pos;
        self.pos += 1;
        let mut digit = self.b[start].is_ascii_digit();
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                digit = true;
            } else if !(c == b'.'
                || c == b'e'
                || c == b'E'
                || ((c == b'-' || c == b'+') && matches!(self.b[self.pos - 1], b'e' | b'E')))
            {
                break;
            }
            self.pos += 1;
        }
        if !digit {
            self.pos = start;
            return self.fail("a number");
        }
        Ok(Literal::Number(&self.s[start..self.pos]))
    }

    /// `NULL` or a conversion function.
    fn word_literal(&mut self) -> Step<Literal<'a>> {
        let start = self.pos;
        while self.peek().is_some_and(is_name_byte) {
            self.pos += 1;
        }
        let word = &self.b[start..self.pos];
        let is = |w: &[u8]| word.eq_ignore_ascii_case(w);
        let lit = match word.len() {
            4 if is(b"NULL") => Literal::Null,
            7 if is(b"TO_DATE") => {
                let (v, f) = self.call2()?;
                Literal::Date(v, f)
            }
            12 if is(b"TO_TIMESTAMP") => {
                let (v, f) = self.call2()?;
                Literal::Timestamp(v, f)
            }
            15 if is(b"TO_TIMESTAMP_TZ") => {
                let (v, f) = self.call2()?;
                Literal::TimestampTz(v, f)
            }
            8 if is(b"HEXTORAW") => Literal::HexToRaw(self.call1()?),
            6 if is(b"UNISTR") => Literal::Unistr(self.call1()?),
            13 if is(b"TO_YMINTERVAL") || is(b"TO_DSINTERVAL") => Literal::Interval(self.call1()?),
            10 if is(b"EMPTY_CLOB") => {
                self.call0()?;
                Literal::EmptyClob
            }
            10 if is(b"EMPTY_BLOB") => {
                self.call0()?;
                Literal::EmptyBlob
            }
            _ => {
                self.pos = start;
                return self.fail("a value (quoted string, number, NULL or a conversion function)");
            }
        };
        Ok(lit)
    }

    /// `"A" = v, "B" = w` up to the `where` keyword or the end.
    fn assignments(&mut self, out: &mut Vec<(&'a str, Literal<'a>)>) -> Step<()> {
        loop {
            let name = self.name()?;
            self.expect_byte(b'=', "`=` after the column name")?;
            let value = self.literal()?;
            out.push((name, value));
            self.ws();
            if !self.byte(b',') {
                return Ok(());
            }
        }
    }

    /// `"A" = v and "B" IS NULL and ROWID = '...'`; the ROWID term is dropped (LogMiner gives
    /// it in its own column).
    fn conditions(&mut self, out: &mut Vec<(&'a str, Literal<'a>)>) -> Step<()> {
        loop {
            self.ws();
            let quoted = self.peek() == Some(b'"');
            let name = self.name()?;
            self.ws();
            let value = if self.keyword("IS") {
                self.expect_keyword("NULL", "`NULL` after `IS`")?;
                Literal::Null
            } else {
                self.expect_byte(b'=', "`=` or `IS NULL` after the column name")?;
                self.literal()?
            };
            if quoted || !name.eq_ignore_ascii_case("ROWID") {
                out.push((name, value));
            }
            self.ws();
            if !self.keyword("and") {
                return Ok(());
            }
        }
    }

    /// Optional `;` then only whitespace.
    fn end(&mut self) -> Step<()> {
        self.ws();
        self.byte(b';');
        self.ws();
        if self.pos < self.b.len() {
            self.fail("the end of the statement")
        } else {
            Ok(())
        }
    }

    fn insert(&mut self) -> Step<RedoStatement<'a>> {
        self.expect_keyword("into", "`into` after `insert`")?;
        let (schema, table) = self.table()?;
        self.expect_byte(b'(', "`(` before the column list")?;
        // One vector: names first, values filled in place.
        let mut values: Vec<(&str, Literal<'_>)> = Vec::with_capacity(16);
        loop {
            values.push((self.name()?, Literal::Null));
            if self.byte(b',') {
                continue;
            }
            self.ws();
            if self.byte(b')') {
                break;
            }
            if !self.byte(b',') {
                return self.fail("`,` or `)` in the column list");
            }
        }
        self.expect_keyword("values", "`values`")?;
        self.expect_byte(b'(', "`(` before the values")?;
        for (i, slot) in values.iter_mut().enumerate() {
            if i > 0 {
                self.expect_byte(b',', "`,` between values (fewer values than columns)")?;
            }
            slot.1 = self.literal()?;
        }
        self.expect_byte(b')', "`)` after the values (more values than columns)")?;
        self.end()?;
        Ok(RedoStatement {
            kind: DmlKind::Insert,
            schema,
            table,
            values,
            before: Vec::new(),
        })
    }

    fn update(&mut self) -> Step<RedoStatement<'a>> {
        let (schema, table) = self.table()?;
        self.expect_keyword("set", "`set`")?;
        let mut values = Vec::with_capacity(8);
        self.assignments(&mut values)?;
        let mut before = Vec::with_capacity(16);
        self.ws();
        if self.keyword("where") {
            self.conditions(&mut before)?;
        }
        self.end()?;
        Ok(RedoStatement {
            kind: DmlKind::Update,
            schema,
            table,
            values,
            before,
        })
    }

    fn delete(&mut self) -> Step<RedoStatement<'a>> {
        self.expect_keyword("from", "`from` after `delete`")?;
        let (schema, table) = self.table()?;
        self.expect_keyword("where", "`where`")?;
        let mut before = Vec::with_capacity(16);
        self.conditions(&mut before)?;
        self.end()?;
        Ok(RedoStatement {
            kind: DmlKind::Delete,
            schema,
            table,
            values: Vec::new(),
            before,
        })
    }
}

#[inline]
fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c == b'#'
}

/// Parses one `SQL_REDO` DML statement (CSF continuation rows already joined).
pub fn parse_redo(sql: &str) -> Result<RedoStatement<'_>> {
    let mut c = Cursor {
        s: sql,
        b: sql.as_bytes(),
        pos: 0,
    };
    c.ws();
    let parsed = if c.keyword("insert") {
        c.insert()
    } else if c.keyword("update") {
        c.update()
    } else if c.keyword("delete") {
        c.delete()
    } else {
        c.fail("`insert`, `update` or `delete`")
    };
    parsed.map_err(|f| redo_error(sql, f))
}

#[cold]
fn redo_error(sql: &str, f: Fail) -> RedoError {
    let found = if f.offset >= sql.len() {
        "end of statement".to_string()
    } else {
        let mut end = (f.offset + 24).min(sql.len());
        while !sql.is_char_boundary(end) {
            end -= 1;
        }
        format!("`{}`", &sql[f.offset..end])
    };
    RedoError {
        offset: f.offset,
        expected: f.expected,
        found,
    }
}

impl Literal<'_> {
    /// Writes the literal as LogMiner would (the inverse of the parser, for tools and tests).
    pub fn write_sql(&self, out: &mut String) {
        fn q(out: &mut String, r: &RawStr<'_>) {
            out.push('\'');
            out.push_str(r.raw);
            out.push('\'');
        }
        fn f(out: &mut String, name: &str, args: &[&RawStr<'_>]) {
            out.push_str(name);
            out.push('(');
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                q(out, a);
            }
            out.push(')');
        }
        match self {
            Literal::Null => out.push_str("NULL"),
            Literal::Str(r) => q(out, r),
            Literal::Number(n) => out.push_str(n),
            Literal::Date(v, m) => f(out, "TO_DATE", &[v, m]),
            Literal::Timestamp(v, m) => f(out, "TO_TIMESTAMP", &[v, m]),
            Literal::TimestampTz(v, m) => f(out, "TO_TIMESTAMP_TZ", &[v, m]),
            Literal::HexToRaw(r) => f(out, "HEXTORAW", &[r]),
            Literal::Unistr(r) => f(out, "UNISTR", &[r]),
            Literal::Interval(r) => f(out, "TO_DSINTERVAL", &[r]),
            Literal::EmptyClob => out.push_str("EMPTY_CLOB()"),
            Literal::EmptyBlob => out.push_str("EMPTY_BLOB()"),
        }
    }
}

impl RedoStatement<'_> {
    /// The statement as LogMiner writes it.
    pub fn to_sql(&self) -> String {
        let mut out = String::with_capacity(64 + 24 * (self.values.len() + self.before.len()));
        let table = format!("\"{}\".\"{}\"", self.schema, self.table);
        let where_ = |out: &mut String| {
            for (i, (name, value)) in self.before.iter().enumerate() {
                out.push_str(if i == 0 { " where " } else { " and " });
                out.push('"');
                out.push_str(name);
                out.push('"');
                if *value == Literal::Null {
                    out.push_str(" IS NULL");
                } else {
                    out.push_str(" = ");
                    value.write_sql(out);
                }
            }
        };
        match self.kind {
            DmlKind::Insert => {
                out.push_str("insert into ");
                out.push_str(&table);
                out.push('(');
                for (i, (name, _)) in self.values.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('"');
                    out.push_str(name);
                    out.push('"');
                }
                out.push_str(") values (");
                for (i, (_, value)) in self.values.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    value.write_sql(&mut out);
                }
                out.push(')');
            }
            DmlKind::Update => {
                out.push_str("update ");
                out.push_str(&table);
                out.push_str(" set");
                for (i, (name, value)) in self.values.iter().enumerate() {
                    out.push_str(if i == 0 { " \"" } else { ", \"" });
                    out.push_str(name);
                    out.push_str("\" = ");
                    value.write_sql(&mut out);
                }
                where_(&mut out);
            }
            DmlKind::Delete => {
                out.push_str("delete from ");
                out.push_str(&table);
                where_(&mut out);
            }
        }
        out.push(';');
        out
    }
}

impl fmt::Display for DmlKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DmlKind::Insert => "insert",
            DmlKind::Update => "update",
            DmlKind::Delete => "delete",
        })
    }
}

/// The row and column whose LOB the following LOB rows change: the `select ... for update`
/// LogMiner writes for `SEL_LOB_LOCATOR` (and at the head of some LOB_TRIM rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobLocator<'a> {
    pub schema: &'a str,
    pub table: &'a str,
    pub column: &'a str,
    /// Selected into `loc_b` (a BLOB) rather than `loc_c` / `loc_nc`.
    pub binary: bool,
    /// The where clause: the row's key columns (or every column LogMiner logged).
    pub key: Vec<(&'a str, Literal<'a>)>,
}

/// One `dbms_lob` call of a LOB row. Offsets and amounts are as Oracle counts them: from 1,
/// in characters for CLOBs and bytes for BLOBs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LobOp<'a> {
    /// `buf := <data>; dbms_lob.write(loc, amount, offset, buf);`
    Write {
        amount: u64,
        offset: u64,
        data: Literal<'a>,
    },
    /// `dbms_lob.trim(loc, length);`
    Trim { length: u64 },
    /// `dbms_lob.erase(loc, amount, offset);`: spaces (CLOB) or zero bytes (BLOB).
    Erase { amount: u64, offset: u64 },
}

/// A LOB row's `SQL_REDO`: the PL/SQL fragment LogMiner writes for SEL_LOB_LOCATOR (op 9),
/// LOB_WRITE (10), LOB_TRIM (11) and LOB_ERASE (29), e.g.
///
/// ```text
/// DECLARE loc_c CLOB; buf_c VARCHAR2(6174); loc_b BLOB; buf_b RAW(6174); ... BEGIN
///  select "DOC" into loc_c from "BANK"."DOCS" where "ID" = '7' for update;
///  buf_c := 'first chunk'; dbms_lob.write(loc_c, 11, 1, buf_c);
///  dbms_lob.trim(loc_c, 11);
/// END;
/// ```
///
/// Each part is optional: a locator row holds the declarations and the select, a write row
/// only its assignment and call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LobFragment<'a> {
    pub locator: Option<LobLocator<'a>>,
    pub ops: Vec<LobOp<'a>>,
}

impl<'a> Cursor<'a> {
    /// A whole unsigned number.
    fn count(&mut self) -> Step<u64> {
        self.ws();
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        match self.s[start..self.pos].parse() {
            Ok(n) => Ok(n),
            Err(_) => {
                self.pos = start;
                self.fail("a whole number")
            }
        }
    }

    /// Skips the declarations up to and including `BEGIN`.
    fn declarations(&mut self) -> Step<()> {
        loop {
            self.ws();
            let start = self.pos;
            while self.peek().is_some_and(is_name_byte) {
                self.pos += 1;
            }
            if self.b[start..self.pos].eq_ignore_ascii_case(b"BEGIN") {
                return Ok(());
            }
            if self.pos == start {
                if self.pos >= self.b.len() {
                    return self.fail("`BEGIN` after the declarations");
                }
                self.pos += 1;
            }
        }
    }

    /// `select "COL" into loc_x from "S"."T" where ... for update;` (after `select`).
    fn lob_select(&mut self) -> Step<LobLocator<'a>> {
        let column = self.name()?;
        self.expect_keyword("into", "`into` after the LOB column")?;
        let var = self.name()?;
        self.expect_keyword("from", "`from`")?;
        let (schema, table) = self.table()?;
        self.expect_keyword("where", "`where`")?;
        let mut key = Vec::with_capacity(4);
        self.conditions(&mut key)?;
        self.expect_keyword("for", "`for update`")?;
        self.expect_keyword("update", "`for update`")?;
        self.expect_byte(b';', "`;` after `for update`")?;
        Ok(LobLocator {
            schema,
            table,
            column,
            binary: var.eq_ignore_ascii_case("loc_b"),
            key,
        })
    }

    fn lob_fragment(&mut self) -> Step<LobFragment<'a>> {
        let mut out = LobFragment::default();
        self.ws();
        if self.keyword("DECLARE") {
            self.declarations()?;
        } else {
            self.keyword("BEGIN");
        }
        // The latest value assigned to each buffer or length variable.
        let mut buffers: Vec<(&'a str, Literal<'a>)> = Vec::new();
        let mut numbers: Vec<(&'a str, u64)> = Vec::new();
        loop {
            self.ws();
            if self.pos >= self.b.len() {
                return Ok(out);
            }
            if self.keyword("END") {
                self.expect_byte(b';', "`;` after `END`")?;
                self.ws();
                return if self.pos < self.b.len() {
                    self.fail("the end of the block")
                } else {
                    Ok(out)
                };
            }
            if self.keyword("select") {
                if out.locator.is_some() || !out.ops.is_empty() {
                    return self.fail("one `select ... for update` at the start");
                }
                out.locator = Some(self.lob_select()?);
                continue;
            }
            let name = self.name()?;
            if name.eq_ignore_ascii_case("dbms_lob") {
                self.expect_byte(b'.', "`.` after `dbms_lob`")?;
                self.ws();
                let at = self.pos;
                let call = self.name()?;
                if !["write", "trim", "erase"]
                    .iter()
                    .any(|c| call.eq_ignore_ascii_case(c))
                {
                    self.pos = at;
                    return self.fail("`write`, `trim` or `erase`");
                }
                self.expect_byte(b'(', "`(`")?;
                self.name()?;
                self.expect_byte(b',', "`,` after the locator")?;
                let op = if call.eq_ignore_ascii_case("write") {
                    let amount = self.count()?;
                    self.expect_byte(b',', "`,` after the amount")?;
                    let offset = self.count()?;
                    self.expect_byte(b',', "`,` after the offset")?;
                    self.ws();
                    let at = self.pos;
                    let buffer = self.name()?;
                    let Some((_, data)) = buffers.iter().rev().find(|(b, _)| *b == buffer) else {
                        self.pos = at;
                        return self.fail("a buffer assigned before `dbms_lob.write`");
                    };
                    LobOp::Write {
                        amount,
                        offset,
                        data: *data,
                    }
                } else if call.eq_ignore_ascii_case("trim") {
                    LobOp::Trim {
                        length: self.count()?,
                    }
                } else {
                    // `erase`, the one left.
                    self.ws();
                    let amount = if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                        self.count()?
                    } else {
                        let at = self.pos;
                        let var = self.name()?;
                        match numbers.iter().rev().find(|(n, _)| *n == var) {
                            Some((_, n)) => *n,
                            None => {
                                self.pos = at;
                                return self.fail("an amount assigned before `dbms_lob.erase`");
                            }
                        }
                    };
                    self.expect_byte(b',', "`,` after the amount")?;
                    LobOp::Erase {
                        amount,
                        offset: self.count()?,
                    }
                };
                self.expect_byte(b')', "`)`")?;
                self.expect_byte(b';', "`;`")?;
                out.ops.push(op);
                continue;
            }
            self.ws();
            if !(self.byte(b':') && self.byte(b'=')) {
                return self.fail("`:=` after the variable");
            }
            self.ws();
            if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                numbers.push((name, self.count()?));
            } else {
                let at = self.pos;
                let data = self.literal()?;
                if !matches!(
                    data,
                    Literal::Str(_) | Literal::HexToRaw(_) | Literal::Unistr(_)
                ) {
                    self.pos = at;
                    return self.fail("a quoted string, HEXTORAW or UNISTR as LOB data");
                }
                buffers.push((name, data));
            }
            self.expect_byte(b';', "`;` after the assignment")?;
        }
    }
}

/// Parses a LOB row's `SQL_REDO` (CSF continuation rows already joined).
pub fn parse_lob(sql: &str) -> Result<LobFragment<'_>> {
    let mut c = Cursor {
        s: sql,
        b: sql.as_bytes(),
        pos: 0,
    };
    c.lob_fragment().map_err(|f| redo_error(sql, f))
}

impl LobFragment<'_> {
    /// The fragment as LogMiner writes it (the inverse of [`parse_lob`], for tools and tests).
    pub fn to_sql(&self) -> String {
        let mut out = String::from(
            "DECLARE loc_c CLOB; buf_c VARCHAR2(6174); loc_b BLOB; buf_b RAW(6174); e_len NUMBER; BEGIN",
        );
        let var = if self.locator.as_ref().is_some_and(|l| l.binary) {
            "b"
        } else {
            "c"
        };
        if let Some(l) = &self.locator {
            out.push_str(&format!(
                " select \"{}\" into loc_{var} from \"{}\".\"{}\"",
                l.column, l.schema, l.table
            ));
            for (i, (name, value)) in l.key.iter().enumerate() {
                out.push_str(if i == 0 { " where \"" } else { " and \"" });
                out.push_str(name);
                out.push('"');
                if *value == Literal::Null {
                    out.push_str(" IS NULL");
                } else {
                    out.push_str(" = ");
                    value.write_sql(&mut out);
                }
            }
            out.push_str(" for update;");
        }
        for op in &self.ops {
            match op {
                LobOp::Write {
                    amount,
                    offset,
                    data,
                } => {
                    out.push_str(&format!(" buf_{var} := "));
                    data.write_sql(&mut out);
                    out.push_str(&format!(
                        "; dbms_lob.write(loc_{var}, {amount}, {offset}, buf_{var});"
                    ));
                }
                LobOp::Trim { length } => {
                    out.push_str(&format!(" dbms_lob.trim(loc_{var}, {length});"));
                }
                LobOp::Erase { amount, offset } => out.push_str(&format!(
                    " e_len := {amount}; dbms_lob.erase(loc_{var}, e_len, {offset});"
                )),
            }
        }
        out.push_str(" END;");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(raw: &str) -> Literal<'_> {
        Literal::Str(RawStr { raw })
    }

    #[test]
    fn insert_with_every_literal_form() {
        let sql = r#"insert into "HR"."EMP"("ID","NAME","HIRED","TS","TZ","RAW","NOTE","DOC","PIC","AMT") values ('7','O''Brien',TO_DATE('2024-02-29 13:05:00', 'YYYY-MM-DD HH24:MI:SS'),TO_TIMESTAMP('2024-02-29 13:05:00.25'),TO_TIMESTAMP_TZ('2024-02-29 13:05:00.25 +02:00', 'YYYY-MM-DD HH24:MI:SS.FF TZH:TZM'),HEXTORAW('0aff'),UNISTR('caf\00E9'),EMPTY_CLOB(),EMPTY_BLOB(),-12.50);"#;
        let err = parse_redo(sql).unwrap_err();
        assert_eq!(err.expected, "`,` between value and format");
        let sql = sql.replace(
            "TO_TIMESTAMP('2024-02-29 13:05:00.25')",
            "TO_TIMESTAMP('2024-02-29 13:05:00.25', 'YYYY-MM-DD HH24:MI:SS.FF')",
        );
        let st = parse_redo(&sql).unwrap();
        assert_eq!(st.kind, DmlKind::Insert);
        assert_eq!((st.schema, st.table), ("HR", "EMP"));
        assert_eq!(st.values.len(), 10);
        assert_eq!(st.values[0], ("ID", s("7")));
        match st.values[1].1 {
            Literal::Str(r) => assert_eq!(r.text(), "O'Brien"),
            ref other => panic!("{other:?}"),
        }
        assert!(matches!(st.values[2].1, Literal::Date(v, _) if v.raw == "2024-02-29 13:05:00"));
        assert!(matches!(st.values[3].1, Literal::Timestamp(..)));
        assert!(matches!(st.values[4].1, Literal::TimestampTz(..)));
        assert!(matches!(st.values[5].1, Literal::HexToRaw(r) if r.raw == "0aff"));
        assert!(matches!(st.values[6].1, Literal::Unistr(r) if r.raw == r"caf\00E9"));
        assert_eq!(st.values[7].1, Literal::EmptyClob);
        assert_eq!(st.values[8].1, Literal::EmptyBlob);
        assert_eq!(st.values[9].1, Literal::Number("-12.50"));
    }

    #[test]
    fn update_after_image_overlays_set_on_where() {
        let sql = r#"update "HR"."EMP" set "NAME" = 'Smith', "AMT" = NULL where "ID" = '7' and "NAME" IS NULL and "AMT" = '3' and ROWID = 'AAAR3sAAEAAAACXAAA';"#;
        let st = parse_redo(sql).unwrap();
        assert_eq!(st.kind, DmlKind::Update);
        assert_eq!(
            st.before,
            vec![("ID", s("7")), ("NAME", Literal::Null), ("AMT", s("3"))]
        );
        assert_eq!(
            st.after_image().unwrap(),
            vec![("ID", s("7")), ("NAME", s("Smith")), ("AMT", Literal::Null)]
        );
    }

    #[test]
    fn delete_and_case_and_whitespace() {
        let sql = "DELETE   FROM \"A\".\"B\"\n WHERE \"X\" = 5 AND \"Y\" IS  NULL";
        let st = parse_redo(sql).unwrap();
        assert_eq!(st.kind, DmlKind::Delete);
        assert_eq!(
            st.before,
            vec![("X", Literal::Number("5")), ("Y", Literal::Null)]
        );
        assert!(st.after_image().is_none());
    }

    #[test]
    fn errors_name_the_byte_and_what_was_expected() {
        let e = parse_redo(r#"insert into "A"."B"("X","Y") values ('1');"#).unwrap_err();
        assert_eq!(e.expected, "`,` between values (fewer values than columns)");
        assert_eq!(e.offset, 40);
        let e = parse_redo(r#"insert into "A"."B"("X") values ('1);"#).unwrap_err();
        assert_eq!(e.expected, "a closing `'` of the string");
        assert_eq!(e.offset, 33);
        let e = parse_redo("create table x (a int)").unwrap_err();
        assert_eq!(e.offset, 0);
        assert!(e.to_string().contains("`create table x (a int)`"), "{e}");
        let e = parse_redo(r#"update "A"."B" set "X" = FOO('1')"#).unwrap_err();
        assert_eq!(e.offset, 25);
        let e = parse_redo(r#"delete from "A"."B" where "X" = '1' trailing"#).unwrap_err();
        assert_eq!(e.expected, "the end of the statement");
    }

    use proptest::prelude::*;

    /// Values as a database holds them, rendered the way LogMiner writes them.
    #[derive(Debug, Clone)]
    enum Val {
        Null,
        Text(String),
        Num(String),
        Hex(Vec<u8>),
        Uni(String),
        Date(u32, u32, u32, u32),
        Clob,
    }

    fn val() -> impl Strategy<Value = Val> {
        prop_oneof![
            Just(Val::Null),
            ".{0,40}".prop_map(Val::Text),
            "'{1,3}[a-z ]{0,5}'{0,3}".prop_map(Val::Text),
            "-?[0-9]{1,20}(\\.[0-9]{1,10})?".prop_map(Val::Num),
            prop::collection::vec(any::<u8>(), 0..16).prop_map(Val::Hex),
            "\\PC{0,12}".prop_map(Val::Uni),
            (1u32..9999, 1u32..13, 1u32..29, 0u32..86400)
                .prop_map(|(y, m, d, s)| Val::Date(y, m, d, s)),
            Just(Val::Clob),
        ]
    }

    fn unistr_escape(s: &str) -> String {
        let mut out = String::new();
        for u in s.encode_utf16() {
            out.push_str(&format!("\\{u:04X}"));
        }
        out
    }

    fn render(v: &Val) -> String {
        match v {
            Val::Null => "NULL".into(),
            Val::Text(t) => format!("'{}'", t.replace('\'', "''")),
            Val::Num(n) => n.clone(),
            Val::Hex(b) => format!(
                "HEXTORAW('{}')",
                b.iter().map(|x| format!("{x:02X}")).collect::<String>()
            ),
            Val::Uni(s) => format!("UNISTR('{}')", unistr_escape(s)),
            Val::Date(y, m, d, s) => format!(
                "TO_DATE('{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}', 'YYYY-MM-DD HH24:MI:SS')",
                s / 3600,
                s / 60 % 60,
                s % 60
            ),
            Val::Clob => "EMPTY_CLOB()".into(),
        }
    }

    fn check(v: &Val, lit: &Literal<'_>) -> std::result::Result<(), TestCaseError> {
        use crate::event::Value;
        use crate::sources::oracle::values::to_value;
        let got = to_value(lit, None).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want = match v {
            Val::Null => Value::Null,
            Val::Text(t) => Value::String(t.clone()),
            Val::Num(n) => Value::Decimal(crate::event::Decimal::parse(n).unwrap()),
            Val::Hex(b) => Value::Bytes(b.clone()),
            Val::Uni(s) => Value::String(s.clone()),
            Val::Date(y, m, d, s) => Value::Timestamp(
                chrono::NaiveDate::from_ymd_opt(*y as i32, *m, *d)
                    .unwrap()
                    .and_hms_opt(s / 3600, s / 60 % 60, s % 60)
                    .unwrap(),
            ),
            Val::Clob => Value::String(String::new()),
        };
        prop_assert_eq!(got, want);
        Ok(())
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof!["[A-Z][A-Z0-9_$#]{0,29}", "[a-zA-Z0-9 _.,()=']{1,20}"]
    }

    proptest! {
        #[test]
        fn rendered_statements_parse_back(
            schema in name(),
            table in name(),
            row in prop::collection::vec((name(), val()), 1..12),
            set in prop::collection::vec((name(), val()), 1..4),
            kind in 0u8..3,
        ) {
            let cols = |r: &[(String, Val)]| -> String {
                r.iter().map(|(n, _)| format!("\"{n}\"")).collect::<Vec<_>>().join(",")
            };
            let conds = |r: &[(String, Val)]| -> String {
                r.iter()
                    .map(|(n, v)| match v {
                        Val::Null => format!("\"{n}\" IS NULL"),
                        v => format!("\"{n}\" = {}", render(v)),
                    })
                    .collect::<Vec<_>>()
                    .join(" and ")
            };
            let sql = match kind {
                0 => format!(
                    "insert into \"{schema}\".\"{table}\"({}) values ({});",
                    cols(&row),
                    row.iter().map(|(_, v)| render(v)).collect::<Vec<_>>().join(",")
                ),
                1 => format!(
                    "update \"{schema}\".\"{table}\" set {} where {} and ROWID = 'AAAR3sAAEAAAACXAAA';",
                    set.iter().map(|(n, v)| format!("\"{n}\" = {}", render(v))).collect::<Vec<_>>().join(", "),
                    conds(&row)
                ),
                _ => format!("delete from \"{schema}\".\"{table}\" where {};", conds(&row)),
            };
            let st = parse_redo(&sql).map_err(|e| TestCaseError::fail(format!("{e}\n{sql}")))?;
            prop_assert_eq!(st.schema, schema.as_str());
            prop_assert_eq!(st.table, table.as_str());
            let image = if kind == 0 { &st.values } else { &st.before };
            let expected_values = &row;
            prop_assert_eq!(image.len(), expected_values.len());
            for ((n, lit), (en, ev)) in image.iter().zip(expected_values) {
                prop_assert_eq!(*n, en.as_str());
                check(ev, lit)?;
            }
            if kind == 1 {
                prop_assert_eq!(st.values.len(), set.len());
                for ((n, lit), (en, ev)) in st.values.iter().zip(&set) {
                    prop_assert_eq!(*n, en.as_str());
                    check(ev, lit)?;
                }
            }
            // The renderer is the parser's inverse.
            let again = st.to_sql();
            prop_assert_eq!(parse_redo(&again).map_err(|e| TestCaseError::fail(e.to_string()))?, st);
        }

        #[test]
        fn find_byte_is_position(
            hay in prop::collection::vec(prop::sample::select(vec![b'a', b'\'', b'"', 0xff, 0x80]), 0..200),
            from in 0usize..200,
            needle in prop::sample::select(vec![b'\'', b'"', 0xff]),
        ) {
            let from = from.min(hay.len());
            let want = hay[from..].iter().position(|c| *c == needle).map(|n| from + n);
            prop_assert_eq!(find_byte(&hay, from, needle), want);
        }

        #[test]
        fn arbitrary_input_never_panics(sql in ".{0,200}") {
            let _ = parse_redo(&sql);
        }
    }
}

#[cfg(test)]
mod lob_tests {
    use super::*;
    use proptest::prelude::*;

    const DECLARE: &str = "DECLARE \n loc_c CLOB; \n buf_c VARCHAR2(6174); \n loc_b BLOB; \n buf_b RAW(6174); \n loc_nc NCLOB; \n buf_nc NVARCHAR2(6174); \nBEGIN\n";

    fn s(raw: &str) -> Literal<'_> {
        Literal::Str(RawStr { raw })
    }

    #[test]
    fn a_locator_names_the_table_column_and_row() {
        let sql = format!(
            "{DECLARE} select \"DOC\" into loc_c from \"BANK\".\"DOCS\" where \"ID\" = '7' and \"KIND\" IS NULL for update;"
        );
        let f = parse_lob(&sql).unwrap();
        assert_eq!(
            f.locator,
            Some(LobLocator {
                schema: "BANK",
                table: "DOCS",
                column: "DOC",
                binary: false,
                key: vec![("ID", s("7")), ("KIND", Literal::Null)],
            })
        );
        assert!(f.ops.is_empty());
        let f = parse_lob(
            "DECLARE loc_b BLOB; BEGIN select \"IMG\" into loc_b from \"A\".\"T\" where \"ID\" = 1 for update;",
        )
        .unwrap();
        assert!(f.locator.unwrap().binary);
    }

    #[test]
    fn writes_trims_and_erases() {
        let f = parse_lob(" buf_c := 'it''s';\n  dbms_lob.write(loc_c, 4, 13, buf_c);").unwrap();
        assert_eq!(f.locator, None);
        assert_eq!(
            f.ops,
            [LobOp::Write {
                amount: 4,
                offset: 13,
                data: s("it''s")
            }]
        );
        let f = parse_lob(" buf_b := HEXTORAW('cafe');\n  dbms_lob.write(loc_b, 2, 1, buf_b);")
            .unwrap();
        assert_eq!(
            f.ops,
            [LobOp::Write {
                amount: 2,
                offset: 1,
                data: Literal::HexToRaw(RawStr { raw: "cafe" })
            }]
        );
        assert_eq!(
            parse_lob("  dbms_lob.trim(loc_c, 0);").unwrap().ops,
            [LobOp::Trim { length: 0 }]
        );
        assert_eq!(
            parse_lob(" e_len := 2;\n  dbms_lob.erase(loc_c, e_len, 3);")
                .unwrap()
                .ops,
            [LobOp::Erase {
                amount: 2,
                offset: 3
            }]
        );
        assert_eq!(
            parse_lob("DBMS_LOB.ERASE(loc_c, 5, 1);").unwrap().ops,
            [LobOp::Erase {
                amount: 5,
                offset: 1
            }]
        );
    }

    #[test]
    fn a_whole_block_with_several_calls() {
        let sql = format!(
            "{DECLARE} select \"DOC\" into loc_c from \"S\".\"T\" where \"ID\" = '1' for update;\n buf_c := 'ab';\n  dbms_lob.write(loc_c, 2, 1, buf_c);\n buf_c := UNISTR('\\00E9');\n  dbms_lob.write(loc_c, 1, 3, buf_c);\n  dbms_lob.trim(loc_c, 3);\nEND;"
        );
        let f = parse_lob(&sql).unwrap();
        assert_eq!(f.locator.as_ref().map(|l| l.column), Some("DOC"));
        assert_eq!(f.ops.len(), 3);
        assert_eq!(
            f.ops[1],
            LobOp::Write {
                amount: 1,
                offset: 3,
                data: Literal::Unistr(RawStr { raw: "\\00E9" })
            }
        );
        assert_eq!(parse_lob(&f.to_sql()).unwrap(), f);
    }

    #[test]
    fn a_broken_fragment_says_where_and_what() {
        let cases = [
            (
                " buf_c := 'cut off;\n dbms_lob.write(loc_c, 7, 1, buf_c);",
                10,
                "a closing `'` of the string",
            ),
            (
                " dbms_lob.write(loc_c, 2, 1, buf_c);",
                29,
                "a buffer assigned before `dbms_lob.write`",
            ),
            (
                " dbms_lob.copy(loc_c, 2, 1);",
                10,
                "`write`, `trim` or `erase`",
            ),
            (" dbms_lob.trim(loc_c, x);", 22, "a whole number"),
            (
                " buf_c := TO_DATE('1', 'x');",
                10,
                "a quoted string, HEXTORAW or UNISTR as LOB data",
            ),
            ("DECLARE loc_c CLOB;", 19, "`BEGIN` after the declarations"),
            (
                " dbms_lob.trim(loc_c, 1); END; x",
                31,
                "the end of the block",
            ),
            (
                " dbms_lob.erase(loc_c, n, 1);",
                23,
                "an amount assigned before `dbms_lob.erase`",
            ),
        ];
        for (sql, offset, expected) in cases {
            let e = parse_lob(sql).unwrap_err();
            assert_eq!((e.offset, e.expected), (offset, expected), "{sql}");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, u64, String),
        Trim(u64),
        Erase(u64, u64),
    }

    proptest! {
        #[test]
        fn fragments_render_back_to_themselves(
            locator in prop::option::of(("[A-Z][A-Z0-9_]{0,8}", any::<bool>(), prop::collection::vec(("[A-Z]{1,6}", "[a-z0-9' ]{0,6}"), 1..3))),
            ops in prop::collection::vec(prop_oneof![
                (1u64..5000, 1u64..5000, "[a-zA-Z0-9 ',;()]{0,20}").prop_map(|(a, o, t)| Op::Write(a, o, t)),
                (0u64..5000).prop_map(Op::Trim),
                (0u64..5000, 1u64..5000).prop_map(|(a, o)| Op::Erase(a, o)),
            ], 0..5),
        ) {
            let texts: Vec<String> = ops.iter().map(|op| match op {
                Op::Write(_, _, t) => t.replace('\'', "''"),
                _ => String::new(),
            }).collect();
            let keys: Vec<(String, String)> = locator.as_ref().map(|(_, _, k)| {
                k.iter().map(|(n, v)| (n.clone(), v.replace('\'', "''"))).collect()
            }).unwrap_or_default();
            let binary = locator.as_ref().is_some_and(|l| l.1);
            let fragment = LobFragment {
                locator: locator.as_ref().map(|(column, binary, _)| LobLocator {
                    schema: "S",
                    table: "T",
                    column,
                    binary: *binary,
                    key: keys.iter().map(|(n, v)| (n.as_str(), Literal::Str(RawStr { raw: v }))).collect(),
                }),
                ops: ops.iter().zip(&texts).map(|(op, t)| match op {
                    Op::Write(a, o, _) => LobOp::Write {
                        amount: *a,
                        offset: *o,
                        data: if binary {
                            Literal::HexToRaw(RawStr { raw: "0aff" })
                        } else {
                            Literal::Str(RawStr { raw: t })
                        },
                    },
                    Op::Trim(l) => LobOp::Trim { length: *l },
                    Op::Erase(a, o) => LobOp::Erase { amount: *a, offset: *o },
                }).collect(),
            };
            let sql = fragment.to_sql();
            prop_assert_eq!(parse_lob(&sql).map_err(|e| TestCaseError::fail(format!("{e}: {sql}")))?, fragment);
        }

        #[test]
        fn arbitrary_fragments_never_panic(sql in ".{0,200}") {
            let _ = parse_lob(&sql);
        }
    }
}

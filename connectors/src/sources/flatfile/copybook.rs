//! COBOL copybook parser: data description entries (levels 01-49, 66 and 88 skipped) to a
//! flattened [`Layout`].
//!
//! Reference format: columns 1-6 are the sequence area, column 7 the indicator (`*` and `/`
//! comment lines, `D` debugging lines are skipped, `-` continues a literal), columns 8-72 the
//! code, 73-80 ignored. Free format (level numbers starting in columns 1-6) is recognised, and
//! `*>` comments work in both.

use super::layout::{Field, FieldKind, Layout, LayoutError, Occurs, SignPosition, Variant};

const MAX_DIGITS: usize = 38;

fn cb_err(line: usize, reason: impl Into<String>) -> LayoutError {
    LayoutError::Copybook {
        line,
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------
// Source lines and tokens

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Literal,
    Period,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

/// True when the text looks like free format: some line starts a 1-2 digit level number in
/// columns 1-6 followed by a data name within the first 7 columns.
fn looks_free(text: &str) -> bool {
    text.lines().any(|line| {
        let chars: Vec<char> = line.chars().take(8).collect();
        let first = match chars.iter().position(|c| !c.is_whitespace()) {
            Some(i) if i < 6 => i,
            _ => return false,
        };
        let mut i = first;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
        let digits = i - first;
        if digits == 0 || digits > 2 || i >= chars.len() || chars[i] != ' ' {
            return false;
        }
        while i < chars.len() && chars[i] == ' ' {
            i += 1;
        }
        i < 7 && i < chars.len() && chars[i].is_ascii_alphabetic()
    })
}

/// The code area of each line, with its 1-based line number and whether it continues the
/// previous line's literal.
fn code_lines(text: &str) -> Result<Vec<(usize, String, bool)>, LayoutError> {
    let free = looks_free(text);
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let raw = raw.replace('\t', "    ");
        let (code, continued) = if free {
            let t = raw.trim_start();
            if t.starts_with('*') {
                continue;
            }
            (raw.clone(), false)
        } else {
            let chars: Vec<char> = raw.chars().collect();
            if chars.len() < 7 {
                // Only a sequence number (or nothing).
                continue;
            }
            let continued = match chars[6] {
                ' ' => false,
                '*' | '/' | 'D' | 'd' | '$' => continue,
                '-' => true,
                other => {
                    return Err(cb_err(
                        line_no,
                        format!(
                            "column 7 holds `{other}`, which is no indicator (is this a free-format copybook indented by fewer than 7 columns?)"
                        ),
                    ));
                }
            };
            let end = chars.len().min(72);
            (chars[7..end].iter().collect::<String>(), continued)
        };
        let trimmed = code.trim_start();
        if trimmed.starts_with(">>") || trimmed.starts_with('$') {
            continue;
        }
        out.push((line_no, code, continued));
    }
    Ok(out)
}

fn tokenize(text: &str) -> Result<Vec<Token>, LayoutError> {
    let lines = code_lines(text)?;
    let mut toks = Vec::new();
    // An open literal: its quote character and the line it started on.
    let mut open: Option<(char, usize)> = None;
    for (line, code, continued) in lines {
        let chars: Vec<char> = code.chars().collect();
        let mut i = 0;
        if let Some((q, start)) = open {
            if !continued {
                return Err(cb_err(start, "unterminated literal"));
            }
            // The continuation resumes after the first quote on the line.
            match chars.iter().position(|c| *c == q) {
                Some(p) => i = p + 1,
                None => return Err(cb_err(line, "continuation line without a quote")),
            }
            match scan_literal(&chars, &mut i, q) {
                true => {
                    toks.push(Token {
                        tok: Tok::Literal,
                        line: start,
                    });
                    open = None;
                }
                false => continue,
            }
        } else if continued && chars.iter().any(|c| !c.is_whitespace()) {
            // A continued word (rare): glue it to the previous word.
            let word: String = chars.iter().collect::<String>().trim().to_string();
            if let Some(Token {
                tok: Tok::Word(w), ..
            }) = toks.last_mut()
            {
                w.push_str(&word);
                continue;
            }
            return Err(cb_err(line, "continuation line continues nothing"));
        }
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            if c == '*' && chars.get(i + 1) == Some(&'>') {
                break;
            }
            let at_end = |j: usize| j + 1 >= chars.len() || chars[j + 1].is_whitespace();
            if c == '.' && at_end(i) {
                toks.push(Token {
                    tok: Tok::Period,
                    line,
                });
                i += 1;
                continue;
            }
            if (c == ',' || c == ';') && at_end(i) {
                i += 1;
                continue;
            }
            let prefixed = c.is_ascii_alphabetic()
                && matches!(chars.get(i + 1), Some('\'') | Some('"'))
                && "XxNnZzHhBbGg".contains(c);
            if c == '\'' || c == '"' || prefixed {
                if prefixed {
                    i += 1;
                }
                let q = chars[i];
                i += 1;
                if scan_literal(&chars, &mut i, q) {
                    toks.push(Token {
                        tok: Tok::Literal,
                        line,
                    });
                } else {
                    open = Some((q, line));
                    break;
                }
                continue;
            }
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() {
                if chars[i] == '.' && at_end(i) {
                    break;
                }
                if (chars[i] == ',' || chars[i] == ';') && at_end(i) {
                    break;
                }
                if chars[i] == '\'' || chars[i] == '"' {
                    break;
                }
                i += 1;
            }
            toks.push(Token {
                tok: Tok::Word(chars[start..i].iter().collect()),
                line,
            });
        }
    }
    if let Some((_, start)) = open {
        return Err(cb_err(start, "unterminated literal"));
    }
    Ok(toks)
}

/// Scans to the closing quote (a doubled quote is an escaped one); true when closed.
fn scan_literal(chars: &[char], i: &mut usize, q: char) -> bool {
    while *i < chars.len() {
        if chars[*i] == q {
            if chars.get(*i + 1) == Some(&q) {
                *i += 2;
                continue;
            }
            *i += 1;
            return true;
        }
        *i += 1;
    }
    false
}

// ---------------------------------------------------------------------------------------
// Entries

#[derive(Debug, Clone, Copy, PartialEq)]
enum Usage {
    Display,
    Packed,
    Binary,
}

#[derive(Debug, Clone, Copy)]
struct SignClause {
    leading: bool,
    separate: bool,
}

#[derive(Debug, Clone)]
struct OccursClause {
    min: usize,
    max: usize,
    depending_on: Option<(String, Vec<String>)>,
}

#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    level: u8,
    /// `None` for FILLER (written or implied).
    name: Option<String>,
    redefines: Option<String>,
    pic: Option<String>,
    usage: Option<Usage>,
    sign: Option<SignClause>,
    occurs: Option<OccursClause>,
}

const CLAUSE_WORDS: &[&str] = &[
    "REDEFINES",
    "PIC",
    "PICTURE",
    "USAGE",
    "SIGN",
    "LEADING",
    "TRAILING",
    "OCCURS",
    "VALUE",
    "VALUES",
    "JUSTIFIED",
    "JUST",
    "BLANK",
    "SYNC",
    "SYNCHRONIZED",
    "GLOBAL",
    "EXTERNAL",
    "ASCENDING",
    "DESCENDING",
    "INDEXED",
    "DISPLAY",
    "COMP",
    "COMPUTATIONAL",
    "COMP-3",
    "COMPUTATIONAL-3",
    "COMP-4",
    "COMPUTATIONAL-4",
    "COMP-5",
    "COMPUTATIONAL-5",
    "BINARY",
    "PACKED-DECIMAL",
];

fn is_clause_word(w: &str) -> bool {
    let u = w.to_ascii_uppercase();
    CLAUSE_WORDS.contains(&u.as_str()) || u.starts_with("COMP") || u == "POINTER" || u == "INDEX"
}

fn usage_of(word: &str, line: usize) -> Result<Option<Usage>, LayoutError> {
    let u = word.to_ascii_uppercase();
    Ok(Some(match u.as_str() {
        "DISPLAY" => Usage::Display,
        "COMP-3" | "COMPUTATIONAL-3" | "PACKED-DECIMAL" => Usage::Packed,
        "COMP" | "COMPUTATIONAL" | "COMP-4" | "COMPUTATIONAL-4" | "BINARY" | "COMP-5"
        | "COMPUTATIONAL-5" => Usage::Binary,
        "COMP-1" | "COMPUTATIONAL-1" | "COMP-2" | "COMPUTATIONAL-2" | "COMP-X" | "COMP-N"
        | "COMP-6" | "COMPUTATIONAL-6" | "POINTER" | "INDEX" | "NATIONAL" | "DISPLAY-1"
        | "FLOAT-SHORT" | "FLOAT-LONG" | "PROCEDURE-POINTER" | "FUNCTION-POINTER" => {
            return Err(cb_err(line, format!("USAGE {u} is not supported")));
        }
        _ => return Ok(None),
    }))
}

fn word(t: Option<&Token>) -> Option<&str> {
    match t {
        Some(Token {
            tok: Tok::Word(w), ..
        }) => Some(w.as_str()),
        _ => None,
    }
}

fn is_word(t: Option<&Token>, candidates: &[&str]) -> bool {
    word(t).is_some_and(|w| candidates.iter().any(|c| w.eq_ignore_ascii_case(c)))
}

fn parse_count(t: Option<&Token>, line: usize, what: &str) -> Result<usize, LayoutError> {
    word(t)
        .and_then(|w| w.parse::<usize>().ok())
        .ok_or_else(|| cb_err(line, format!("{what} needs a whole number")))
}

/// Parses one entry's tokens (without the period). `None` for entries that describe no
/// storage (66, 88) or compiler directives.
fn parse_entry(toks: &[Token]) -> Result<Option<Entry>, LayoutError> {
    let line = toks[0].line;
    let first = match word(toks.first()) {
        Some(w) => w,
        None => return Err(cb_err(line, "an entry must start with a level number")),
    };
    let level: u8 = match first.parse() {
        Ok(l) => l,
        Err(_) => {
            let u = first.to_ascii_uppercase();
            if matches!(u.as_str(), "EJECT" | "SKIP1" | "SKIP2" | "SKIP3") {
                return Ok(None);
            }
            if u == "COPY" || u == "REPLACE" {
                return Err(cb_err(
                    line,
                    format!("{u} is not supported: inline the copied member"),
                ));
            }
            return Err(cb_err(
                line,
                format!("expected a level number, found `{first}`"),
            ));
        }
    };
    match level {
        66 | 88 => return Ok(None),
        77 => return Err(cb_err(line, "level 77 items are not part of a record")),
        1..=49 => {}
        _ => return Err(cb_err(line, format!("level {level} is not a data level"))),
    }
    let mut i = 1;
    let mut name = None;
    if let Some(w) = word(toks.get(1))
        && !is_clause_word(w)
    {
        if !w.eq_ignore_ascii_case("FILLER") {
            name = Some(w.to_string());
        }
        i = 2;
    }
    let mut e = Entry {
        line,
        level,
        name,
        redefines: None,
        pic: None,
        usage: None,
        sign: None,
        occurs: None,
    };
    while i < toks.len() {
        let t = &toks[i];
        let tl = t.line;
        let w = match &t.tok {
            Tok::Word(w) => w.to_ascii_uppercase(),
            Tok::Literal => return Err(cb_err(tl, "unexpected literal")),
            Tok::Period => unreachable!("entries are split at periods"),
        };
        i += 1;
        match w.as_str() {
            "IS" | "GLOBAL" | "EXTERNAL" => {}
            "REDEFINES" => {
                let target =
                    word(toks.get(i)).ok_or_else(|| cb_err(tl, "REDEFINES needs a data name"))?;
                e.redefines = Some(target.to_string());
                i += 1;
            }
            "PIC" | "PICTURE" => {
                if is_word(toks.get(i), &["IS"]) {
                    i += 1;
                }
                let pic = word(toks.get(i))
                    .ok_or_else(|| cb_err(tl, "PICTURE needs a character string"))?;
                e.pic = Some(pic.to_string());
                i += 1;
            }
            "USAGE" => {
                if is_word(toks.get(i), &["IS"]) {
                    i += 1;
                }
                let u = word(toks.get(i)).ok_or_else(|| cb_err(tl, "USAGE needs a usage"))?;
                e.usage = Some(
                    usage_of(u, tl)?.ok_or_else(|| cb_err(tl, format!("unknown USAGE `{u}`")))?,
                );
                i += 1;
            }
            "SIGN" | "LEADING" | "TRAILING" => {
                let mut pos = w.clone();
                if pos == "SIGN" {
                    if is_word(toks.get(i), &["IS"]) {
                        i += 1;
                    }
                    pos = word(toks.get(i))
                        .map(str::to_ascii_uppercase)
                        .unwrap_or_default();
                    i += 1;
                }
                let leading = match pos.as_str() {
                    "LEADING" => true,
                    "TRAILING" => false,
                    _ => return Err(cb_err(tl, "SIGN needs LEADING or TRAILING")),
                };
                let mut separate = false;
                if is_word(toks.get(i), &["SEPARATE"]) {
                    separate = true;
                    i += 1;
                    if is_word(toks.get(i), &["CHARACTER"]) {
                        i += 1;
                    }
                }
                e.sign = Some(SignClause { leading, separate });
            }
            "OCCURS" => {
                let first = parse_count(toks.get(i), tl, "OCCURS")?;
                i += 1;
                let (min, max) = if is_word(toks.get(i), &["TO"]) {
                    i += 1;
                    let max = parse_count(toks.get(i), tl, "OCCURS ... TO")?;
                    i += 1;
                    (first, max)
                } else {
                    (first, first)
                };
                if is_word(toks.get(i), &["TIMES"]) {
                    i += 1;
                }
                let mut depending_on = None;
                if is_word(toks.get(i), &["DEPENDING"]) {
                    i += 1;
                    if is_word(toks.get(i), &["ON"]) {
                        i += 1;
                    }
                    let name = word(toks.get(i))
                        .ok_or_else(|| cb_err(tl, "DEPENDING ON needs a data name"))?
                        .to_string();
                    i += 1;
                    let mut qualifiers = Vec::new();
                    while is_word(toks.get(i), &["OF", "IN"]) {
                        let q = word(toks.get(i + 1))
                            .ok_or_else(|| cb_err(tl, "OF/IN needs a data name"))?;
                        qualifiers.push(q.to_string());
                        i += 2;
                    }
                    depending_on = Some((name, qualifiers));
                }
                if min != max && depending_on.is_none() {
                    return Err(cb_err(tl, "OCCURS m TO n needs DEPENDING ON"));
                }
                // ASCENDING/DESCENDING KEY IS names, INDEXED BY names: skipped.
                while is_word(toks.get(i), &["ASCENDING", "DESCENDING", "INDEXED"]) {
                    i += 1;
                    while is_word(toks.get(i), &["KEY", "IS", "BY"]) {
                        i += 1;
                    }
                    while let Some(n) = word(toks.get(i)) {
                        if is_clause_word(n) {
                            break;
                        }
                        i += 1;
                    }
                }
                e.occurs = Some(OccursClause {
                    min,
                    max,
                    depending_on,
                });
            }
            "VALUE" | "VALUES" => {
                if is_word(toks.get(i), &["IS", "ARE"]) {
                    i += 1;
                }
                if is_word(toks.get(i), &["ALL"]) {
                    i += 1;
                }
                if i >= toks.len() {
                    return Err(cb_err(tl, "VALUE needs a literal"));
                }
                i += 1;
            }
            "JUSTIFIED" | "JUST" => {
                if is_word(toks.get(i), &["RIGHT"]) {
                    i += 1;
                }
            }
            "BLANK" => {
                if is_word(toks.get(i), &["WHEN"]) {
                    i += 1;
                }
                if !is_word(toks.get(i), &["ZERO", "ZEROS", "ZEROES"]) {
                    return Err(cb_err(tl, "BLANK WHEN needs ZERO"));
                }
                i += 1;
            }
            "SYNC" | "SYNCHRONIZED" => {
                return Err(cb_err(
                    tl,
                    "SYNCHRONIZED is not supported (its slack bytes depend on the compiler)",
                ));
            }
            other => match usage_of(other, tl)? {
                Some(u) => e.usage = Some(u),
                None => return Err(cb_err(tl, format!("unexpected word `{other}`"))),
            },
        }
    }
    Ok(Some(e))
}

// ---------------------------------------------------------------------------------------
// Pictures

#[derive(Debug, Clone, Copy, PartialEq)]
enum PicClass {
    Alphanumeric,
    Numeric,
    /// Numeric-edited or alphanumeric-edited: read as text.
    Edited,
}

#[derive(Debug, Clone, Copy)]
struct Picture {
    class: PicClass,
    /// Characters the picture stands for (DISPLAY bytes, sign excluded).
    chars: usize,
    digits: usize,
    scale: usize,
    signed: bool,
}

fn parse_picture(pic: &str, line: usize) -> Result<Picture, LayoutError> {
    let bad = |why: &str| cb_err(line, format!("PICTURE `{pic}`: {why}"));
    let chars: Vec<char> = pic.to_ascii_uppercase().chars().collect();
    // Expand into (symbol, count).
    let mut symbols: Vec<(char, usize)> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let (sym, mut n) = if (c == 'C' && chars.get(i + 1) == Some(&'R'))
            || (c == 'D' && chars.get(i + 1) == Some(&'B'))
        {
            i += 2;
            (if c == 'C' { 'c' } else { 'd' }, 2)
        } else {
            i += 1;
            (c, 1)
        };
        if chars.get(i) == Some(&'(') {
            let close = chars[i..]
                .iter()
                .position(|c| *c == ')')
                .ok_or_else(|| bad("unclosed repeat count"))?;
            let count: String = chars[i + 1..i + close].iter().collect();
            let count: usize = count
                .trim()
                .parse()
                .map_err(|_| bad("repeat count is not a number"))?;
            if count == 0 {
                return Err(bad("repeat count 0"));
            }
            n = n + count - 1;
            i += close + 1;
        }
        symbols.push((sym, n));
    }
    let has = |s: char| symbols.iter().any(|(c, _)| *c == s);
    let count = |s: char| {
        symbols
            .iter()
            .filter(|(c, _)| *c == s)
            .map(|(_, n)| n)
            .sum::<usize>()
    };
    for (c, _) in &symbols {
        if matches!(c, 'N' | 'G' | 'U' | '1' | 'E') {
            return Err(bad(&format!("symbol `{c}` is not supported")));
        }
        if !"XA9SVPZ*+-$,.B0/cd".contains(*c) {
            return Err(bad(&format!("unknown symbol `{c}`")));
        }
    }
    if has('P') {
        return Err(bad("scaling position P is not supported"));
    }
    let edit = symbols.iter().any(|(c, _)| "Z*+-$,.B0/cd".contains(*c));
    if edit {
        if has('S') {
            return Err(bad("S in an edited picture"));
        }
        let chars = symbols
            .iter()
            .filter(|(c, _)| *c != 'V')
            .map(|(_, n)| n)
            .sum();
        return Ok(Picture {
            class: PicClass::Edited,
            chars,
            digits: 0,
            scale: 0,
            signed: false,
        });
    }
    if has('X') || has('A') {
        if has('S') || has('V') {
            return Err(bad("S or V in an alphanumeric picture"));
        }
        return Ok(Picture {
            class: PicClass::Alphanumeric,
            chars: count('X') + count('A') + count('9'),
            digits: 0,
            scale: 0,
            signed: false,
        });
    }
    // Numeric: [S] 9... [V 9...]
    let mut signed = false;
    let mut seen_v = false;
    let (mut digits, mut scale) = (0, 0);
    for (k, (c, n)) in symbols.iter().enumerate() {
        match c {
            'S' if k == 0 && *n == 1 => signed = true,
            'S' => return Err(bad("S must come first, once")),
            'V' if !seen_v && *n == 1 => seen_v = true,
            'V' => return Err(bad("V appears more than once")),
            '9' => {
                digits += n;
                if seen_v {
                    scale += n;
                }
            }
            _ => unreachable!(),
        }
    }
    if digits == 0 {
        return Err(bad("no digit positions"));
    }
    if digits > MAX_DIGITS {
        return Err(bad(&format!(
            "{digits} digits exceed the {MAX_DIGITS} supported"
        )));
    }
    Ok(Picture {
        class: PicClass::Numeric,
        chars: digits,
        digits,
        scale,
        signed,
    })
}

// ---------------------------------------------------------------------------------------
// Tree and flattening

#[derive(Debug)]
struct Node {
    entry: Entry,
    children: Vec<usize>,
    /// Resolved for elementary items: the field without offset/occurs/variants.
    elem: Option<(FieldKind, usize, u8, u8, bool)>,
    /// Bytes of one occurrence.
    size: usize,
}

struct Leaf {
    field: Field,
    name: String,
    ancestors: Vec<String>,
    line: usize,
    odo: Option<(String, Vec<String>)>,
}

struct Flattener<'a> {
    nodes: &'a [Node],
    leaves: Vec<Leaf>,
}

impl Flattener<'_> {
    /// Sizes bottom-up: elementary items from their picture and usage, groups as the sum
    /// of their children (a REDEFINES group counting as its largest alternative).
    fn size(
        nodes: &mut Vec<Node>,
        idx: usize,
        usage: Usage,
        sign: Option<SignClause>,
    ) -> Result<usize, LayoutError> {
        let line = nodes[idx].entry.line;
        let usage = nodes[idx].entry.usage.unwrap_or(usage);
        let sign = nodes[idx].entry.sign.or(sign);
        let children = nodes[idx].children.clone();
        let size = if children.is_empty() {
            let pic = nodes[idx]
                .entry
                .pic
                .clone()
                .ok_or_else(|| cb_err(line, "an elementary item needs a PICTURE clause"))?;
            let p = parse_picture(&pic, line)?;
            let elem = match (p.class, usage) {
                (PicClass::Alphanumeric | PicClass::Edited, Usage::Display) => {
                    (FieldKind::Text, p.chars, 0, 0, false)
                }
                (PicClass::Alphanumeric | PicClass::Edited, _) => {
                    return Err(cb_err(
                        line,
                        format!("PICTURE `{pic}` is not numeric, so it cannot be COMP or COMP-3"),
                    ));
                }
                (PicClass::Numeric, Usage::Display) => {
                    let position = match sign {
                        Some(SignClause {
                            leading: true,
                            separate: true,
                        }) => SignPosition::LeadingSeparate,
                        Some(SignClause {
                            leading: false,
                            separate: true,
                        }) => SignPosition::TrailingSeparate,
                        Some(SignClause {
                            leading: true,
                            separate: false,
                        }) => SignPosition::Leading,
                        _ => SignPosition::Trailing,
                    };
                    let len = p.digits + usize::from(p.signed && position.is_separate());
                    (
                        FieldKind::Zoned { sign: position },
                        len,
                        p.digits as u8,
                        p.scale as u8,
                        p.signed,
                    )
                }
                (PicClass::Numeric, Usage::Packed) => (
                    FieldKind::Packed,
                    p.digits / 2 + 1,
                    p.digits as u8,
                    p.scale as u8,
                    p.signed,
                ),
                (PicClass::Numeric, Usage::Binary) => {
                    let len = match p.digits {
                        1..=4 => 2,
                        5..=9 => 4,
                        10..=18 => 8,
                        _ => {
                            return Err(cb_err(
                                line,
                                format!("binary PICTURE `{pic}` has more than 18 digits"),
                            ));
                        }
                    };
                    (
                        FieldKind::Binary,
                        len,
                        p.digits as u8,
                        p.scale as u8,
                        p.signed,
                    )
                }
            };
            nodes[idx].elem = Some(elem);
            elem.1
        } else {
            if let Some(pic) = &nodes[idx].entry.pic {
                return Err(cb_err(
                    line,
                    format!("group item has a PICTURE (`{pic}`) and subordinate items"),
                ));
            }
            let mut total = 0;
            let mut region = 0;
            for (k, c) in children.iter().enumerate() {
                let one = Self::size(nodes, *c, usage, sign)?;
                let occurs = nodes[*c].entry.occurs.as_ref().map_or(1, |o| o.max);
                let bytes = one * occurs;
                if nodes[*c].entry.redefines.is_some() {
                    if k == 0 {
                        return Err(cb_err(
                            nodes[*c].entry.line,
                            "REDEFINES names no preceding item",
                        ));
                    }
                    region = region.max(bytes);
                } else {
                    total += region;
                    region = bytes;
                }
            }
            total + region
        };
        nodes[idx].size = size;
        Ok(size)
    }

    /// Emits the leaves of `idx` placed at `offset`.
    fn emit(
        &mut self,
        idx: usize,
        offset: usize,
        dims: &[Occurs],
        variants: &[Variant],
        ancestors: &[String],
        odo: Option<&(String, Vec<String>)>,
    ) -> Result<(), LayoutError> {
        let node = &self.nodes[idx];
        let e = &node.entry;
        let mut dims = dims.to_vec();
        let mut odo = odo.cloned();
        if let Some(o) = &e.occurs {
            if e.level == 1 {
                return Err(cb_err(e.line, "OCCURS is not allowed at level 01"));
            }
            if o.depending_on.is_some() && !dims.is_empty() {
                return Err(cb_err(
                    e.line,
                    "OCCURS DEPENDING ON inside another OCCURS is not supported",
                ));
            }
            if o.max == 0 || o.min > o.max {
                return Err(cb_err(
                    e.line,
                    format!("OCCURS {} TO {} is empty or reversed", o.min, o.max),
                ));
            }
            if let Some(d) = &o.depending_on {
                odo = Some(d.clone());
            }
            dims.push(Occurs {
                max: o.max,
                min: o.min,
                depending_on: o.depending_on.as_ref().map(|(n, _)| n.clone()),
                stride: node.size,
                table_offset: offset,
            });
        }
        let mut anc = ancestors.to_vec();
        if let Some((kind, length, digits, scale, signed)) = node.elem {
            if let Some(name) = &e.name {
                self.leaves.push(Leaf {
                    field: Field {
                        name: name.clone(),
                        offset,
                        length,
                        kind,
                        digits,
                        scale,
                        signed,
                        occurs: dims,
                        variants: variants.to_vec(),
                        encoding: None,
                    },
                    name: name.clone(),
                    ancestors: anc,
                    line: e.line,
                    odo,
                });
            }
            return Ok(());
        }
        if let Some(name) = &e.name {
            anc.push(name.clone());
        }
        let children = node.children.clone();
        // A child redefined by later siblings starts a REDEFINES group named after it.
        let mut region_start = offset;
        let mut region = 0;
        let mut group: Option<(usize, String)> = None; // (node, group name)
        for (k, c) in children.iter().enumerate() {
            let ce = &self.nodes[*c].entry;
            let bytes = self.nodes[*c].size * ce.occurs.as_ref().map_or(1, |o| o.max);
            let mut vars = variants.to_vec();
            if let Some(target) = &ce.redefines {
                // The redefined item: the last non-REDEFINES sibling before this one.
                let base = children[..k]
                    .iter()
                    .rev()
                    .find(|s| self.nodes[**s].entry.redefines.is_none())
                    .copied();
                let base = match base {
                    Some(b)
                        if self.nodes[b]
                            .entry
                            .name
                            .as_deref()
                            .is_some_and(|n| n.eq_ignore_ascii_case(target)) =>
                    {
                        b
                    }
                    _ => {
                        return Err(cb_err(
                            ce.line,
                            format!("REDEFINES `{target}`: not the preceding item at this level"),
                        ));
                    }
                };
                if ce.occurs.is_some() {
                    return Err(cb_err(
                        ce.line,
                        "OCCURS on a REDEFINES item is not supported",
                    ));
                }
                if self.nodes[base].entry.occurs.is_some() {
                    return Err(cb_err(
                        ce.line,
                        "REDEFINES of an OCCURS item is not supported",
                    ));
                }
                let gname = group
                    .as_ref()
                    .filter(|(n, _)| *n == base)
                    .map(|(_, g)| g.clone())
                    .unwrap_or_else(|| target.clone());
                vars.push(Variant {
                    group: gname,
                    alternative: ce.name.clone().unwrap_or_else(|| "FILLER".into()),
                });
                region = region.max(bytes);
                self.emit(*c, region_start, &dims, &vars, &anc, odo.as_ref())?;
                continue;
            }
            let child_offset = region_start + region;
            region_start = child_offset;
            region = bytes;
            let redefined = children[k + 1..]
                .iter()
                .take_while(|s| self.nodes[**s].entry.redefines.is_some())
                .count()
                > 0;
            if redefined {
                let gname = ce.name.clone().unwrap_or_else(|| "FILLER".into());
                group = Some((*c, gname.clone()));
                vars.push(Variant {
                    group: gname.clone(),
                    alternative: gname,
                });
            }
            self.emit(*c, child_offset, &dims, &vars, &anc, odo.as_ref())?;
        }
        Ok(())
    }
}

/// Parses a copybook into a layout (validated by the caller).
pub(crate) fn parse(text: &str) -> Result<Layout, LayoutError> {
    let toks = tokenize(text)?;
    // Split into entries at periods.
    let mut entries = Vec::new();
    let mut start = 0;
    for (i, t) in toks.iter().enumerate() {
        if t.tok == Tok::Period {
            if i > start
                && let Some(e) = parse_entry(&toks[start..i])?
            {
                entries.push(e);
            }
            start = i + 1;
        }
    }
    if start < toks.len() {
        // A last entry without its period: accept it (many hand-written copybooks).
        if let Some(e) = parse_entry(&toks[start..])? {
            entries.push(e);
        }
    }
    if entries.is_empty() {
        return Err(cb_err(1, "no data description entries"));
    }

    // Build the tree from level numbers.
    let mut nodes: Vec<Node> = Vec::new();
    let mut roots: Vec<usize> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    for e in entries {
        let level = e.level;
        while let Some(top) = stack.last() {
            if nodes[*top].entry.level >= level {
                stack.pop();
            } else {
                break;
            }
        }
        let idx = nodes.len();
        nodes.push(Node {
            entry: e,
            children: Vec::new(),
            elem: None,
            size: 0,
        });
        match stack.last() {
            Some(parent) => {
                let parent = *parent;
                if nodes[parent].entry.pic.is_some() {
                    return Err(cb_err(
                        nodes[idx].entry.line,
                        format!(
                            "level {level} item under an elementary item (line {}) that has a PICTURE",
                            nodes[parent].entry.line
                        ),
                    ));
                }
                nodes[parent].children.push(idx);
            }
            None => roots.push(idx),
        }
        stack.push(idx);
    }
    let records = roots.iter().filter(|r| nodes[**r].entry.level == 1).count();
    if records > 0
        && let Some(odd) = roots.iter().find(|r| nodes[**r].entry.level != 1)
    {
        return Err(cb_err(
            nodes[*odd].entry.line,
            "a level other than 01 at the top, next to 01 records",
        ));
    }
    // Items without an 01 (a fragment of a record): wrap them in an unnamed group.
    let top: Vec<usize> = if records == 0 {
        let idx = nodes.len();
        let line = nodes[roots[0]].entry.line;
        nodes.push(Node {
            entry: Entry {
                line,
                level: 1,
                name: None,
                redefines: None,
                pic: None,
                usage: None,
                sign: None,
                occurs: None,
            },
            children: roots.clone(),
            elem: None,
            size: 0,
        });
        vec![idx]
    } else {
        roots
    };
    let mut record_length = 0;
    for r in &top {
        // `01 X REDEFINES Y` needs no handling: several 01 records share the area anyway.
        record_length = record_length.max(Flattener::size(&mut nodes, *r, Usage::Display, None)?);
    }
    let mut fl = Flattener {
        nodes: &nodes,
        leaves: Vec::new(),
    };
    let several = top.len() > 1;
    let group = nodes[top[0]]
        .entry
        .name
        .clone()
        .unwrap_or_else(|| "FILLER".into());
    for r in &top {
        let vars = if several {
            vec![Variant {
                group: group.clone(),
                alternative: nodes[*r]
                    .entry
                    .name
                    .clone()
                    .unwrap_or_else(|| "FILLER".into()),
            }]
        } else {
            Vec::new()
        };
        fl.emit(*r, 0, &[], &vars, &[], None)?;
    }
    let mut leaves = fl.leaves;
    if leaves.is_empty() {
        return Err(cb_err(
            nodes[top[0]].entry.line,
            "the record has no named fields",
        ));
    }

    // Resolve OCCURS DEPENDING ON counters to the counter's final name.
    let snapshot: Vec<(String, Vec<String>, String)> = leaves
        .iter()
        .map(|l| (l.name.clone(), l.ancestors.clone(), l.field.name.clone()))
        .collect();
    // Qualify repeated names with their ancestors until unique.
    let mut final_names: Vec<String> = leaves.iter().map(|l| l.name.clone()).collect();
    for depth in 1..=8 {
        let clashing: Vec<usize> = (0..leaves.len())
            .filter(|i| (0..leaves.len()).any(|j| j != *i && final_names[j] == final_names[*i]))
            .collect();
        if clashing.is_empty() {
            break;
        }
        for i in clashing {
            {
                let a = &leaves[i].ancestors;
                let take = depth.min(a.len());
                let mut parts: Vec<String> = a[a.len() - take..].to_vec();
                parts.push(leaves[i].name.clone());
                final_names[i] = parts.join(".");
            }
        }
    }
    for (i, l) in leaves.iter().enumerate() {
        if (0..leaves.len()).any(|j| j != i && final_names[j] == final_names[i]) {
            return Err(cb_err(
                l.line,
                format!("`{}` is defined twice with the same qualification", l.name),
            ));
        }
    }
    for (l, n) in leaves.iter_mut().zip(&final_names) {
        l.field.name = n.clone();
    }
    for i in 0..leaves.len() {
        let Some((name, quals)) = leaves[i].odo.clone() else {
            continue;
        };
        let matches: Vec<usize> = snapshot
            .iter()
            .enumerate()
            .filter(|(_, (n, anc, _))| {
                n.eq_ignore_ascii_case(&name)
                    && quals
                        .iter()
                        .all(|q| anc.iter().any(|a| a.eq_ignore_ascii_case(q)))
            })
            .map(|(k, _)| k)
            .collect();
        let line = leaves[i].line;
        let k = match matches.as_slice() {
            [k] => *k,
            [] => {
                return Err(cb_err(
                    line,
                    format!("DEPENDING ON `{name}`: no such field"),
                ));
            }
            _ => {
                return Err(cb_err(
                    line,
                    format!("DEPENDING ON `{name}` is ambiguous: qualify it with OF"),
                ));
            }
        };
        let counter = &leaves[k].field;
        let table = leaves[i].field.occurs[0].table_offset;
        if !counter.is_numeric() || !counter.occurs.is_empty() || counter.scale != 0 {
            return Err(cb_err(
                line,
                format!("DEPENDING ON `{name}` must be an integer field outside any OCCURS"),
            ));
        }
        if counter.offset + counter.length > table {
            return Err(cb_err(
                line,
                format!("DEPENDING ON `{name}` must lie before the table"),
            ));
        }
        let counter_name = final_names[k].clone();
        leaves[i].field.occurs[0].depending_on = Some(counter_name);
    }
    let fields: Vec<Field> = leaves.into_iter().map(|l| l.field).collect();
    Ok(Layout {
        record_length,
        fields,
        selector: None,
        encoding: None,
        sign_convention: None,
    })
}

//! The grammar of an audit line, stable for log shippers:
//!
//! ```text
//! line  = "event=" NAME *( " " key "=" value )
//! key   = 1*( "a"-"z" / "_" )
//! value = bare / quoted
//! bare  = 1*( printable ASCII but space, '"', '\' and '=' )
//! quoted = '"' *( char / escape ) '"'
//! escape = '\"' / '\\' / '\n' / '\r' / '\t' / '\u{' 1*6HEX '}'
//! ```
//!
//! A value that is not a bare token is quoted; inside quotes, a control
//! character or any whitespace but the space is escaped, so a value from a
//! client (a user name, an rhost) can never end the line, start a field or
//! pass for one. Writers may quote any value (`reason` and `message` always
//! are); parsers accept both forms for every key. Values are cut to
//! [`MAX_VALUE_CHARS`] characters before quoting.

use std::fmt::Write as _;

/// Characters of a value kept; the rest is dropped.
pub const MAX_VALUE_CHARS: usize = 512;

/// One audit line being built.
#[derive(Debug, Clone)]
pub struct Line(String);

impl Line {
    /// `event=NAME`: the first field of every line.
    pub fn new(event: &str) -> Line {
        // Room for a typical line: no growth while it is built.
        let mut line = Line(String::with_capacity(256));
        line.0.push_str("event=");
        push_value(&mut line.0, event, false);
        line
    }

    /// ` key=value`, quoted when it must be.
    pub fn field(mut self, key: &str, value: &str) -> Line {
        self.push(key, value, false);
        self
    }

    /// ` key="value"`, quoted always (free text).
    pub fn text(mut self, key: &str, value: &str) -> Line {
        self.push(key, value, true);
        self
    }

    fn push(&mut self, key: &str, value: &str, quote: bool) {
        self.0.push(' ');
        self.0.push_str(key);
        self.0.push('=');
        push_value(&mut self.0, value, quote);
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn push_value(out: &mut String, value: &str, quote: bool) {
    let value = match value.char_indices().nth(MAX_VALUE_CHARS) {
        Some((cut, _)) => &value[..cut],
        None => value,
    };
    if !quote && is_bare(value) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' ' => out.push(' '),
            c if c.is_control() || c.is_whitespace() || is_invisible_separator(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A value written as it is.
pub fn is_bare(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b'=')
}

/// Characters that change how a line reads without being control
/// characters: bidirectional overrides and zero-width marks.
fn is_invisible_separator(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// The fields of a line written by [`Line`], as (key, value) in order;
/// `None` if it does not follow the grammar. The reference parser, for
/// tests and for anyone porting it.
pub fn parse(line: &str) -> Option<Vec<(String, String)>> {
    let mut fields = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return None;
        }
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => unquote(quoted)?,
            None => {
                let end = after.find(' ').unwrap_or(after.len());
                let value = &after[..end];
                if !is_bare(value) {
                    return None;
                }
                (value.to_string(), &after[end..])
            }
        };
        fields.push((key.to_string(), value));
        rest = match after.strip_prefix(' ') {
            Some(next) if !next.is_empty() => next,
            Some(_) => return None,
            None if after.is_empty() => after,
            None => return None,
        };
    }
    (fields.first()?.0 == "event").then_some(fields)
}

/// The value of a quoted string whose opening quote is gone, and what
/// follows its closing quote.
fn unquote(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut rest = text;
    loop {
        let mut chars = rest.chars();
        let c = chars.next()?;
        rest = chars.as_str();
        match c {
            '"' => return Some((value, rest)),
            '\\' => {
                let mut chars = rest.chars();
                let escaped = chars.next()?;
                rest = chars.as_str();
                match escaped {
                    '"' => value.push('"'),
                    '\\' => value.push('\\'),
                    'n' => value.push('\n'),
                    'r' => value.push('\r'),
                    't' => value.push('\t'),
                    'u' => {
                        let (hex, after) = rest.strip_prefix('{')?.split_once('}')?;
                        value.push(char::from_u32(u32::from_str_radix(hex, 16).ok()?)?);
                        rest = after;
                    }
                    _ => return None,
                }
            }
            c if c.is_control() => return None,
            c => value.push(c),
        }
    }
}

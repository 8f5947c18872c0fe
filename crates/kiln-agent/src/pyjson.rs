//! Python's view of JSON, as sagemaker-training-toolkit uses it: `json.loads` (integers of any size,
//! `NaN`/`Infinity`, objects in document order), `json.dumps(sort_keys=True, separators=(",", ":"),
//! ensure_ascii=True)` for `SM_*` values, and `str()` for command-line arguments. Scripts compare
//! these strings with what the real toolkit produces, so the formatting follows CPython exactly
//! (float `repr`, `\u` escapes, `True`/`None`).

use std::fmt::Write as _;

/// A decoded JSON value with Python's types.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    None,
    Bool(bool),
    /// An integer of any size, as its decimal text.
    Int(String),
    Float(f64),
    Str(String),
    List(Vec<PyValue>),
    /// Keys in document order; a repeated key keeps its first position and its last value.
    Dict(Vec<(String, PyValue)>),
}

impl PyValue {
    /// A string value.
    pub fn str(s: impl Into<String>) -> PyValue {
        PyValue::Str(s.into())
    }

    /// A list of strings.
    pub fn str_list<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> PyValue {
        PyValue::List(items.into_iter().map(|s| PyValue::Str(s.into())).collect())
    }

    /// An integer.
    pub fn int(n: i64) -> PyValue {
        PyValue::Int(n.to_string())
    }

    /// Python truthiness.
    pub fn truthy(&self) -> bool {
        match self {
            PyValue::None => false,
            PyValue::Bool(b) => *b,
            PyValue::Int(s) => s.trim_start_matches('-').chars().any(|c| c != '0'),
            PyValue::Float(f) => *f != 0.0,
            PyValue::Str(s) => !s.is_empty(),
            PyValue::List(l) => !l.is_empty(),
            PyValue::Dict(d) => !d.is_empty(),
        }
    }

    /// Looks a key up in a dict.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(items) => items.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl From<&serde_json::Value> for PyValue {
    fn from(v: &serde_json::Value) -> PyValue {
        use serde_json::Value;
        match v {
            Value::Null => PyValue::None,
            Value::Bool(b) => PyValue::Bool(*b),
            Value::Number(n) => {
                if n.is_f64() {
                    PyValue::Float(n.as_f64().unwrap_or(f64::NAN))
                } else {
                    PyValue::Int(n.to_string())
                }
            }
            Value::String(s) => PyValue::Str(s.clone()),
            Value::Array(a) => PyValue::List(a.iter().map(PyValue::from).collect()),
            Value::Object(o) => PyValue::Dict(o.iter().map(|(k, v)| (k.clone(), PyValue::from(v))).collect()),
        }
    }
}

/// `json.loads(text)`, or `None` where Python would raise.
pub fn loads(text: &str) -> Option<PyValue> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    (p.i == p.s.len()).then_some(v)
}

/// Nesting limit, well below what would exhaust the stack (Python's own limit is ~1000).
const MAX_DEPTH: usize = 500;

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Option<PyValue> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(PyValue::Str),
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'-' | b'0'..=b'9' => {
                if let Some(v) = self.number() {
                    Some(v)
                } else if self.eat("-Infinity") {
                    Some(PyValue::Float(f64::NEG_INFINITY))
                } else {
                    None
                }
            }
            _ if self.eat("null") => Some(PyValue::None),
            _ if self.eat("true") => Some(PyValue::Bool(true)),
            _ if self.eat("false") => Some(PyValue::Bool(false)),
            _ if self.eat("NaN") => Some(PyValue::Float(f64::NAN)),
            _ if self.eat("Infinity") => Some(PyValue::Float(f64::INFINITY)),
            _ => None,
        }
    }

    /// `-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?`; no match leaves the position alone.
    fn number(&mut self) -> Option<PyValue> {
        let start = self.i;
        let mut j = self.i;
        let digits = |s: &[u8], mut j: usize| {
            let from = j;
            while s.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
            (j > from).then_some(j)
        };
        if self.s.get(j) == Some(&b'-') {
            j += 1;
        }
        match self.s.get(j) {
            Some(b'0') => j += 1,
            Some(b'1'..=b'9') => j = digits(self.s, j)?,
            _ => return None,
        }
        let int_end = j;
        if self.s.get(j) == Some(&b'.')
            && let Some(k) = digits(self.s, j + 1)
        {
            j = k;
        }
        if matches!(self.s.get(j), Some(b'e' | b'E')) {
            let mut k = j + 1;
            if matches!(self.s.get(k), Some(b'+' | b'-')) {
                k += 1;
            }
            if let Some(k) = digits(self.s, k) {
                j = k;
            }
        }
        let text = std::str::from_utf8(&self.s[start..j]).ok()?;
        self.i = j;
        if j == int_end {
            Some(PyValue::Int(if text == "-0" { "0".into() } else { text.into() }))
        } else {
            text.parse::<f64>().ok().map(PyValue::Float)
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.i..self.i + 4)?;
        let h = std::str::from_utf8(h).ok()?;
        let v = u32::from_str_radix(h, 16).ok()?;
        self.i += 4;
        Some(v)
    }

    fn string(&mut self) -> Option<String> {
        self.i += 1; // opening quote
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            out.push_str(std::str::from_utf8(&self.s[start..self.i]).ok()?);
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.i += 1;
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&hi) && self.eat("\\u") {
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    // Python keeps lone surrogates; a Rust string cannot.
                                    return None;
                                }
                                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                            } else {
                                hi
                            };
                            out.push(char::from_u32(code)?);
                        }
                        _ => return None,
                    }
                }
                // A raw control character: Python's strict mode refuses it.
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<PyValue> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.eat("]") {
            return Some(PyValue::List(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("]") {
                return Some(PyValue::List(items));
            }
            return None;
        }
    }

    fn object(&mut self, depth: usize) -> Option<PyValue> {
        self.i += 1;
        let mut items: Vec<(String, PyValue)> = Vec::new();
        self.ws();
        if self.eat("}") {
            return Some(PyValue::Dict(items));
        }
        loop {
            self.ws();
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            self.ws();
            if !self.eat(":") {
                return None;
            }
            self.ws();
            let v = self.value(depth + 1)?;
            match items.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = v,
                None => items.push((key, v)),
            }
            self.ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("}") {
                return Some(PyValue::Dict(items));
            }
            return None;
        }
    }
}

/// `json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=True)`.
pub fn dumps(v: &PyValue) -> String {
    let mut out = String::new();
    dump_into(v, &mut out);
    out
}

fn dump_into(v: &PyValue, out: &mut String) {
    match v {
        PyValue::None => out.push_str("null"),
        PyValue::Bool(true) => out.push_str("true"),
        PyValue::Bool(false) => out.push_str("false"),
        PyValue::Int(s) => out.push_str(s),
        PyValue::Float(f) if f.is_nan() => out.push_str("NaN"),
        PyValue::Float(f) if f.is_infinite() => out.push_str(if *f > 0.0 { "Infinity" } else { "-Infinity" }),
        PyValue::Float(f) => out.push_str(&float_repr(*f)),
        PyValue::Str(s) => dump_str(s, out),
        PyValue::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                dump_into(item, out);
            }
            out.push(']');
        }
        PyValue::Dict(items) => {
            let mut sorted: Vec<&(String, PyValue)> = items.iter().collect();
            // Rust orders strings by UTF-8 bytes, which is Python's code point order.
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                dump_str(k, out);
                out.push(':');
                dump_into(v, out);
            }
            out.push('}');
        }
    }
}

fn dump_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: the shortest digits that round-trip, in fixed notation when the
/// decimal exponent is in [-4, 16), otherwise `d.ddde±XX`.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    // Rust's `{:e}` prints the shortest round-trip digits: "1.2345e-5", "0e0", "-1e16".
    let sci = format!("{:e}", f);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if neg { "-" } else { "" };
    // The value is 0.<digits> × 10^decpt.
    let decpt = exp + 1;
    if !(-4 < decpt && decpt <= 16) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.unsigned_abs());
    }
    let n = digits.len() as i32;
    if decpt <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat(decpt.unsigned_abs() as usize))
    } else if decpt >= n {
        format!("{sign}{digits}{}.0", "0".repeat((decpt - n) as usize))
    } else {
        let (int, frac) = digits.split_at(decpt as usize);
        format!("{sign}{int}.{frac}")
    }
}

/// Python's `str(v)`.
pub fn to_str(v: &PyValue) -> String {
    match v {
        PyValue::Str(s) => s.clone(),
        other => {
            let mut out = String::new();
            repr_into(other, &mut out);
            out
        }
    }
}

fn repr_into(v: &PyValue, out: &mut String) {
    match v {
        PyValue::None => out.push_str("None"),
        PyValue::Bool(true) => out.push_str("True"),
        PyValue::Bool(false) => out.push_str("False"),
        PyValue::Int(s) => out.push_str(s),
        PyValue::Float(f) => out.push_str(&float_repr(*f)),
        PyValue::Str(s) => repr_str(s, out),
        PyValue::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr_into(item, out);
            }
            out.push(']');
        }
        PyValue::Dict(items) => {
            out.push('{');
            for (i, (k, v)) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr_str(k, out);
                out.push_str(": ");
                repr_into(v, out);
            }
            out.push('}');
        }
    }
}

/// Python's `repr(str)`. Printability is approximated by "not a control, format or separator
/// character", which covers what hyperparameters contain in practice.
fn repr_str(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            ' ' => out.push(' '),
            c if c.is_control()
                || c.is_whitespace()
                || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}') =>
            {
                let n = c as u32;
                let _ = if n < 0x100 {
                    write!(out, "\\x{n:02x}")
                } else if n < 0x10000 {
                    write!(out, "\\u{n:04x}")
                } else {
                    write!(out, "\\U{n:08x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_cpython() {
        // Expected strings printed by CPython 3.11's repr().
        let cases = [
            (1e-5, "1e-05"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (1.5, "1.5"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (123456789.123, "123456789.123"),
            (0.1, "0.1"),
            (1e22, "1e+22"),
            (1.5e-7, "1.5e-07"),
            (2.5e300, "2.5e+300"),
            (5e-324, "5e-324"),
            (100.0, "100.0"),
            (1e100, "1e+100"),
            (-12.5, "-12.5"),
            (0.01, "0.01"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(f), want, "repr({f:?})");
        }
    }

    #[test]
    fn loads_follows_python() {
        assert_eq!(loads("10"), Some(PyValue::Int("10".into())));
        assert_eq!(
            loads("12345678901234567890123"),
            Some(PyValue::Int("12345678901234567890123".into()))
        );
        assert_eq!(loads(" 0.5 "), Some(PyValue::Float(0.5)));
        assert_eq!(loads("1e400"), Some(PyValue::Float(f64::INFINITY)));
        assert!(matches!(loads("NaN"), Some(PyValue::Float(f)) if f.is_nan()));
        assert_eq!(loads("-Infinity"), Some(PyValue::Float(f64::NEG_INFINITY)));
        assert_eq!(loads("\"train.py\""), Some(PyValue::str("train.py")));
        assert_eq!(loads("train.py"), None);
        assert_eq!(loads("reg:squarederror"), None);
        assert_eq!(loads("01"), None);
        assert_eq!(loads("[1,]"), None);
        assert_eq!(loads("\"a\tb\""), None, "raw control characters are refused");
        assert_eq!(loads("\"\\ud83d\\ude00\""), Some(PyValue::str("😀")));
        assert_eq!(
            loads(r#"{"b": 1, "a": 2, "b": 3}"#),
            Some(PyValue::Dict(vec![
                ("b".into(), PyValue::int(3)),
                ("a".into(), PyValue::int(2))
            ]))
        );
        assert_eq!(loads(""), None);
        assert_eq!(loads("true false"), None);
    }

    #[test]
    fn dumps_is_compact_sorted_ascii() {
        let v = loads(r#"{"c": true, "b": [1, "é😀\u007f\n\t\"\\"], "a": null}"#);
        let v = v.unwrap_or(PyValue::None);
        // json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=True) in CPython:
        assert_eq!(
            dumps(&v),
            r#"{"a":null,"b":[1,"\u00e9\ud83d\ude00\u007f\n\t\"\\"],"c":true}"#
        );
        assert_eq!(dumps(&PyValue::Float(1e-5)), "1e-05");
        assert_eq!(dumps(&PyValue::Float(f64::NAN)), "NaN");
    }

    #[test]
    fn str_matches_cpython() {
        let v = loads(r#"["a", 1, true, null, {"x": "it's", "y": "q\"", "z": "both'\""}, 1e-5, "tab\t", "\u00a0é"]"#)
            .unwrap_or(PyValue::None);
        assert_eq!(
            to_str(&v),
            r#"['a', 1, True, None, {'x': "it's", 'y': 'q"', 'z': 'both\'"'}, 1e-05, 'tab\t', '\xa0é']"#
        );
        assert_eq!(to_str(&PyValue::str("plain")), "plain");
        assert_eq!(to_str(&PyValue::Bool(false)), "False");
    }
}

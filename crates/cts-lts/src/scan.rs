//! A targeted reader of a stored trace's JSON: it decodes only the fields a
//! log record carries ([`Fields`]) and steps over every other value
//! (`request`, `response`, …) by its strings and brackets alone, the
//! strings found with `memchr`. serde_json's derive decoded each skipped
//! value token by token, a sixth of the sink's CPU.
//!
//! The wanted fields read exactly as serde_json reads them (the tests
//! compare both on generated traces): escaped strings and numbers go
//! through serde_json itself. Skipped values are checked for their
//! structure only (their strings close, their brackets balance), not
//! validated: the journal holds only JSON ctsd wrote.

use std::borrow::Cow;

use crate::fields::{Fields, User};

/// The fields of `text`, a stored trace's JSON object; None when it is not
/// one or lacks a required field (as serde_json's derive would refuse it).
pub(crate) fn fields(text: &str) -> Option<Fields<'_>> {
    let mut s = Scanner { text, i: 0 };
    let mut f = Partial::default();
    s.object(|s, key| f.field(s, key))?;
    s.ws();
    // Only whitespace may follow the object.
    (s.i == text.len()).then_some(())?;
    f.finish()
}

/// The top-level fields read so far (serde's derive refuses a wanted key
/// seen twice; so does this).
#[derive(Default)]
struct Partial<'a> {
    trace_id: Option<Cow<'a, str>>,
    time: Option<i64>,
    record_time: Option<i64>,
    project_id: Option<Cow<'a, str>>,
    trace_type: Option<Cow<'a, str>>,
    tracker_name: Option<Cow<'a, str>>,
    service_type: Option<Cow<'a, str>>,
    resource_type: Option<Cow<'a, str>>,
    resource_name: Option<Option<Cow<'a, str>>>,
    resource_id: Option<Option<Cow<'a, str>>>,
    trace_name: Option<Cow<'a, str>>,
    trace_rating: Option<Cow<'a, str>>,
    source_ip: Option<Cow<'a, str>>,
    request_id: Option<Option<Cow<'a, str>>>,
    code: Option<Option<&'a str>>,
    user: Option<User<'a>>,
}

/// Sets a field once: a second time is an error.
fn once<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value?);
            Some(())
        }
    }
}

impl<'a> Partial<'a> {
    fn field(&mut self, s: &mut Scanner<'a>, key: &str) -> Option<()> {
        match key {
            "trace_id" => once(&mut self.trace_id, s.string()),
            "time" => once(&mut self.time, s.integer()),
            "record_time" => once(&mut self.record_time, s.integer()),
            "project_id" => once(&mut self.project_id, s.string()),
            "trace_type" => once(&mut self.trace_type, s.string()),
            "tracker_name" => once(&mut self.tracker_name, s.string()),
            "service_type" => once(&mut self.service_type, s.string()),
            "resource_type" => once(&mut self.resource_type, s.string()),
            "resource_name" => once(&mut self.resource_name, s.optional_string()),
            "resource_id" => once(&mut self.resource_id, s.optional_string()),
            "trace_name" => once(&mut self.trace_name, s.string()),
            "trace_rating" => once(&mut self.trace_rating, s.string()),
            "source_ip" => once(&mut self.source_ip, s.string()),
            "request_id" => once(&mut self.request_id, s.optional_string()),
            "code" => once(&mut self.code, s.optional_raw()),
            "user" => once(&mut self.user, s.user()),
            _ => s.skip(),
        }
    }

    fn finish(self) -> Option<Fields<'a>> {
        Some(Fields {
            trace_id: self.trace_id?,
            time: self.time?,
            record_time: self.record_time?,
            project_id: self.project_id?,
            trace_type: self.trace_type?,
            tracker_name: self.tracker_name.unwrap_or_default(),
            service_type: self.service_type?,
            resource_type: self.resource_type?,
            resource_name: self.resource_name.flatten(),
            resource_id: self.resource_id.flatten(),
            trace_name: self.trace_name?,
            trace_rating: self.trace_rating?,
            source_ip: self.source_ip.unwrap_or_default(),
            request_id: self.request_id.flatten(),
            code: self.code.flatten(),
            user: self.user?,
        })
    }
}

/// Which bytes matter between a nested value's strings.
const fn nesting() -> [u8; 256] {
    let mut t = [0u8; 256];
    t[b'"' as usize] = b'"';
    t[b'{' as usize] = b'{';
    t[b'[' as usize] = b'{';
    t[b'}' as usize] = b'}';
    t[b']' as usize] = b'}';
    t
}

static NESTING: [u8; 256] = nesting();

struct Scanner<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Scanner<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// An object, `each` called at every key with the scanner before its
    /// value (which `each` reads or skips).
    fn object(&mut self, mut each: impl FnMut(&mut Self, &str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.eat(b':')?;
            self.ws();
            each(self, &key)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The end of the string opening at `self.i` (after its closing quote),
    /// and whether it holds an escape.
    fn string_end(&self) -> Option<(usize, bool)> {
        let b = self.bytes();
        (b.get(self.i) == Some(&b'"')).then_some(())?;
        let (mut at, mut escaped) = (self.i + 1, false);
        loop {
            at += memchr::memchr2(b'"', b'\\', b.get(at..)?)?;
            if b[at] == b'"' {
                return Some((at + 1, escaped));
            }
            // A backslash and the byte it escapes.
            escaped = true;
            at += 2;
        }
    }

    /// A string, borrowed when it holds no escape (what serde_json makes of
    /// it otherwise).
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let (end, escaped) = self.string_end()?;
        let raw = &self.text[self.i..end];
        self.i = end;
        let inner = &raw[1..raw.len() - 1];
        if escaped || inner.bytes().any(|b| b < 0x20) {
            // Rare in traces: decoded (or refused) exactly as serde_json does.
            return serde_json::from_str::<String>(raw).ok().map(Cow::Owned);
        }
        Some(Cow::Borrowed(inner))
    }

    fn null(&mut self) -> bool {
        let null = self.bytes()[self.i..].starts_with(b"null");
        if null {
            self.i += 4;
        }
        null
    }

    /// A string or null (None).
    fn optional_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.null() {
            return Some(None);
        }
        self.string().map(Some)
    }

    /// Any value as written, or null (None).
    fn optional_raw(&mut self) -> Option<Option<&'a str>> {
        if self.null() {
            return Some(None);
        }
        let start = self.i;
        self.skip()?;
        let raw = &self.text[start..self.i];
        // A scalar is checked as serde_json checks it (`code` is one).
        if !matches!(raw.as_bytes()[0], b'{' | b'[' | b'"') {
            serde_json::from_str::<&serde_json::value::RawValue>(raw).ok()?;
        }
        Some(Some(raw))
    }

    /// A JSON integer that fits an `i64` (serde_json refuses a fraction or
    /// an exponent for one; so does this).
    fn integer(&mut self) -> Option<i64> {
        let start = self.i;
        let b = self.bytes();
        let negative = b.get(self.i) == Some(&b'-');
        self.i += usize::from(negative);
        let digits = self.i;
        let mut n: i64 = 0;
        while let Some(d) = b.get(self.i).filter(|d| d.is_ascii_digit()) {
            let d = i64::from(d - b'0');
            n = n
                .checked_mul(10)?
                .checked_add(if negative { -d } else { d })?;
            self.i += 1;
        }
        let len = self.i - digits;
        let leading_zero = len > 1 && b[digits] == b'0';
        let more = matches!(b.get(self.i), Some(b'.' | b'e' | b'E'));
        (len > 0 && !leading_zero && !more && self.i > start).then_some(n)
    }

    fn user(&mut self) -> Option<User<'a>> {
        let (mut id, mut name) = (None, None);
        self.object(|s, key| match key {
            "id" => once(&mut id, s.optional_string()),
            "name" => once(&mut name, s.optional_string()),
            _ => s.skip(),
        })?;
        Some(User {
            id: id.flatten(),
            name: name.flatten(),
        })
    }

    /// Steps over any value.
    fn skip(&mut self) -> Option<()> {
        let b = self.bytes();
        match *b.get(self.i)? {
            b'"' => self.i = self.string_end()?.0,
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match NESTING[usize::from(*b.get(self.i)?)] {
                        b'"' => {
                            self.i = self.string_end()?.0;
                            continue;
                        }
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            // A number or a literal: up to what follows it.
            _ => {
                let len = b[self.i..]
                    .iter()
                    .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                    .unwrap_or(b.len() - self.i);
                (len > 0).then_some(())?;
                self.i += len;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde::Deserialize;
    use serde_json::value::RawValue;
    use serde_json::{json, Value};

    use crate::fields::{Fields, User};
    use crate::tests::{generated, Lcg};

    /// The reference: what serde_json's derive reads (the sink's reader
    /// before the scanner).
    #[derive(Deserialize)]
    struct FullUser<'a> {
        #[serde(borrow, default)]
        id: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        name: Option<Cow<'a, str>>,
    }

    #[derive(Deserialize)]
    struct Full<'a> {
        #[serde(borrow)]
        trace_id: Cow<'a, str>,
        time: i64,
        record_time: i64,
        #[serde(borrow)]
        project_id: Cow<'a, str>,
        #[serde(borrow)]
        trace_type: Cow<'a, str>,
        #[serde(borrow, default)]
        tracker_name: Cow<'a, str>,
        #[serde(borrow)]
        service_type: Cow<'a, str>,
        #[serde(borrow)]
        resource_type: Cow<'a, str>,
        #[serde(borrow, default)]
        resource_name: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        resource_id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        trace_name: Cow<'a, str>,
        #[serde(borrow)]
        trace_rating: Cow<'a, str>,
        #[serde(borrow, default)]
        source_ip: Cow<'a, str>,
        #[serde(borrow, default)]
        request_id: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        code: Option<&'a RawValue>,
        #[serde(borrow)]
        user: FullUser<'a>,
    }

    fn full(text: &str) -> Option<Fields<'_>> {
        let f: Full<'_> = serde_json::from_str(text).ok()?;
        Some(Fields {
            trace_id: f.trace_id,
            time: f.time,
            record_time: f.record_time,
            project_id: f.project_id,
            trace_type: f.trace_type,
            tracker_name: f.tracker_name,
            service_type: f.service_type,
            resource_type: f.resource_type,
            resource_name: f.resource_name,
            resource_id: f.resource_id,
            trace_name: f.trace_name,
            trace_rating: f.trace_rating,
            source_ip: f.source_ip,
            request_id: f.request_id,
            code: f.code.map(RawValue::get),
            user: User {
                id: f.user.id,
                name: f.user.name,
            },
        })
    }

    /// A nested value with the wanted keys inside it and brackets, quotes
    /// and escapes in its strings (none of it may be taken for the trace's).
    fn nested(g: &mut Lcg, depth: usize) -> Value {
        match g.next(if depth == 0 { 4 } else { 6 }) {
            0 => json!(g.text() + "\"}]{["),
            1 => json!(g.next(1000) as i64 - 500),
            2 => [json!(null), json!(true), json!(false), json!(1.5e-3)][g.next(4)].take(),
            3 => json!(""),
            4 => Value::Array((0..g.next(4)).map(|_| nested(g, depth - 1)).collect()),
            _ => {
                let keys = ["trace_id", "time", "user", "code", "a}", "b\"", "x"];
                let mut o = serde_json::Map::new();
                for _ in 0..g.next(5) {
                    o.insert(keys[g.next(keys.len())].into(), nested(g, depth - 1));
                }
                Value::Object(o)
            }
        }
    }

    /// Wanted fields missing, null or of another type (not an array for
    /// `user`: serde's derive reads a struct from one, the scan refuses it;
    /// ctsd never writes one).
    fn broken(g: &mut Lcg, t: &mut Value) {
        let keys = [
            "trace_id",
            "time",
            "record_time",
            "project_id",
            "tracker_name",
            "source_ip",
            "trace_rating",
            "code",
            "user",
            "resource_id",
        ];
        let key = keys[g.next(keys.len())];
        let values = [
            Value::Null,
            json!(1.5),
            json!(-17),
            json!("9"),
            json!(u64::MAX),
            json!({"id": 1}),
            json!({"id": "i", "name": null, "id ": [1]}),
        ];
        match g.next(3) {
            0 => {
                t.as_object_mut().unwrap().remove(key);
            }
            _ => t[key] = values[g.next(values.len())].clone(),
        }
    }

    /// Generated traces (escapes, multi-byte text, optional fields missing
    /// or null), with nested `request`/`response`, broken fields, pretty
    /// printing, duplicate keys and truncation: the scan reads what
    /// serde_json reads, and refuses what it refuses.
    #[test]
    fn the_scan_reads_what_a_full_parse_reads() {
        let mut g = Lcg(11);
        let (mut read, mut refused) = (0, 0);
        for doc in generated(300) {
            let mut t: Value = serde_json::from_slice(&doc).unwrap();
            t["request"] = nested(&mut g, 4);
            t["response"] = nested(&mut g, 3);
            if g.next(4) == 0 {
                broken(&mut g, &mut t);
            }
            let compact = serde_json::to_string(&t).unwrap();
            let pretty = serde_json::to_string_pretty(&t).unwrap();
            let twice = compact.replacen('{', r#"{"project_id":"p0","#, 1);
            let cut = &compact[..compact.floor_char_boundary(g.next(compact.len()))];
            for text in [&doc[..], compact.as_bytes()].map(|d| std::str::from_utf8(d).unwrap()) {
                let got = super::fields(text);
                assert_eq!(got, full(text), "{text}");
                match got {
                    Some(_) => read += 1,
                    None => refused += 1,
                }
            }
            for text in [pretty.as_str(), &twice, cut, &format!(" {compact}\n ")] {
                assert_eq!(super::fields(text), full(text), "{text}");
            }
        }
        assert!(read > 450 && refused > 20, "{read} read, {refused} refused");
    }

    /// Bytes that are not a trace are refused, never a panic.
    #[test]
    fn junk_is_refused() {
        for text in [
            "",
            "{",
            "}",
            "[]",
            "null",
            "{\"a\":",
            "{\"a\"}",
            "{\"a\":1,}",
            "{\"a\":\"\\",
            "{\"request\":{\"x\":[1,2}",
            "{\"time\":01}",
            "{\"time\":-}",
            "{} {}",
        ] {
            assert_eq!(super::fields(text), None, "{text}");
        }
    }
}

//! The JSON text of a trace, written by hand for the ingest path.
//!
//! Every reported trace is written once as JSON into the journal; with
//! serde_json that was a tenth of the server's ingest CPU, most of it the
//! byte-by-byte escape scan. This writer produces exactly serde_json's bytes
//! (the tests compare them) but skips clean bytes eight at a time.

use serde_json::value::RawValue;

use crate::trace::{BaseUser, SessionContext, Trace, UserInfo};

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// A mask whose lowest set bit marks the first of the eight bytes of `w`
/// (little-endian) that JSON escapes: `"`, `\` or below 0x20; zero when
/// none does. Bits above the lowest may be wrong (a borrow runs on past a
/// match), so only the lowest is used.
#[inline]
fn escape_mask(w: u64) -> u64 {
    let zero_byte = |x: u64| x.wrapping_sub(LO) & !x & HI;
    let below_space = w.wrapping_sub(LO * 0x20) & !w & HI;
    zero_byte(w ^ (LO * u64::from(b'"'))) | zero_byte(w ^ (LO * u64::from(b'\\'))) | below_space
}

/// serde_json's escapes: 0 for none, `u` for `\u00XX`, else the letter after
/// the backslash.
const fn escape_of(b: u8) -> u8 {
    match b {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        0..=0x1f => b'u',
        _ => 0,
    }
}

/// Appends `s` as a JSON string literal, quotes included.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let (mut run, mut i) = (0, 0);
    loop {
        // The next byte to escape: eight bytes per step, then byte by byte
        // in the last few.
        let at = match b.get(i..i + 8) {
            Some(word) => {
                let mask = escape_mask(u64::from_le_bytes(word.try_into().expect("eight")));
                if mask == 0 {
                    i += 8;
                    continue;
                }
                i + (mask.trailing_zeros() / 8) as usize
            }
            None => match b[i..].iter().position(|&c| escape_of(c) != 0) {
                Some(k) => i + k,
                None => break,
            },
        };
        let c = b[at];
        out.extend_from_slice(&b[run..at]);
        match escape_of(c) {
            b'u' => {
                out.extend_from_slice(b"\\u00");
                out.extend_from_slice(&[HEX[usize::from(c >> 4)], HEX[usize::from(c & 0xf)]]);
            }
            e => out.extend_from_slice(&[b'\\', e]),
        }
        run = at + 1;
        i = at + 1;
    }
    out.extend_from_slice(&b[run..]);
    out.push(b'"');
}

/// One JSON object being written: keys are this crate's field names, which
/// need no escaping.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, empty: true }
    }
    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }
    fn str(&mut self, key: &str, v: &str) {
        write_str(self.key(key), v);
    }
    fn opt_str<S: AsRef<str>>(&mut self, key: &str, v: &Option<S>) {
        if let Some(v) = v {
            self.str(key, v.as_ref());
        }
    }
    fn int(&mut self, key: &str, v: i64) {
        self.key(key)
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
    fn opt_int(&mut self, key: &str, v: Option<i64>) {
        if let Some(v) = v {
            self.int(key, v);
        }
    }
    fn opt_raw(&mut self, key: &str, v: &Option<Box<RawValue>>) {
        if let Some(v) = v {
            self.key(key).extend_from_slice(v.get().as_bytes());
        }
    }
    fn close(self) {
        self.out.push(b'}');
    }
}

impl<S: AsRef<str>> BaseUser<S> {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Obj::open(out);
        o.opt_str("id", &self.id);
        o.opt_str("name", &self.name);
        o.close();
    }
}

impl<S: AsRef<str>> SessionContext<S> {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Obj::open(out);
        if let Some(a) = &self.attributes {
            let mut attrs = Obj::open(o.key("attributes"));
            attrs.opt_str("created_at", &a.created_at);
            attrs.opt_str("mfa_authenticated", &a.mfa_authenticated);
            attrs.close();
        }
        o.close();
    }
}

impl<S: AsRef<str>> UserInfo<S> {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Obj::open(out);
        o.opt_str("id", &self.id);
        o.opt_str("name", &self.name);
        if let Some(d) = &self.domain {
            d.write_json(o.key("domain"));
        }
        o.opt_str("user_name", &self.user_name);
        o.opt_str("account_id", &self.account_id);
        o.opt_str("access_key_id", &self.access_key_id);
        o.opt_str("principal_urn", &self.principal_urn);
        o.opt_str("principal_id", &self.principal_id);
        o.opt_str("principal_is_root_user", &self.principal_is_root_user);
        o.opt_str("type", &self.type_);
        if let Some(list) = &self.invoked_by {
            let out = o.key("invoked_by");
            out.push(b'[');
            for (i, s) in list.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, s.as_ref());
            }
            out.push(b']');
        }
        if let Some(sc) = &self.session_context {
            sc.write_json(o.key("session_context"));
        }
        o.opt_str("OriginUser", &self.origin_user);
        o.close();
    }
}

impl<S: AsRef<str>> Trace<S> {
    /// The trace as JSON, the same bytes as `serde_json::to_vec(self)`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2048);
        let mut o = Obj::open(&mut out);
        o.str("trace_id", self.trace_id.as_ref());
        o.int("time", self.time);
        o.int("record_time", self.record_time);
        self.user.write_json(o.key("user"));
        o.opt_raw("request", &self.request);
        o.opt_raw("response", &self.response);
        o.opt_raw("code", &self.code);
        o.str("service_type", self.service_type.as_ref());
        o.str("event_type", self.event_type.as_ref());
        o.str("project_id", self.project_id.as_ref());
        o.str("resource_type", self.resource_type.as_ref());
        o.opt_str("resource_account_id", &self.resource_account_id);
        if let Some(v) = self.read_only {
            o.key("read_only")
                .extend_from_slice(if v { b"true" } else { b"false" });
        }
        o.str("tracker_name", self.tracker_name.as_ref());
        o.str("operation_id", self.operation_id.as_ref());
        o.opt_str("resource_name", &self.resource_name);
        o.opt_str("resource_id", &self.resource_id);
        o.str("source_ip", self.source_ip.as_ref());
        o.str("domain_id", self.domain_id.as_ref());
        o.str("trace_name", self.trace_name.as_ref());
        o.str("trace_rating", self.trace_rating.as_ref());
        o.str("trace_type", self.trace_type.as_ref());
        o.opt_str("api_version", &self.api_version);
        o.opt_raw("message", &self.message);
        o.opt_str("request_id", &self.request_id);
        o.opt_str("location_info", &self.location_info);
        o.opt_str("endpoint", &self.endpoint);
        o.opt_str("resource_url", &self.resource_url);
        o.str("enterprise_project_id", self.enterprise_project_id.as_ref());
        o.opt_str("user_agent", &self.user_agent);
        o.opt_int("content_length", self.content_length);
        o.opt_int("total_time", self.total_time);
        o.close();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Attributes;

    fn serde_str(s: &str) -> Vec<u8> {
        serde_json::to_vec(s).unwrap()
    }

    fn ours(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write_str(&mut out, s);
        out
    }

    #[test]
    fn strings_escape_exactly_as_serde_json_does() {
        let mut cases: Vec<String> = vec![
            String::new(),
            "plain ascii text that is longer than eight bytes".into(),
            "quote \" backslash \\ slash / tab \t newline \n".into(),
            "ünïcödé ✓ 𝄞 and DEL \u{7f} and C1 \u{85}".into(),
            "\"\"\"\"\"\"\"\"\"\"".into(),
            "{\"nested\":{\"json\":[1,2,\"x\\\"y\"]}}".into(),
        ];
        // Every byte below 0x80 alone, and at every position of a word.
        for c in 0u8..0x80 {
            let ch = char::from(c);
            cases.push(ch.to_string());
            for pos in 0..10 {
                let mut s: String = "abcdefghij".into();
                s.insert(pos, ch);
                cases.push(s);
            }
        }
        for s in &cases {
            assert_eq!(ours(s), serde_str(s), "{s:?}");
        }
    }

    fn raw(s: &str) -> Option<Box<RawValue>> {
        Some(RawValue::from_string(s.to_string()).unwrap())
    }

    #[test]
    fn a_trace_is_written_as_serde_json_writes_it() {
        let full: Trace = Trace {
            trace_id: "0f8e2a1c-1b2d-4c3e-9f4a-5b6c7d8e9f00".into(),
            trace_id_supplied: true,
            time: 1_700_000_000_123,
            record_time: -5,
            user: UserInfo {
                id: Some("u1".into()),
                name: Some("alice \"ops\"".into()),
                domain: Some(BaseUser {
                    id: Some("d1".into()),
                    name: None,
                }),
                user_name: Some("alice".into()),
                account_id: Some("a".into()),
                access_key_id: Some("AK".into()),
                principal_urn: Some("iam::x:user:alice".into()),
                principal_id: Some("p".into()),
                principal_is_root_user: Some("false".into()),
                type_: Some("User".into()),
                invoked_by: Some(vec!["ecs.amazonaws".into(), "x\ny".into()]),
                session_context: Some(SessionContext {
                    attributes: Some(Attributes {
                        created_at: Some("2026".into()),
                        mfa_authenticated: None,
                    }),
                }),
                origin_user: Some("root".into()),
            },
            request: raw("\"{\\\"a\\\":1}\""),
            response: raw("\"ok\""),
            code: raw("\"200\""),
            service_type: "ECS".into(),
            event_type: "system".into(),
            project_id: "p1".into(),
            resource_type: "server".into(),
            resource_account_id: Some("acc".into()),
            read_only: Some(false),
            tracker_name: "system".into(),
            operation_id: "op".into(),
            resource_name: Some("vm\t1".into()),
            resource_id: Some("r1".into()),
            source_ip: "10.0.0.1".into(),
            domain_id: "d1".into(),
            trace_name: "createServer".into(),
            trace_rating: "normal".into(),
            trace_type: "ApiCall".into(),
            api_version: Some("v2".into()),
            message: raw("\"m\""),
            request_id: Some("rq".into()),
            location_info: Some("l".into()),
            endpoint: Some("https://e".into()),
            resource_url: Some("https://r".into()),
            enterprise_project_id: "0".into(),
            user_agent: Some("ua/1".into()),
            content_length: Some(12),
            total_time: Some(i64::MAX),
        };
        assert_eq!(full.to_json(), serde_json::to_vec(&full).unwrap());

        let mut sparse = full.clone();
        sparse.user = UserInfo {
            domain: Some(BaseUser::default()),
            session_context: Some(SessionContext::default()),
            invoked_by: Some(vec![]),
            ..UserInfo::default()
        };
        sparse.request = None;
        sparse.response = None;
        sparse.code = None;
        sparse.message = None;
        sparse.resource_account_id = None;
        sparse.read_only = Some(true);
        sparse.resource_name = None;
        sparse.resource_id = None;
        sparse.api_version = None;
        sparse.request_id = None;
        sparse.location_info = None;
        sparse.endpoint = None;
        sparse.resource_url = None;
        sparse.user_agent = None;
        sparse.content_length = None;
        sparse.total_time = None;
        assert_eq!(sparse.to_json(), serde_json::to_vec(&sparse).unwrap());
        sparse.read_only = None;
        sparse.user = UserInfo::default();
        assert_eq!(sparse.to_json(), serde_json::to_vec(&sparse).unwrap());
    }
}

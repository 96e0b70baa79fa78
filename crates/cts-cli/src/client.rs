//! The one HTTP call every command goes through: it authenticates the
//! request (signature or token) and turns the server's errors into
//! [`ServerError`].

use std::time::Duration;

use anyhow::{Context, Result};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use crate::credentials::{Auth, Credentials};

/// An error answered by the server: `{"error_code": "CTS.XXXX", "error_msg": ...}`.
#[derive(Debug)]
pub struct ServerError {
    pub status: u16,
    pub code: String,
    pub msg: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "error {} (HTTP {}): {}",
            self.code, self.status, self.msg
        )
    }
}

impl std::error::Error for ServerError {}

/// Whether `e` is the server's answer with this status.
pub fn is_status(e: &anyhow::Error, status: u16) -> bool {
    e.downcast_ref::<ServerError>()
        .is_some_and(|s| s.status == status)
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: String,
    error_msg: String,
}

#[derive(Deserialize)]
pub struct Page {
    pub traces: Vec<Value>,
    pub meta_data: MetaData,
}

#[derive(Deserialize)]
pub struct MetaData {
    #[serde(default)]
    pub marker: Option<String>,
}

/// Everything but `A-Za-z0-9-._~` is encoded, a space as `%20`: what the
/// signature's canonical form uses, so nothing can be read two ways.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One path segment or query value, percent-encoded.
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// A successful answer: its headers and JSON body (`Null` when empty).
pub struct Reply {
    pub headers: HeaderMap,
    pub body: Value,
}

pub struct Client {
    http: reqwest::blocking::Client,
    endpoint: String,
    auth: Auth,
}

impl Client {
    pub fn new(creds: &Credentials) -> Result<Client> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Client {
            http,
            endpoint: creds.endpoint.clone(),
            auth: creds.auth.clone(),
        })
    }

    /// `method endpoint+path?query` with an optional JSON body. `path` must
    /// be encoded already (see [`enc`]).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Reply> {
        let mut url = format!("{}{path}", self.endpoint);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&format!("{}={}", enc(k), enc(v)));
        }
        let bytes = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        match &self.auth {
            Auth::Key {
                access_key,
                secret_key,
            } => cts_sign::sign_request(
                method,
                &url,
                &mut headers,
                &bytes,
                access_key,
                secret_key,
                cts_sign::unix_now(),
            )
            .with_context(|| format!("signing {method} {url}"))?,
            Auth::Token(token) => headers.push(("X-Auth-Token".to_string(), token.clone())),
            Auth::None => {}
        }
        let mut request = self
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes())?, &url)
            .body(bytes);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let resp = request
            .send()
            .with_context(|| format!("cannot reach {}", self.endpoint))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().context("reading the response")?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(e) => ServerError {
                    status: status.as_u16(),
                    code: e.error_code,
                    msg: e.error_msg,
                }
                .into(),
                Err(_) => {
                    anyhow::anyhow!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim())
                }
            });
        }
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .with_context(|| format!("the answer to {method} {path} is not JSON"))?
        };
        Ok(Reply { headers, body })
    }

    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        Ok(self.call("GET", path, query, None)?.body)
    }

    /// One page of ListTraces.
    pub fn list(&self, project: &str, params: &[(&str, String)]) -> Result<Page> {
        let body = self.get(&format!("/v3/{}/traces", enc(project)), params)?;
        serde_json::from_value(body).context("the server's answer is not a trace list")
    }

    /// Every page from the first, following markers; `on_page` sees each.
    pub fn list_all(
        &self,
        project: &str,
        params: &[(&str, String)],
        mut on_page: impl FnMut(Page),
    ) -> Result<()> {
        let mut params = params.to_vec();
        let mut previous: Option<String> = None;
        loop {
            let page = self.list(project, &params)?;
            let marker = page.meta_data.marker.clone().filter(|m| !m.is_empty());
            let empty = page.traces.is_empty();
            on_page(page);
            match marker {
                // A repeated marker would loop forever; an empty page ends too.
                Some(m) if !empty && previous.as_deref() != Some(m.as_str()) => {
                    params.retain(|(k, _)| *k != "next");
                    params.push(("next", m.clone()));
                    previous = Some(m);
                }
                _ => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_signature() {
        assert_eq!(enc("a b+c/é~x.y_z-0"), "a%20b%2Bc%2F%C3%A9~x.y_z-0");
    }
}

//! The ListTraces call and the server's error shape.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::Value;

/// An error answered by the server: `{"error_code": "CTS.XXXX", "error_msg": ...}`.
#[derive(Debug)]
pub struct ServerError {
    pub status: u16,
    pub code: String,
    pub msg: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error {}: {}", self.code, self.msg)
    }
}

impl std::error::Error for ServerError {}

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

pub struct Client {
    http: reqwest::blocking::Client,
    traces_url: String,
}

impl Client {
    pub fn new(endpoint: &str, project_id: &str) -> Result<Client> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Client {
            http,
            traces_url: format!("{}/v3/{project_id}/traces", endpoint.trim_end_matches('/')),
        })
    }

    pub fn list(&self, params: &[(&str, String)]) -> Result<Page> {
        let resp = self
            .http
            .get(&self.traces_url)
            .query(params)
            .send()
            .with_context(|| format!("cannot reach {}", self.traces_url))?;
        let status = resp.status();
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
        serde_json::from_slice(&body).context("the server's answer is not a trace list")
    }

    /// Every page from the first, following markers; `on_page` sees each.
    pub fn list_all(&self, params: &[(&str, String)], mut on_page: impl FnMut(Page)) -> Result<()> {
        let mut params = params.to_vec();
        let mut previous: Option<String> = None;
        loop {
            let page = self.list(&params)?;
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

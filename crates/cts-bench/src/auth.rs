//! Every request the benchmark sends to `ctsd` is signed with
//! SDK-HMAC-SHA256, as every real reporter's is: the load generator pays
//! for signing (its CPU is reported), the server for verifying.
//!
//! The credential is the admin's access key from the server's
//! `bootstrap.json`. The generated data names three tenants
//! ([`gen::MAIN_PROJECT`], [`gen::OTHER_PROJECTS`]; the SQLite baseline
//! stores those names as they are); on the server they are the bootstrap
//! project and two projects created here, on which the admin reports.

use std::path::Path;

use anyhow::{bail, Context, Result};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::gen;

#[derive(Deserialize)]
struct Bootstrap {
    project_id: String,
    region: String,
    user_name: String,
    access_key: String,
    secret_key: String,
}

pub struct Auth {
    access_key: String,
    secret_key: String,
    /// Tenant of the generated data → the server's project id.
    projects: Vec<(&'static str, String)>,
}

/// Only `A-Za-z0-9-._~` bare, a space as `%20`: the signature's canonical
/// encoding (reqwest's `.query()` would send a space as `+`, which signs
/// as a literal plus).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `base?k=v&...`, percent-encoded.
pub fn with_query(base: &str, params: &[(&str, String)]) -> String {
    let mut url = base.to_string();
    for (i, (k, v)) in params.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(&utf8_percent_encode(k, UNRESERVED).to_string());
        url.push('=');
        url.push_str(&utf8_percent_encode(v, UNRESERVED).to_string());
    }
    url
}

impl Auth {
    /// Reads the server's `bootstrap.json`, creates the other tenants'
    /// projects and grants the admin `cts_reporter` on them.
    pub async fn setup(http: &reqwest::Client, url: &str, data_dir: &Path) -> Result<Auth> {
        let file = data_dir.join("bootstrap.json");
        let boot: Bootstrap = serde_json::from_slice(
            &std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?,
        )
        .with_context(|| format!("parsing {}", file.display()))?;
        let mut auth = Auth {
            access_key: boot.access_key,
            secret_key: boot.secret_key,
            projects: vec![(gen::MAIN_PROJECT, boot.project_id)],
        };
        let users = auth
            .call(
                http,
                "GET",
                &with_query(
                    &format!("{url}/v3/users"),
                    &[("name", boot.user_name.clone())],
                ),
                None,
            )
            .await?;
        let admin = users["users"][0]["id"]
            .as_str()
            .with_context(|| format!("no user {} in {users}", boot.user_name))?
            .to_string();
        for (i, tenant) in gen::OTHER_PROJECTS.iter().enumerate() {
            let name = format!("{}_bench{}", boot.region, i + 1);
            let body = json!({"project": {"name": name, "region": boot.region}});
            let created = auth
                .call(http, "POST", &format!("{url}/v3/projects"), Some(body))
                .await?;
            let id = created["project"]["id"]
                .as_str()
                .with_context(|| format!("no project id in {created}"))?
                .to_string();
            let grant = format!("{url}/v3/projects/{id}/users/{admin}/roles/cts_admin");
            auth.call(http, "PUT", &grant, None).await?;
            // A project records nothing until its management tracker exists.
            let tracker = json!({"tracker_type": "system", "tracker_name": "system"});
            auth.call(
                http,
                "POST",
                &format!("{url}/v3/{id}/tracker"),
                Some(tracker),
            )
            .await?;
            auth.projects.push((tenant, id));
        }
        Ok(auth)
    }

    /// The server's id of a tenant of the generated data.
    pub fn project(&self, tenant: &str) -> &str {
        self.projects
            .iter()
            .find(|(t, _)| *t == tenant)
            .map(|(_, id)| id.as_str())
            .expect("a tenant of the generated data")
    }

    /// A signed request: `url` must carry its final (encoded) query, `body`
    /// the exact bytes to send. Trace requests name their project in
    /// `X-Project-Id`, as the official SDK does.
    pub fn request(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        url: &str,
        project: Option<&str>,
        body: bytes::Bytes,
    ) -> Result<reqwest::RequestBuilder> {
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        if let Some(p) = project {
            headers.push((cts_sign::PROJECT_HEADER.to_string(), p.to_string()));
        }
        cts_sign::sign_request(
            method.as_str(),
            url,
            &mut headers,
            &body,
            &self.access_key,
            &self.secret_key,
            cts_sign::unix_now(),
        )
        .with_context(|| format!("signing {method} {url}"))?;
        let mut req = http.request(method, url).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        Ok(req)
    }

    /// Changes the main tenant's management tracker: `fields` beside its
    /// type and name in `PUT /v3/{project}/tracker`.
    pub async fn update_system_tracker(&self, url: &str, mut fields: Value) -> Result<()> {
        fields["tracker_type"] = json!("system");
        fields["tracker_name"] = json!("system");
        let project = self.project(gen::MAIN_PROJECT);
        let http = reqwest::Client::new();
        self.call(
            &http,
            "PUT",
            &format!("{url}/v3/{project}/tracker"),
            Some(fields),
        )
        .await?;
        Ok(())
    }

    /// A signed call without a project header, answered with 2xx.
    pub async fn call(
        &self,
        http: &reqwest::Client,
        method: &str,
        url: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let resp = self
            .request(http, method.clone(), url, None, bytes.into())?
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{method} {url}: HTTP {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded_as_signed() {
        let q = [("user", "a b+c".to_string()), ("from", "1".to_string())];
        assert_eq!(
            with_query("http://h/x", &q),
            "http://h/x?user=a%20b%2Bc&from=1"
        );
    }
}

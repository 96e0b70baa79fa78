//! What the management commands (identities, trackers, quotas) share: the
//! client, the credentials and the output format, reading a list out of an
//! answer, and printing a list, one resource, or what an action did.

use std::io::Write;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::client::Client;
use crate::credentials::Credentials;
use crate::table;
use crate::Output;

/// A column: its header and the JSON pointer of its value.
pub type Column = (&'static str, &'static str);

pub struct Ctx<'a> {
    pub client: &'a Client,
    pub creds: &'a Credentials,
    pub output: Output,
}

impl Ctx<'_> {
    /// The list under `key` of the answer to `GET path?query`.
    pub fn get_list(&self, path: &str, query: &[(&str, String)], key: &str) -> Result<Vec<Value>> {
        let body = self.client.get(path, query)?;
        match &body[key] {
            Value::Array(items) => Ok(items.clone()),
            _ => bail!("the answer to GET {path} has no \"{key}\" list"),
        }
    }

    pub fn print_list(&self, columns: &[Column], items: &[Value]) -> Result<()> {
        let mut out = std::io::stdout().lock();
        match self.output {
            Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(items)?)?,
            Output::Table => {
                let header = columns.iter().map(|(h, _)| h.to_string()).collect();
                let rows: Vec<Vec<String>> = std::iter::once(header)
                    .chain(items.iter().map(|item| {
                        columns
                            .iter()
                            .map(|(_, p)| table::cell(p, item.pointer(p)))
                            .collect()
                    }))
                    .collect();
                out.write_all(table::render_rows(&rows).as_bytes())?;
            }
        }
        Ok(())
    }

    pub fn print_one(&self, columns: &[Column], item: &Value) -> Result<()> {
        let mut out = std::io::stdout().lock();
        match self.output {
            Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(item)?)?,
            Output::Table => {
                let rows: Vec<[String; 2]> = columns
                    .iter()
                    .map(|(h, p)| [h.to_ascii_lowercase(), table::cell(p, item.pointer(p))])
                    .collect();
                out.write_all(table::render_rows(&rows).as_bytes())?;
            }
        }
        Ok(())
    }

    /// What an action without an answer body did.
    pub fn done(&self, message: String) -> Result<()> {
        match self.output {
            Output::Json => println!("{}", json!({ "message": message })),
            Output::Table => println!("{message}"),
        }
        Ok(())
    }
}

//! What every page shares: the frame around it (navigation, the signed-in
//! user and project, sign-out), rendering, and times as people read them.

use askama::Template;
use axum::response::Html;

use super::Signed;

/// The frame of a signed-in page.
pub struct Chrome {
    pub title: &'static str,
    /// The navigation entry to highlight.
    pub nav: &'static str,
    pub user: String,
    pub project: String,
    pub several_projects: bool,
    pub csrf_token: String,
    /// Whether change controls are shown (the server checks anyway).
    pub can_write: bool,
}

impl Chrome {
    pub fn of(s: &Signed, title: &'static str, nav: &'static str, can_write: bool) -> Chrome {
        Chrome {
            title,
            nav,
            user: s.session.principal.user_name.clone(),
            project: s.session.project_name().to_string(),
            several_projects: s.session.projects.len() > 1,
            csrf_token: s.session.csrf_token.clone(),
            can_write,
        }
    }
}

/// The question asked before a change that stops or removes something.
#[derive(Template)]
#[template(path = "console/confirm.html")]
pub struct ConfirmPage {
    pub chrome: Chrome,
    pub question: String,
    /// Where the confirmed form goes, with its `hidden` fields.
    pub post_to: &'static str,
    pub hidden: Vec<(String, String)>,
    pub button: String,
    pub cancel: &'static str,
}

#[derive(Template)]
#[template(path = "console/error.html")]
pub struct ErrorPage {
    pub code: &'static str,
    pub message: String,
}

/// Renders a page; a template that fails (a bug) is an error page.
pub fn html<T: Template>(page: &T) -> Html<String> {
    match page.render() {
        Ok(s) => Html(s),
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            Html(format!(
                "<!doctype html><title>Error</title><p>CTS.9000: the page could not be rendered: {}",
                escape(&e.to_string())
            ))
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `2026-12-06 07:24:27` (UTC) for milliseconds since the epoch.
pub fn time_utc(ms: i64) -> String {
    cts_clock::utc_civil(ms.div_euclid(1000))
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The value of an `<input type="datetime-local">` (`2026-12-06T07:24`,
/// seconds optional), read as UTC, in milliseconds.
pub fn parse_local(v: &str) -> Option<i64> {
    // jiff also reads a date alone; the field always sends a time.
    if !v.contains('T') {
        return None;
    }
    let civil: jiff::civil::DateTime = v.parse().ok()?;
    (1970..=9999)
        .contains(&civil.year())
        .then(|| cts_clock::utc_secs(civil) * 1000)
}

/// The `datetime-local` value of `ms` (UTC, to the minute).
pub fn local_value(ms: i64) -> String {
    time_utc(ms)[..16].replacen(' ', "T", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_and_written_in_utc() {
        assert_eq!(time_utc(0), "1970-01-01 00:00:00");
        assert_eq!(time_utc(1_796_541_867_000), "2026-12-06 07:24:27");
        assert_eq!(parse_local("2026-12-06T07:24"), Some(1_796_541_840_000));
        assert_eq!(parse_local("2026-12-06T07:24:27"), Some(1_796_541_867_000));
        assert_eq!(local_value(1_796_541_867_000), "2026-12-06T07:24");
        for bad in [
            "",
            "2026-12-06",
            "2026-13-01T00:00",
            "2026-02-30T00:00",
            "2026-12-06T24:00",
            "x-1-1T1:1",
        ] {
            assert_eq!(parse_local(bad), None, "{bad}");
        }
    }
}

//! The limits of free-text trace fields, and fitting caller-supplied text
//! into them: the checks of reported traces and the traces the server
//! builds itself share these numbers.

/// `user.*` identifiers and names, `resource_name`, `resource_id`.
pub const NAME_MAX: usize = 256;
/// `user_agent`.
pub const USER_AGENT_MAX: usize = 1024;

/// Replaces each control character.
pub const REPLACEMENT: char = '\u{fffd}';

/// `s` cut to at most `max` characters (at a character boundary), with
/// every control character replaced by U+FFFD: text a caller controls
/// (a header, a claimed key) that the server writes into its own traces,
/// which then always meet the report rules.
pub fn fit(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if c.is_control() { REPLACEMENT } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_characters_and_replaces_controls() {
        assert_eq!(fit("a\tb\u{85}c\u{7f}", 10), "a\u{fffd}b\u{fffd}c\u{fffd}");
        assert_eq!(fit(&"é".repeat(300), NAME_MAX).chars().count(), NAME_MAX);
        assert_eq!(fit("𝄞𝄞𝄞", 2), "𝄞𝄞");
        assert_eq!(fit("", 5), "");
    }
}

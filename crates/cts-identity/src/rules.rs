//! Value rules of names, passwords and keys, and the random values the store
//! generates. Each check returns `IdentityError::Invalid` naming the rule.

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;

use crate::IdentityError;

/// Longest description accepted for projects, users, groups and access keys.
const DESCRIPTION_MAX: usize = 255;

/// A new entity id: 32 lowercase hex characters (uuid v4, simple form), the
/// shape Huawei Cloud uses for domain, project and user ids.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Names of domains, users and groups: 1–64 characters of ASCII letters,
/// digits, space and `-_.@`, not starting with a digit or a space and not
/// ending with a space (trailing spaces make names look equal that are not).
pub(crate) fn check_name(field: &'static str, name: &str) -> Result<(), IdentityError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " -_.@".contains(c))
        && !name.starts_with(|c: char| c.is_ascii_digit() || c == ' ')
        && !name.ends_with(' ');
    ok.then_some(()).ok_or_else(|| {
        IdentityError::invalid(
            field,
            "1-64 characters of letters, digits, space and -_.@, \
             not starting with a digit or space, not ending with a space",
        )
    })
}

/// Project names: 1–64 of ASCII letters, digits and `-_.` (region-like names
/// such as `eu-de` or `eu-de_myproject`).
pub(crate) fn check_project_name(name: &str) -> Result<(), IdentityError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    ok.then_some(())
        .ok_or_else(|| IdentityError::invalid("name", "1-64 characters of letters, digits and -_."))
}

/// Region names such as `eu-de`: 1–64 of `[a-z0-9-_]`.
pub(crate) fn check_region(region: &str) -> Result<(), IdentityError> {
    let ok = (1..=64).contains(&region.len())
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    ok.then_some(()).ok_or_else(|| {
        IdentityError::invalid(
            "region",
            "1-64 characters of lowercase letters, digits and -_",
        )
    })
}

pub(crate) fn check_description(description: &str) -> Result<(), IdentityError> {
    let ok = description.chars().count() <= DESCRIPTION_MAX
        && !description.chars().any(|c| c.is_control() && c != '\n');
    ok.then_some(()).ok_or_else(|| {
        IdentityError::invalid(
            "description",
            format!("at most {DESCRIPTION_MAX} characters, no control characters"),
        )
    })
}

/// A plausibility check only: one `@` with text on both sides, no spaces.
/// Whether the address works is not the store's business.
pub(crate) fn check_email(email: &str) -> Result<(), IdentityError> {
    let ok = (3..=254).contains(&email.len())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, host))
            if !local.is_empty() && !host.is_empty() && !host.contains('@'));
    ok.then_some(())
        .ok_or_else(|| IdentityError::invalid("email", "an address like name@example.com"))
}

/// Passwords: 8–128 characters with at least two of the classes lowercase,
/// uppercase, digit, special (anything else that is not a control
/// character).
pub(crate) fn check_password(password: &str) -> Result<(), IdentityError> {
    let len = password.chars().count();
    let class = |f: fn(&char) -> bool| password.chars().any(|c| f(&c)) as u8;
    let classes = class(char::is_ascii_lowercase)
        + class(char::is_ascii_uppercase)
        + class(char::is_ascii_digit)
        + class(|c| !c.is_ascii_alphanumeric());
    let ok = (8..=128).contains(&len) && classes >= 2 && !password.chars().any(char::is_control);
    ok.then_some(()).ok_or_else(|| {
        IdentityError::invalid(
            "password",
            "8-128 characters with at least two of: lowercase letters, \
             uppercase letters, digits, special characters",
        )
    })
}

/// Ids an operator may choose for the bootstrap domain and project: 1–64 of
/// `[A-Za-z0-9_-]`, so they are safe in URL paths.
pub(crate) fn check_chosen_id(field: &'static str, id: &str) -> Result<(), IdentityError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    ok.then_some(())
        .ok_or_else(|| IdentityError::invalid(field, "1-64 characters of letters, digits and _-"))
}

/// An access key id an operator chooses: 1–64 of `[A-Za-z0-9]`.
pub(crate) fn check_chosen_access_key(access: &str) -> Result<(), IdentityError> {
    let ok = (1..=64).contains(&access.len()) && access.chars().all(|c| c.is_ascii_alphanumeric());
    ok.then_some(())
        .ok_or_else(|| IdentityError::invalid("access_key", "1-64 letters and digits"))
}

/// A secret key an operator chooses: 8–128 visible ASCII characters (no
/// space: it would not survive environment files and shells intact).
pub(crate) fn check_chosen_secret(secret: &str) -> Result<(), IdentityError> {
    let ok = (8..=128).contains(&secret.len()) && secret.chars().all(|c| c.is_ascii_graphic());
    ok.then_some(()).ok_or_else(|| {
        IdentityError::invalid("secret_key", "8-128 visible ASCII characters, no spaces")
    })
}

/// Authentication method names recorded in a token, e.g. `password`.
pub(crate) fn check_methods(methods: &[&str]) -> Result<(), IdentityError> {
    let ok = !methods.is_empty()
        && methods.iter().all(|m| {
            (1..=32).contains(&m.len())
                && m.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
    ok.then_some(()).ok_or_else(|| {
        IdentityError::invalid(
            "methods",
            "one or more names of 1-32 lowercase letters, digits and _",
        )
    })
}

/// A new access key id: 20 characters of `[A-Z0-9]` (Huawei IAM's shape).
pub(crate) fn random_access_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// A new secret key: 40 characters of `[A-Za-z0-9]` (~238 bits).
pub(crate) fn random_secret() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 40)
}

/// A generated password of 20 alphanumerics that meets [`check_password`]
/// (shell-safe, ~119 bits).
pub(crate) fn random_password() -> String {
    loop {
        let candidate = Alphanumeric.sample_string(&mut rand::rng(), 20);
        if check_password(&candidate).is_ok() {
            return candidate;
        }
    }
}

/// `n` bytes from the thread-local CSPRNG (ChaCha, seeded from the OS).
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_of(r: Result<(), IdentityError>) -> &'static str {
        match r {
            Err(IdentityError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn ids_are_32_lowercase_hex() {
        let id = new_id();
        assert_eq!(id.len(), 32);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_ne!(id, new_id());
    }

    #[test]
    fn names() {
        for ok in [
            "admin",
            "a",
            "Jane Doe",
            "ops-team_1.x@corp",
            &"x".repeat(64),
        ] {
            check_name("name", ok).unwrap();
        }
        for bad in [
            "",
            "1admin",
            " admin",
            "admin ",
            "a/b",
            "ä",
            &"x".repeat(65),
        ] {
            assert_eq!(rule_of(check_name("name", bad)), "name", "{bad:?}");
        }
    }

    #[test]
    fn project_names_and_regions() {
        check_project_name("eu-de_prod.1").unwrap();
        assert_eq!(rule_of(check_project_name("eu de")), "name");
        assert_eq!(rule_of(check_project_name("")), "name");
        check_region("eu-de").unwrap();
        check_region("ap_southeast-3").unwrap();
        for bad in ["EU-DE", "", "eu.de", &"a".repeat(65)] {
            assert_eq!(rule_of(check_region(bad)), "region", "{bad:?}");
        }
    }

    #[test]
    fn descriptions_and_emails() {
        check_description("").unwrap();
        check_description(&"é".repeat(255)).unwrap();
        assert_eq!(rule_of(check_description(&"a".repeat(256))), "description");
        assert_eq!(rule_of(check_description("a\u{0}b")), "description");
        check_email("ops@example.com").unwrap();
        for bad in ["ops", "@example.com", "ops@", "a@b@c", "o ps@example.com"] {
            assert_eq!(rule_of(check_email(bad)), "email", "{bad:?}");
        }
    }

    #[test]
    fn passwords_need_length_and_two_classes() {
        for ok in [
            "abcdefg1",
            "ABCDEFGh",
            "abcdefg!",
            "Pässwort",
            &"aA".repeat(64),
        ] {
            check_password(ok).unwrap();
        }
        for bad in [
            "abcdefgh",
            "12345678",
            "Ab1!",
            &"aA".repeat(65),
            "abcdefg1\n",
        ] {
            match check_password(bad) {
                Err(IdentityError::Invalid { field, rule }) => {
                    assert_eq!(field, "password");
                    assert!(rule.contains("8-128"), "{rule}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn chosen_values() {
        check_chosen_id("domain_id", "my_domain-1").unwrap();
        assert_eq!(rule_of(check_chosen_id("domain_id", "a/b")), "domain_id");
        assert_eq!(rule_of(check_chosen_id("project_id", "")), "project_id");
        check_chosen_access_key("AKIA1234").unwrap();
        assert_eq!(rule_of(check_chosen_access_key("AK-1")), "access_key");
        check_chosen_secret("s3cr3t!#~").unwrap();
        assert_eq!(rule_of(check_chosen_secret("short")), "secret_key");
        assert_eq!(rule_of(check_chosen_secret("with space")), "secret_key");
        check_methods(&["password", "token"]).unwrap();
        assert_eq!(rule_of(check_methods(&[])), "methods");
        assert_eq!(rule_of(check_methods(&["Password"])), "methods");
    }

    #[test]
    fn generated_values_have_their_shapes() {
        let ak = random_access_key();
        assert_eq!(ak.len(), 20);
        assert!(ak
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
        check_chosen_access_key(&ak).unwrap();
        let sk = random_secret();
        assert_eq!(sk.len(), 40);
        assert!(sk.chars().all(|c| c.is_ascii_alphanumeric()));
        check_chosen_secret(&sk).unwrap();
        let pw = random_password();
        assert_eq!(pw.len(), 20);
        check_password(&pw).unwrap();
        assert_ne!(random_bytes::<32>(), random_bytes::<32>());
    }
}

//! Email addresses as the proxy keys and shows them: validated, normalised, masked.

/// A validated address: trimmed, domain lower-cased, exactly one `@`, no spaces or controls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(input: &str) -> Option<Self> {
        let trimmed = input.trim();
        let (local, domain) = trimmed.split_once('@')?;
        let valid_local = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        let valid_domain = domain.len() <= 253
            && domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        // `a@b@c` fails here: the second `@` is not a domain character (a known check bypass).
        (valid_local && valid_domain)
            .then(|| Self(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `a•••@example.com`: enough for the user to recognise, not enough to harvest.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

/// Masks any stored address string (see [`EmailAddress::masked`]).
pub fn mask(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}•••@{domain}")
        }
        None => "•••".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_and_normalising() {
        assert_eq!(
            EmailAddress::parse(" Alice@Example.COM ").unwrap().as_str(),
            "Alice@example.com"
        );
        assert_eq!(
            EmailAddress::parse("a.b+tag@mail.example.org")
                .unwrap()
                .as_str(),
            "a.b+tag@mail.example.org"
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "a@b@company.com",
            "alice @example.com",
            "alice@exa mple.com",
            "alice@-example.com",
            ".alice@example.com",
            "al..ice@example.com",
            "alice@example..com",
            "alice\n@example.com",
            "<alice@example.com>",
        ] {
            assert!(EmailAddress::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn masking() {
        assert_eq!(
            EmailAddress::parse("alice@example.com").unwrap().masked(),
            "a•••@example.com"
        );
        assert_eq!(mask("x@y.z"), "x•••@y.z");
        assert_eq!(mask("nonsense"), "•••");
    }
}

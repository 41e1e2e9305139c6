//! Splitting envelope addresses into local part and domain.

/// An address split at its last `@`. Addresses without `@` (local
/// submissions such as `root`) have no domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address<'a> {
    /// Everything before the last `@`, or the whole address.
    pub local: &'a str,
    /// Everything after the last `@`.
    pub domain: Option<&'a str>,
}

/// Splits at the last `@`, so quoted local parts containing `@` keep it.
pub fn split_address(addr: &str) -> Address<'_> {
    match addr.rfind('@') {
        Some(i) => Address {
            local: &addr[..i],
            domain: Some(&addr[i + 1..]),
        },
        None => Address {
            local: addr,
            domain: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_last_at() {
        let a = split_address("\"a@b\"@example.com");
        assert_eq!(a.local, "\"a@b\"");
        assert_eq!(a.domain, Some("example.com"));
        assert_eq!(split_address("root").domain, None);
    }
}

//! Splitting envelope addresses into local part and domain; reading the
//! client address as MTAs write it.

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

/// The client address as MTAs write it (and the store records it):
/// `192.0.2.1`, `[192.0.2.1]`, `IPv6:2001:db8::1`; an IPv4-mapped IPv6
/// address is its IPv4 address. `unknown` and garbage are `None`. The rules
/// and the search language both read client addresses with this.
pub fn client_ip(text: &str) -> Option<std::net::IpAddr> {
    use std::net::IpAddr;
    let t = text.trim().trim_start_matches('[').trim_end_matches(']');
    let t = t
        .strip_prefix("IPv6:")
        .or_else(|| t.strip_prefix("ipv6:"))
        .unwrap_or(t);
    let ip: IpAddr = t.parse().ok()?;
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    })
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

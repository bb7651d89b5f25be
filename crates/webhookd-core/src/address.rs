//! Which IP addresses webhookd may send to (SPEC §7).
//!
//! Webhook URLs are user input, so without this guard a user could make
//! webhookd POST into the operator's private network or a cloud metadata
//! service. The delivery client checks every *resolved* address at connect
//! time (so DNS rebinding does not help), and the API refuses literal IPs in
//! that are blocked. Embedded IPv4 addresses (IPv4-mapped, NAT64, 6to4) are
//! judged by the IPv4 address they carry.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Forbidden IPv4 ranges and why.
const V4_BLOCKS: &[(u32, u8, &str)] = &[
    (0x0000_0000, 8, "unspecified"),    // 0.0.0.0/8 "this network"
    (0x0A00_0000, 8, "private"),        // 10.0.0.0/8
    (0x6440_0000, 10, "cgnat"),         // 100.64.0.0/10
    (0x7F00_0000, 8, "loopback"),       // 127.0.0.0/8
    (0xA9FE_0000, 16, "link_local"),    // 169.254.0.0/16, incl. metadata
    (0xAC10_0000, 12, "private"),       // 172.16.0.0/12
    (0xC000_0000, 24, "reserved"),      // 192.0.0.0/24 IETF assignments
    (0xC000_0200, 24, "documentation"), // 192.0.2.0/24
    (0xC0A8_0000, 16, "private"),       // 192.168.0.0/16
    (0xC612_0000, 15, "benchmarking"),  // 198.18.0.0/15
    (0xC633_6400, 24, "documentation"), // 198.51.100.0/24
    (0xCB00_7100, 24, "documentation"), // 203.0.113.0/24
    (0xE000_0000, 4, "multicast"),      // 224.0.0.0/4
    (0xF000_0000, 4, "reserved"),       // 240.0.0.0/4 incl. broadcast
];

/// An address webhookd refuses to connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockedAddress {
    pub address: IpAddr,
    /// Which kind of range it is in: `loopback`, `private`, `link_local`, …
    pub range: &'static str,
}

impl fmt::Display for BlockedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is a {} address",
            self.address,
            self.range.replace('_', "-")
        )
    }
}

/// The forbidden ranges minus the operator's `allowed_networks`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    pub fn new(allowed: Vec<IpNet>) -> Self {
        AddressPolicy { allowed }
    }

    /// `Ok` when webhookd may connect to `address`.
    pub fn check(&self, address: IpAddr) -> Result<(), BlockedAddress> {
        let embedded = match address {
            IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let allowed = |ip: IpAddr| self.allowed.iter().any(|net| net.contains(&ip));
        if allowed(address) || embedded.is_some_and(allowed) {
            return Ok(());
        }
        match forbidden_range(address) {
            Some(range) => Err(BlockedAddress { address, range }),
            None => Ok(()),
        }
    }
}

fn forbidden_range(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(address: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(address);
    V4_BLOCKS.iter().find_map(|&(network, prefix, range)| {
        let mask = u32::MAX << (32 - prefix);
        (bits & mask == network).then_some(range)
    })
}

fn forbidden_v6(address: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_ipv4(address) {
        return forbidden_v4(v4);
    }
    let segments = address.segments();
    if address.is_unspecified() {
        Some("unspecified")
    } else if address.is_loopback() {
        Some("loopback")
    } else if segments[0] & 0xffc0 == 0xfe80 {
        Some("link_local")
    } else if segments[0] & 0xffc0 == 0xfec0 {
        Some("site_local")
    } else if segments[0] & 0xfe00 == 0xfc00 {
        Some("unique_local")
    } else if segments[0] & 0xff00 == 0xff00 {
        Some("multicast")
    } else if segments[0] == 0x2001 && segments[1] == 0x0db8 {
        Some("documentation")
    } else if segments[0] == 0x0100 && segments[1..4] == [0, 0, 0] {
        Some("discard")
    } else {
        None
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-translated (SIIT, `::ffff:0:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`, and the local-use
/// `64:ff9b:1::/48` of RFC 8215, decoded the same way) or 6to4
/// (`2002:aabb:ccdd::`) address.
fn embedded_ipv4(address: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = address.segments();
    let o = address.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        // IPv4-mapped, and NAT64's well-known prefix.
        [0, 0, 0, 0, 0, 0xffff, _, _]
        | [0, 0, 0, 0, 0xffff, 0, _, _]
        | [0x64, 0xff9b, 0, 0, 0, 0, _, _]
        | [0x64, 0xff9b, 1, ..] => Some(low),
        // IPv4-compatible (deprecated, still routed by some stacks); `::` and
        // `::1` are left to the IPv6 checks.
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(low),
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: &AddressPolicy, address: &str) -> Result<(), &'static str> {
        policy
            .check(address.parse().unwrap())
            .map_err(|blocked| blocked.range)
    }

    #[test]
    fn every_forbidden_kind_of_address_is_blocked() {
        let policy = AddressPolicy::default();
        let cases = [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link_local"),
            ("100.64.0.1", "cgnat"),
            ("100.127.255.255", "cgnat"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("0.0.0.0", "unspecified"),
            ("255.255.255.255", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link_local"),
            ("fc00::1", "unique_local"),
            ("fd12:3456::1", "unique_local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link_local"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link_local"),
            ("64:ff9b:1::a9fe:a9fe", "link_local"),
            ("64:ff9b:1:ffff::7f00:1", "loopback"),
            ("::ffff:0:a9fe:a9fe", "link_local"),
            ("::ffff:0:10.0.0.1", "private"),
            ("2002:7f00:1::", "loopback"),
            ("::127.0.0.1", "loopback"),
        ];
        for (address, range) in cases {
            assert_eq!(check(&policy, address), Err(range), "{address}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        let policy = AddressPolicy::default();
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "193.0.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "64:ff9b:1::808:808",
            "::ffff:0:808:808",
        ] {
            assert_eq!(check(&policy, address), Ok(()), "{address}");
        }
    }

    #[test]
    fn allowed_networks_exempt_their_addresses_in_every_form() {
        let policy = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(check(&policy, "127.0.0.1"), Ok(()));
        assert_eq!(check(&policy, "::ffff:127.0.0.1"), Ok(()));
        assert_eq!(check(&policy, "::1"), Err("loopback"));
        assert_eq!(check(&policy, "10.0.0.1"), Err("private"));
    }

    #[test]
    fn the_reason_reads_well() {
        let blocked = AddressPolicy::default()
            .check("169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            blocked.to_string(),
            "169.254.169.254 is a link-local address"
        );
    }
}

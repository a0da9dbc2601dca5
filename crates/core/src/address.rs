//! The private-address rule: which IP addresses and host names must never be
//! used as relay targets (an SSRF guard).
//!
//! [`forbidden_ip`] judges a literal or resolved address; [`forbidden_host_name`]
//! judges a DNS name before it is resolved. Both are pure functions, so the same
//! rule serves URL validation and a native driver checking resolved addresses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address or host name is refused as a relay target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForbiddenReason {
    /// The unspecified address or the "this network" block (`0.0.0.0/8`, `::`).
    Unspecified,
    /// Loopback (`127.0.0.0/8`, `::1`).
    Loopback,
    /// RFC 1918 private IPv4 (`10/8`, `172.16/12`, `192.168/16`).
    Private,
    /// Carrier-grade NAT shared space (`100.64.0.0/10`).
    SharedCgnat,
    /// Link-local (`169.254.0.0/16`, `fe80::/10`).
    LinkLocal,
    /// Multicast (`224.0.0.0/4`, `ff00::/8`).
    Multicast,
    /// Limited broadcast (`255.255.255.255`).
    Broadcast,
    /// Documentation ranges (`192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`).
    Documentation,
    /// Benchmarking (`198.18.0.0/15`).
    Benchmarking,
    /// Reserved or special-purpose (`192.0.0/24`, `240/4`, `100::/64`, Teredo `2001::/32`).
    Reserved,
    /// IPv6 unique local addresses (`fc00::/7`).
    UniqueLocal,
    /// Deprecated IPv6 site-local addresses (`fec0::/10`).
    SiteLocal,
    /// A host name that only resolves locally (`localhost`, `.local`, single labels, ...).
    LocalName,
}

impl ForbiddenReason {
    /// A short, stable, kebab-case name for logs and messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            ForbiddenReason::Unspecified => "unspecified",
            ForbiddenReason::Loopback => "loopback",
            ForbiddenReason::Private => "private",
            ForbiddenReason::SharedCgnat => "shared-cgnat",
            ForbiddenReason::LinkLocal => "link-local",
            ForbiddenReason::Multicast => "multicast",
            ForbiddenReason::Broadcast => "broadcast",
            ForbiddenReason::Documentation => "documentation",
            ForbiddenReason::Benchmarking => "benchmarking",
            ForbiddenReason::Reserved => "reserved",
            ForbiddenReason::UniqueLocal => "unique-local",
            ForbiddenReason::SiteLocal => "site-local",
            ForbiddenReason::LocalName => "local-name",
        }
    }
}

impl fmt::Display for ForbiddenReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returns why `ip` must not be a relay target, or `None` if it is public.
///
/// IPv6 addresses that embed an IPv4 address (IPv4-mapped, IPv4-compatible,
/// NAT64 `64:ff9b::/96` and 6to4 `2002::/16`) are judged by the embedded IPv4.
pub fn forbidden_ip(ip: IpAddr) -> Option<ForbiddenReason> {
    match ip {
        IpAddr::V4(v4) => forbidden_ipv4(v4),
        IpAddr::V6(v6) => forbidden_ipv6(v6),
    }
}

fn forbidden_ipv4(ip: Ipv4Addr) -> Option<ForbiddenReason> {
    use ForbiddenReason as R;
    let [a, b, c, _] = ip.octets();
    let reason = match (a, b, c) {
        (0, _, _) => R::Unspecified,
        (10, _, _) => R::Private,
        (100, _, _) if b & 0xc0 == 64 => R::SharedCgnat,
        (127, _, _) => R::Loopback,
        (169, 254, _) => R::LinkLocal,
        (172, _, _) if b & 0xf0 == 16 => R::Private,
        (192, 0, 0) => R::Reserved,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => R::Documentation,
        (192, 168, _) => R::Private,
        (198, _, _) if b & 0xfe == 18 => R::Benchmarking,
        (224..=239, _, _) => R::Multicast,
        _ if ip == Ipv4Addr::BROADCAST => R::Broadcast,
        (240..=255, _, _) => R::Reserved,
        _ => return None,
    };
    Some(reason)
}

fn v4_from(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

fn forbidden_ipv6(ip: Ipv6Addr) -> Option<ForbiddenReason> {
    use ForbiddenReason as R;
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some(R::Unspecified);
    }
    if ip.is_loopback() {
        return Some(R::Loopback);
    }
    // IPv4-mapped ::ffff:a.b.c.d
    if s[..5] == [0; 5] && s[5] == 0xffff {
        return forbidden_ipv4(v4_from(s[6], s[7]));
    }
    // IPv4-compatible ::a.b.c.d (:: and ::1 handled above)
    if s[..6] == [0; 6] {
        return forbidden_ipv4(v4_from(s[6], s[7]));
    }
    // NAT64 well-known prefix 64:ff9b::/96
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return forbidden_ipv4(v4_from(s[6], s[7]));
    }
    // 6to4 2002:AABB:CCDD::/16
    if s[0] == 0x2002 {
        return forbidden_ipv4(v4_from(s[1], s[2]));
    }
    let reason = match s[0] {
        0x2001 if s[1] == 0 => R::Reserved,
        0x2001 if s[1] == 0x0db8 => R::Documentation,
        0x0100 if s[1..4] == [0; 3] => R::Reserved,
        x if x & 0xfe00 == 0xfc00 => R::UniqueLocal,
        x if x & 0xffc0 == 0xfe80 => R::LinkLocal,
        x if x & 0xffc0 == 0xfec0 => R::SiteLocal,
        x if x & 0xff00 == 0xff00 => R::Multicast,
        _ => return None,
    };
    Some(reason)
}

/// Returns why the host name `host` must not be a relay target, or `None`.
///
/// `host` is expected lower-case without a trailing dot; upper case and one
/// trailing dot are tolerated anyway. Refused: `localhost` and `*.localhost`,
/// `*.local`, `*.internal`, `home.arpa` and `*.home.arpa`, `*.lan`, and
/// single-label names. An IP literal (IPv6 with or without brackets) is
/// judged by [`forbidden_ip`].
pub fn forbidden_host_name(host: &str) -> Option<ForbiddenReason> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return forbidden_ip(ip);
    }
    let host = host.to_ascii_lowercase();
    const LOCAL_SUFFIXES: [&str; 5] = [".localhost", ".local", ".internal", ".home.arpa", ".lan"];
    let local = !host.contains('.')
        || host == "home.arpa"
        || LOCAL_SUFFIXES.iter().any(|suffix| host.ends_with(suffix));
    local.then_some(ForbiddenReason::LocalName)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use ForbiddenReason as R;

    fn ip(s: &str) -> Option<ForbiddenReason> {
        forbidden_ip(s.parse().unwrap())
    }

    #[test]
    fn ipv4_ranges() {
        let cases = [
            ("0.0.0.0", Some(R::Unspecified)),
            ("0.255.1.2", Some(R::Unspecified)),
            ("10.0.0.1", Some(R::Private)),
            ("10.255.255.255", Some(R::Private)),
            ("100.64.0.1", Some(R::SharedCgnat)),
            ("100.127.255.255", Some(R::SharedCgnat)),
            ("100.63.255.255", None),
            ("100.128.0.1", None),
            ("127.0.0.1", Some(R::Loopback)),
            ("127.255.255.254", Some(R::Loopback)),
            ("169.254.169.254", Some(R::LinkLocal)),
            ("169.253.0.1", None),
            ("172.15.255.255", None),
            ("172.16.0.0", Some(R::Private)),
            ("172.31.255.255", Some(R::Private)),
            ("172.32.0.0", None),
            ("192.0.0.8", Some(R::Reserved)),
            ("192.0.1.1", None),
            ("192.0.2.1", Some(R::Documentation)),
            ("198.51.100.7", Some(R::Documentation)),
            ("203.0.113.200", Some(R::Documentation)),
            ("192.168.1.1", Some(R::Private)),
            ("192.169.0.1", None),
            ("198.17.255.255", None),
            ("198.18.0.1", Some(R::Benchmarking)),
            ("198.19.255.255", Some(R::Benchmarking)),
            ("198.20.0.0", None),
            ("224.0.0.1", Some(R::Multicast)),
            ("239.255.255.255", Some(R::Multicast)),
            ("240.0.0.1", Some(R::Reserved)),
            ("255.255.255.254", Some(R::Reserved)),
            ("255.255.255.255", Some(R::Broadcast)),
            ("1.1.1.1", None),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
            ("223.255.255.255", None),
        ];
        for (addr, want) in cases {
            assert_eq!(ip(addr), want, "{addr}");
        }
    }

    #[test]
    fn ipv6_ranges() {
        let cases = [
            ("::", Some(R::Unspecified)),
            ("::1", Some(R::Loopback)),
            ("fc00::1", Some(R::UniqueLocal)),
            ("fdff:ffff::1", Some(R::UniqueLocal)),
            ("fbff::1", None),
            ("fe80::1", Some(R::LinkLocal)),
            ("febf:ffff::1", Some(R::LinkLocal)),
            ("fec0::1", Some(R::SiteLocal)),
            ("feff::1", Some(R::SiteLocal)),
            ("ff02::1", Some(R::Multicast)),
            ("ff0e::1234", Some(R::Multicast)),
            ("2001:db8::1", Some(R::Documentation)),
            ("2001:db9::1", None),
            ("100::1", Some(R::Reserved)),
            ("100:0:0:1::1", None),
            ("2001::1", Some(R::Reserved)),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some(R::Reserved)),
            ("2001:1::1", None),
            ("2606:4700::1111", None),
            ("2a00:1450:4001:81c::200e", None),
        ];
        for (addr, want) in cases {
            assert_eq!(ip(addr), want, "{addr}");
        }
    }

    #[test]
    fn ipv6_embedded_ipv4() {
        let cases = [
            ("::ffff:127.0.0.1", Some(R::Loopback)),
            ("::ffff:7f00:1", Some(R::Loopback)),
            ("::ffff:10.1.2.3", Some(R::Private)),
            ("::ffff:0.0.0.0", Some(R::Unspecified)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(R::Loopback)),
            ("::192.168.0.1", Some(R::Private)),
            ("::0.0.0.2", Some(R::Unspecified)),
            ("::8.8.8.8", None),
            ("64:ff9b::127.0.0.1", Some(R::Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(R::LinkLocal)),
            ("64:ff9b::8.8.8.8", None),
            ("2002:c0a8:0101::1", Some(R::Private)),
            ("2002:7f00:0001::", Some(R::Loopback)),
            ("2002:0808:0808::1", None),
            ("2002:6440:0001::1", Some(R::SharedCgnat)),
        ];
        for (addr, want) in cases {
            assert_eq!(ip(addr), want, "{addr}");
        }
    }

    #[test]
    fn host_names() {
        let refused = [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "foo.localhost",
            "printer.local",
            "metadata.google.internal",
            "router.home.arpa",
            "home.arpa",
            "nas.lan",
            "intranet",
            "",
        ];
        for host in refused {
            assert_eq!(forbidden_host_name(host), Some(R::LocalName), "{host}");
        }
        let allowed = [
            "relay.damus.io",
            "nos.lol",
            "localhost.example.com",
            "local.example.com",
            "example.lanes",
            "mylocal",
        ];
        for host in allowed {
            let want = if host.contains('.') {
                None
            } else {
                Some(R::LocalName)
            };
            assert_eq!(forbidden_host_name(host), want, "{host}");
        }
    }

    #[test]
    fn host_name_ip_literals() {
        assert_eq!(forbidden_host_name("127.0.0.1"), Some(R::Loopback));
        assert_eq!(forbidden_host_name("[::1]"), Some(R::Loopback));
        assert_eq!(forbidden_host_name("::ffff:10.0.0.1"), Some(R::Private));
        assert_eq!(forbidden_host_name("8.8.8.8"), None);
        assert_eq!(forbidden_host_name("[2606:4700::1111]"), None);
    }

    #[test]
    fn reason_names() {
        assert_eq!(R::Loopback.as_str(), "loopback");
        assert_eq!(R::Private.to_string(), "private");
        assert_eq!(R::SharedCgnat.to_string(), "shared-cgnat");
        assert_eq!(R::LocalName.to_string(), "local-name");
    }

    /// Forbidden IPv4 ranges: (network, prefix length, reason).
    pub(crate) const V4_FORBIDDEN: [(u32, u32, ForbiddenReason); 15] = [
        (0x0000_0000, 8, R::Unspecified),
        (0x0a00_0000, 8, R::Private),
        (0x6440_0000, 10, R::SharedCgnat),
        (0x7f00_0000, 8, R::Loopback),
        (0xa9fe_0000, 16, R::LinkLocal),
        (0xac10_0000, 12, R::Private),
        (0xc000_0000, 24, R::Reserved),
        (0xc000_0200, 24, R::Documentation),
        (0xc633_6400, 24, R::Documentation),
        (0xcb00_7100, 24, R::Documentation),
        (0xc0a8_0000, 16, R::Private),
        (0xc612_0000, 15, R::Benchmarking),
        (0xe000_0000, 4, R::Multicast),
        (0xf000_0000, 4, R::Reserved),
        (0xffff_ffff, 32, R::Broadcast),
    ];

    /// Forbidden IPv6 ranges that do not embed an IPv4 address.
    pub(crate) const V6_FORBIDDEN: [(u128, u32, ForbiddenReason); 8] = [
        (0xfc00 << 112, 7, R::UniqueLocal),
        (0xfe80 << 112, 10, R::LinkLocal),
        (0xfec0 << 112, 10, R::SiteLocal),
        (0xff00 << 112, 8, R::Multicast),
        (0x2001_0db8 << 96, 32, R::Documentation),
        (0x0100 << 112, 64, R::Reserved),
        (0x2001_0000 << 96, 32, R::Reserved),
        (1, 128, R::Loopback),
    ];

    /// Public IPv4 ranges used to check that ordinary addresses pass.
    pub(crate) const V4_PUBLIC: [(u32, u32); 5] = [
        (0x0100_0000, 8),
        (0x0800_0000, 8),
        (0x5db8_0000, 16),
        (0x9765_0000, 16),
        (0x6810_0000, 12),
    ];

    /// Public IPv6 ranges used to check that ordinary addresses pass.
    pub(crate) const V6_PUBLIC: [(u128, u32); 4] = [
        (0x2606_4700 << 96, 32),
        (0x2a00_1450 << 96, 32),
        (0x2001_4860 << 96, 32),
        (0x2400_cb00 << 96, 32),
    ];

    pub(crate) fn in_v4(net: u32, prefix: u32, bits: u32) -> Ipv4Addr {
        let host_mask = u32::MAX.checked_shr(prefix).unwrap_or(0);
        Ipv4Addr::from(net | (bits & host_mask))
    }

    pub(crate) fn in_v6(net: u128, prefix: u32, bits: u128) -> Ipv6Addr {
        let host_mask = u128::MAX.checked_shr(prefix).unwrap_or(0);
        Ipv6Addr::from(net | (bits & host_mask))
    }

    /// The reason expected for a random address drawn from a listed range.
    fn expected_v4(addr: Ipv4Addr, listed: ForbiddenReason) -> ForbiddenReason {
        if addr == Ipv4Addr::BROADCAST {
            R::Broadcast
        } else {
            listed
        }
    }

    proptest! {
        #[test]
        fn refuses_every_forbidden_v4(idx in 0..V4_FORBIDDEN.len(), bits in any::<u32>()) {
            let (net, prefix, reason) = V4_FORBIDDEN[idx];
            let addr = in_v4(net, prefix, bits);
            prop_assert_eq!(forbidden_ip(IpAddr::V4(addr)), Some(expected_v4(addr, reason)));
        }

        #[test]
        fn refuses_every_forbidden_v6(idx in 0..V6_FORBIDDEN.len(), bits in any::<u128>()) {
            let (net, prefix, reason) = V6_FORBIDDEN[idx];
            let addr = in_v6(net, prefix, bits);
            prop_assert_eq!(forbidden_ip(IpAddr::V6(addr)), Some(reason));
        }

        #[test]
        fn embedded_v4_judged_by_v4(v4 in any::<u32>(), high in any::<u16>()) {
            let want = forbidden_ipv4(Ipv4Addr::from(v4));
            let v4 = u128::from(v4);
            let mapped = Ipv6Addr::from((0xffff_u128 << 32) | v4);
            let nat64 = Ipv6Addr::from((0x0064_ff9b_u128 << 96) | v4);
            let six_to_four = Ipv6Addr::from((0x2002_u128 << 112) | (v4 << 80) | u128::from(high));
            prop_assert_eq!(forbidden_ip(IpAddr::V6(mapped)), want);
            prop_assert_eq!(forbidden_ip(IpAddr::V6(nat64)), want);
            prop_assert_eq!(forbidden_ip(IpAddr::V6(six_to_four)), want);
            let compat = forbidden_ip(IpAddr::V6(Ipv6Addr::from(v4)));
            if v4 > 1 {
                prop_assert_eq!(compat, want);
            } else {
                prop_assert!(compat.is_some());
            }
        }

        #[test]
        fn refuses_embedded_forbidden(idx in 0..V4_FORBIDDEN.len(), bits in any::<u32>()) {
            let (net, prefix, _) = V4_FORBIDDEN[idx];
            let v4 = u128::from(u32::from(in_v4(net, prefix, bits)));
            for embedded in [(0xffff_u128 << 32) | v4, (0x0064_ff9b_u128 << 96) | v4, (0x2002_u128 << 112) | (v4 << 80), v4] {
                prop_assert!(forbidden_ip(IpAddr::V6(Ipv6Addr::from(embedded))).is_some());
            }
        }

        #[test]
        fn accepts_public_v4(idx in 0..V4_PUBLIC.len(), bits in any::<u32>()) {
            let (net, prefix) = V4_PUBLIC[idx];
            let addr = in_v4(net, prefix, bits);
            prop_assert_eq!(forbidden_ip(IpAddr::V4(addr)), None);
            let mapped = Ipv6Addr::from((0xffff_u128 << 32) | u128::from(u32::from(addr)));
            prop_assert_eq!(forbidden_ip(IpAddr::V6(mapped)), None);
        }

        #[test]
        fn accepts_public_v6(idx in 0..V6_PUBLIC.len(), bits in any::<u128>()) {
            let (net, prefix) = V6_PUBLIC[idx];
            prop_assert_eq!(forbidden_ip(IpAddr::V6(in_v6(net, prefix, bits))), None);
        }

        #[test]
        fn host_name_never_panics(host in "\\PC{0,40}") {
            let _ = forbidden_host_name(&host);
        }

        #[test]
        fn local_suffixes_refused(label in "[a-z0-9-]{1,20}", idx in 0..5usize) {
            let suffix = ["localhost", "local", "internal", "home.arpa", "lan"][idx];
            let host = format!("{label}.{suffix}");
            prop_assert_eq!(forbidden_host_name(&host), Some(R::LocalName));
            prop_assert_eq!(forbidden_host_name(&label), Some(R::LocalName));
        }
    }
}

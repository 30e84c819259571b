//! Name-table tests: scoping, aliases, rotation, PTR, case.

use super::*;

fn ep(sandbox: &str, aliases: &[&str], v4: &str, v6: Option<&str>) -> DnsEndpoint {
    DnsEndpoint {
        sandbox: sandbox.into(),
        aliases: aliases.iter().map(|s| s.to_string()).collect(),
        ipv4: Some(v4.parse().unwrap()),
        ipv6: v6.map(|s| s.parse().unwrap()),
    }
}

/// front: alpha (alias web, IPv6), beta (alias web); back: beta, gamma (alias db).
pub(crate) fn table() -> NameTable {
    let mut t = NameTable::new();
    t.set_endpoint("front", ep("alpha", &["web", "WebApp."], "10.1.0.2", Some("fd00:1::2")));
    t.set_endpoint("front", ep("beta", &["web"], "10.1.0.3", None));
    t.set_endpoint("back", ep("beta", &[], "10.2.0.3", None));
    t.set_endpoint("back", ep("gamma", &["db"], "10.2.0.2", Some("fd00:2::2")));
    t
}

fn v4(t: &NameTable, asker: &str, key: &str) -> Option<Vec<String>> {
    t.lookup_name(asker, key).map(|a| a.v4.iter().map(|ip| ip.to_string()).collect())
}

#[test]
fn scoped_to_the_askers_networks() {
    let t = table();
    assert_eq!(t.networks_of("alpha"), ["front"]);
    assert_eq!(t.networks_of("beta"), ["back", "front"]);
    assert!(t.networks_of("nobody").is_empty());
    assert_eq!(t.len(), 4);

    assert_eq!(v4(&t, "alpha", "alpha").unwrap(), ["10.1.0.2"]);
    assert_eq!(v4(&t, "alpha", "beta").unwrap(), ["10.1.0.3"]);
    assert_eq!(v4(&t, "alpha", "webapp").unwrap(), ["10.1.0.2"]);
    // gamma/db live on back only: not local for alpha, in any spelling.
    for k in ["gamma", "db", "gamma.back", "db.back", "beta.back"] {
        assert_eq!(t.lookup_name("alpha", k), None, "{k}");
    }
    // And the other way round.
    for k in ["alpha", "web", "alpha.front", "web.front"] {
        assert_eq!(t.lookup_name("gamma", k), None, "{k}");
    }
    assert_eq!(v4(&t, "gamma", "db").unwrap(), ["10.2.0.2"]);
    assert_eq!(v4(&t, "gamma", "beta").unwrap(), ["10.2.0.3"]);
    // An unknown asker resolves nothing locally.
    assert_eq!(t.lookup_name("nobody", "alpha"), None);
    assert_eq!(t.lookup_name("alpha", ""), None);
}

#[test]
fn network_suffix_and_order() {
    let t = table();
    // beta is on back and front: plain names come from the first network in name order.
    assert_eq!(v4(&t, "beta", "beta").unwrap(), ["10.2.0.3"]);
    assert_eq!(v4(&t, "beta", "beta.front").unwrap(), ["10.1.0.3"]);
    assert_eq!(v4(&t, "beta", "beta.back").unwrap(), ["10.2.0.3"]);
    assert_eq!(v4(&t, "beta", "alpha.front").unwrap(), ["10.1.0.2"]);
    assert_eq!(v4(&t, "beta", "db.back").unwrap(), ["10.2.0.2"]);
    assert_eq!(t.lookup_name("beta", "alpha.back"), None);
    assert_eq!(t.lookup_name("beta", ".front"), None);
    assert_eq!(t.lookup_name("beta", "front"), None);
    assert_eq!(t.lookup_name("beta", "xfront"), None);
    // Network names are matched case-insensitively too.
    let mut u = NameTable::new();
    u.set_endpoint("Blue.Net", ep("s1", &["svc"], "10.9.0.2", None));
    assert_eq!(v4(&u, "s1", "svc.blue.net").unwrap(), ["10.9.0.2"]);
    assert_eq!(u.lookup_addr("s1", "10.9.0.2".parse().unwrap()).as_deref(), Some("s1.blue.net"));
}

#[test]
fn shared_alias_rotates() {
    let t = table();
    let a = v4(&t, "alpha", "web").unwrap();
    let b = v4(&t, "alpha", "web").unwrap();
    let c = v4(&t, "alpha", "web").unwrap();
    assert_eq!(a, ["10.1.0.2", "10.1.0.3"]);
    assert_eq!(b, ["10.1.0.3", "10.1.0.2"]);
    assert_eq!(c, a);
    // AAAA of the shared alias: only alpha has IPv6.
    let x = t.lookup_name("alpha", "web").unwrap();
    assert_eq!(x.v6, ["fd00:1::2".parse::<std::net::Ipv6Addr>().unwrap()]);
    // The counter survives a clone (the server's copy-on-write): both go on from here.
    let t2 = t.clone();
    assert_eq!(v4(&t2, "alpha", "web").unwrap(), a);
    assert_eq!(v4(&t, "alpha", "web").unwrap(), a);
    assert_eq!(v4(&t, "alpha", "web").unwrap(), b);
}

#[test]
fn reverse_lookups() {
    let t = table();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(t.lookup_addr("alpha", ip("10.1.0.3")).as_deref(), Some("beta.front"));
    assert_eq!(t.lookup_addr("alpha", ip("fd00:1::2")).as_deref(), Some("alpha.front"));
    assert_eq!(t.lookup_addr("alpha", ip("10.2.0.2")), None);
    assert_eq!(t.lookup_addr("gamma", ip("10.2.0.3")).as_deref(), Some("beta.back"));
    assert_eq!(t.lookup_addr("nobody", ip("10.1.0.3")), None);

    for s in ["10.1.0.3", "255.0.1.2", "fd00:1::2", "2001:db8::abcd:1", "::"] {
        let a = ip(s);
        let r = reverse_name(a);
        assert_eq!(parse_reverse(&r), Some(a), "{r}");
    }
    assert_eq!(reverse_name(ip("10.1.0.3")), "3.0.1.10.in-addr.arpa");
    assert!(reverse_name(ip("fd00::1")).starts_with("1.0.0.0.") && reverse_name(ip("fd00::1")).ends_with(".0.0.d.f.ip6.arpa"));
    for bad in [
        "1.0.10.in-addr.arpa",
        "1.2.3.4.5.in-addr.arpa",
        "256.0.0.10.in-addr.arpa",
        "a.0.0.10.in-addr.arpa",
        "1..0.10.in-addr.arpa",
        "in-addr.arpa",
        "1.0.0.ip6.arpa",
        "10.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa",
        "example.com",
    ] {
        assert_eq!(parse_reverse(bad), None, "{bad}");
    }
}

#[test]
fn removals() {
    let mut t = table();
    assert!(t.remove_endpoint("front", "beta"));
    assert!(!t.remove_endpoint("front", "beta"));
    assert!(!t.remove_endpoint("nonet", "beta"));
    assert_eq!(v4(&t, "alpha", "web").unwrap(), ["10.1.0.2"]);
    assert_eq!(t.lookup_name("alpha", "beta"), None);
    assert_eq!(t.networks_of("beta"), ["back"]);
    // Replacing an endpoint re-indexes its names.
    t.set_endpoint("front", ep("alpha", &["api"], "10.1.0.9", None));
    assert_eq!(t.lookup_name("alpha", "web"), None);
    assert_eq!(v4(&t, "alpha", "api").unwrap(), ["10.1.0.9"]);
    assert_eq!(t.endpoints("front").count(), 1);

    t.remove_network("back");
    assert!(t.networks_of("beta").is_empty());
    assert!(t.networks_of("gamma").is_empty());
    assert_eq!(t.endpoints("back").count(), 0);
    t.remove_sandbox("alpha");
    assert!(t.is_empty());
    assert_eq!(t.len(), 0);
}

#[test]
fn a_sandboxs_qualified_name_is_its_own_despite_an_alias_of_that_name() {
    let mut t = table();
    // delta takes alpha's name as an alias on front.
    t.set_endpoint("front", ep("delta", &["alpha"], "10.1.0.9", None));
    // The plain name is shared (as in Docker) ...
    let mut plain = v4(&t, "beta", "alpha").unwrap();
    plain.sort();
    assert_eq!(plain, ["10.1.0.2", "10.1.0.9"]);
    // ... but alpha.front is alpha alone, and an alias alone still qualifies.
    assert_eq!(v4(&t, "beta", "alpha.front").unwrap(), ["10.1.0.2"]);
    assert_eq!(v4(&t, "beta", "ALPHA.front".to_ascii_lowercase().as_str()).unwrap(), ["10.1.0.2"]);
    assert_eq!(v4(&t, "alpha", "db.back"), None, "alpha is not on back");
    let mut web = v4(&t, "gamma", "web.front").unwrap_or_default();
    web.sort();
    assert!(web.is_empty(), "gamma is not on front: {web:?}");
    let mut web = v4(&t, "beta", "web.front").unwrap();
    web.sort();
    assert_eq!(web, ["10.1.0.2", "10.1.0.3"]);
}

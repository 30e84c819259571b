//! Names: the embedded DNS at 127.0.0.11 in every sandbox (sandbox names, NAME.NETWORK,
//! aliases with rotation, scoping to the asker's networks, forwarding to upstream
//! servers over UDP and TCP), and the sandbox's resolv.conf/hosts/hostname.
//!
//! World: vswitchd in a host namespace; the host namespace reaches an "ext" namespace
//! over its own management link (203.0.113.0/24), where dnsmasq is the upstream DNS
//! server; sandboxes are told `--dns 203.0.113.2`.

use std::time::Duration;

use vswitchd_e2e::*;

const UPSTREAM: &str = "203.0.113.2";

struct Dns {
    w: World,
    ext: String,
}

fn world(test: &str) -> Option<Dns> {
    let mut w = World::new(test, &["dig", "dnsmasq", "getent"])?;
    let host = w.netns("host");
    let ext = w.netns("ext");
    sh_ok(&format!("ip -n {host} link add mgmt0 type veth peer name mgmt0 netns {ext}"));
    sh_ok(&format!("ip -n {host} addr add 203.0.113.1/24 dev mgmt0 && ip -n {host} link set mgmt0 up"));
    sh_ok(&format!("ip -n {ext} addr add {UPSTREAM}/24 dev mgmt0 && ip -n {ext} link set mgmt0 up"));
    // An upstream that knows example.test (and answers big TXT records only over TCP).
    let pid = w.dir.join("dnsmasq.pid");
    let big: String = (0..40).map(|i| format!("--txt-record=big.example.test,{}{} ", "x".repeat(200), i)).collect();
    sh_ok(&format!(
        "ip netns exec {ext} dnsmasq --no-resolv --no-hosts --bind-interfaces --listen-address={UPSTREAM} \
         --address=/example.test/203.0.113.7 --address=/nx.example.test/ --address=/#/ {big} --pid-file={} --user=root",
        pid.display()
    ));
    assert!(wait_for(Duration::from_secs(5), || in_ns(&ext, &format!("dig +short +time=1 +tries=1 @{UPSTREAM} a.example.test")).stdout.starts_with(b"203.0.113.7")));
    w.start_daemon(&host, &["--workers", "1"]);
    Some(Dns { w, ext })
}

fn sandbox(w: &World, short: &str, extra: &[&str]) -> String {
    let n = w.name(short);
    let mut a = vec!["sandbox", "create", &n, "--dns", UPSTREAM];
    a.extend_from_slice(extra);
    w.ctl_ok(0, &a);
    n
}

fn dig(ns: &str, args: &str) -> String {
    String::from_utf8_lossy(&in_ns(ns, &format!("dig +time=3 +tries=1 @127.0.0.11 {args}")).stdout).into_owned()
}

fn short(ns: &str, args: &str) -> Vec<String> {
    let mut v: Vec<String> = dig(ns, &format!("+short {args}")).lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    v.sort();
    v
}

#[test]
fn names_aliases_scoping_and_forwarding() {
    let Some(d) = world("dns") else { return };
    let w = &d.w;
    w.ctl_ok(0, &["network", "create", "web", "--subnet", "10.70.0.0/24"]);
    w.ctl_ok(0, &["network", "create", "back", "--subnet", "10.71.0.0/24"]);
    let c1 = sandbox(w, "c1", &[]);
    let c2 = sandbox(w, "c2", &[]);
    let db1 = sandbox(w, "db1", &[]);
    let db2 = sandbox(w, "db2", &[]);
    let other = sandbox(w, "other", &[]);
    w.ctl_ok(0, &["connect", "web", &c1]);
    w.ctl_ok(0, &["connect", "web", &c2]);
    w.ctl_ok(0, &["connect", "web", &db1, "--alias", "db"]);
    w.ctl_ok(0, &["connect", "web", &db2, "--alias", "db"]);
    w.ctl_ok(0, &["connect", "back", &other]);

    // Sandbox names, NAME.NETWORK, through getaddrinfo and through dig.
    let g = String::from_utf8_lossy(&in_ns(&c1, &format!("getent hosts {c2}")).stdout).into_owned();
    assert!(g.starts_with("10.70.0.3 "), "getent: {g:?}");
    assert_eq!(short(&c1, &format!("{c2}.web")), vec!["10.70.0.3"]);
    assert!(in_ns(&c1, &format!("ping -c 1 -W 2 {c2}")).status.success(), "ping by name");
    assert!(dig(&c1, &c2).contains("flags: qr aa rd ra"), "local answers are authoritative");
    // Reverse lookup.
    let ptr = short(&c1, "-x 10.70.0.3");
    assert_eq!(ptr, vec![format!("{c2}.web.")]);
    // An alias shared by two sandboxes: both addresses, in rotating order.
    assert_eq!(short(&c1, "db"), vec!["10.70.0.4", "10.70.0.5"]);
    let firsts: std::collections::BTreeSet<String> =
        (0..6).map(|_| dig(&c1, "+short db").lines().next().unwrap_or("").to_string()).collect();
    assert_eq!(firsts.len(), 2, "round robin: {firsts:?}");
    // An alias cannot take another sandbox's NAME.NETWORK, nor be an invalid DNS name.
    let e = w.ctl_err(0, &["connect", "back", &c1, "--alias", &format!("{}.BACK", other.to_uppercase())]);
    assert!(e.contains("names ending in .back are the sandboxes' own names"), "{e}");
    let e = w.ctl_err(0, &["connect", "back", &c1, "--alias", "a..b"]);
    assert!(e.contains("each dot-separated part must be 1 to 63 characters"), "{e}");
    // Scoping: names of other networks are not answered here (go upstream: NXDOMAIN).
    assert!(dig(&other, &c1).contains("status: NXDOMAIN"), "{}", dig(&other, &c1));
    assert!(dig(&c1, &other).contains("status: NXDOMAIN"));
    // Forwarding to the sandbox's upstream: UDP, TCP, NXDOMAIN passed on.
    assert_eq!(short(&c1, "www.example.test"), vec!["203.0.113.7"]);
    assert_eq!(short(&c1, "+tcp www.example.test"), vec!["203.0.113.7"]);
    assert!(dig(&c1, "nx.example.test").contains("status: NXDOMAIN"));
    // A truncated UDP answer makes the server retry over TCP: the client gets it all.
    let txt = dig(&c1, "+ignore +bufsize=512 TXT big.example.test");
    assert!(txt.contains("flags: qr") && txt.contains(" tc"), "truncated to the client over UDP: {txt}");
    let full = dig(&c1, "+tcp TXT big.example.test");
    assert_eq!(full.matches("\tTXT\t").count(), 40, "{full}");
    // Disconnect: the name goes away.
    w.ctl_ok(0, &["disconnect", "web", &c2]);
    assert!(dig(&c1, &c2).contains("status: NXDOMAIN"));
    let _ = &d.ext;
}

#[test]
fn sandbox_files_and_dead_upstream() {
    let Some(d) = world("dns-files") else { return };
    let w = &d.w;
    w.ctl_ok(0, &["network", "create", "web", "--subnet", "10.72.0.0/24"]);
    let c1 = sandbox(w, "c1", &["--hostname", "app1", "--dns-search", "corp.test", "--dns-option", "ndots:2"]);
    w.ctl_ok(0, &["connect", "web", &c1, "--alias", "api"]);
    let cat = |f: &str| String::from_utf8_lossy(&in_ns(&c1, &format!("cat /etc/{f}")).stdout).into_owned();
    assert_eq!(cat("hostname").trim(), "app1");
    let rc = cat("resolv.conf");
    assert!(rc.contains("nameserver 127.0.0.11") && rc.contains("search corp.test") && rc.contains("ndots:2"), "{rc}");
    let hosts = cat("hosts");
    assert!(hosts.contains("localhost") && hosts.lines().any(|l| l.starts_with("10.72.0.2") && l.contains("app1") && l.contains("api")), "{hosts}");
    // Search domains apply; the hosts file follows endpoint changes.
    assert_eq!(short(&c1, "+search www"), Vec::<String>::new(), "www.corp.test is unknown upstream");
    w.ctl_ok(0, &["network", "create", "two", "--subnet", "10.73.0.0/24"]);
    w.ctl_ok(0, &["connect", "two", &c1]);
    assert!(cat("hosts").contains("10.73.0.2"), "{}", cat("hosts"));
    // A sandbox only on --internal networks forwards nothing (as Docker): external
    // names fail at once, its networks' names still answer; connected to a network
    // with a way out, it forwards.
    w.ctl_ok(0, &["network", "create", "priv", "--subnet", "10.74.0.0/24", "--internal"]);
    let p = sandbox(w, "p", &[]);
    w.ctl_ok(0, &["connect", "priv", &p]);
    let t0 = std::time::Instant::now();
    assert!(dig(&p, "www.example.test").contains("status: SERVFAIL"), "{}", dig(&p, "www.example.test"));
    assert!(t0.elapsed() < Duration::from_secs(1), "at once: {:?}", t0.elapsed());
    assert_eq!(short(&p, &p), vec!["10.74.0.2"]);
    w.ctl_ok(0, &["connect", "web", &p]);
    assert_eq!(short(&p, "www.example.test"), vec!["203.0.113.7"]);
    w.ctl_ok(0, &["disconnect", "web", &p]);
    assert!(dig(&p, "www.example.test").contains("status: SERVFAIL"));
    // The upstream dies: SERVFAIL, and local names still answer.
    sh_ok(&format!("kill $(cat {})", w.dir.join("dnsmasq.pid").display()));
    assert!(dig(&c1, "www.example.test").contains("status: SERVFAIL"));
    // A plain name answers from the first of the asker's networks that knows it.
    let own = short(&c1, &c1);
    assert!(own.len() == 1 && ["10.72.0.2", "10.73.0.2"].contains(&own[0].as_str()), "{own:?}");
    assert_eq!(short(&c1, &format!("{c1}.web")), vec!["10.72.0.2"]);
    // Bad input for the sandbox's DNS settings is refused.
    assert!(w.ctl_err(0, &["sandbox", "create", &w.name("bad"), "--dns", "nope"]).contains("--dns"));
    let _ = &d.ext;
}

/// With `--uplink`, the daemon's namespace may have no route at all to the upstream (the
/// uplink and its address belong to the dataplane): the forwarder then asks from the
/// sandbox's namespace, through the gateway and the masquerade, over UDP and TCP.
#[test]
fn forwarding_through_the_dataplane_uplink() {
    let Some(mut w) = World::new("dns-uplink", &["dig", "dnsmasq"]) else { return };
    let host = w.netns("host");
    let ext = w.netns("ext");
    let up = "198.51.100.1";
    sh_ok(&format!("ip -n {host} link add up0 type veth peer name eth0 netns {ext}"));
    sh_ok(&format!("ip -n {ext} addr add {up}/24 dev eth0 && ip -n {ext} link set eth0 up"));
    let pid = w.dir.join("dnsmasq-up.pid");
    sh_ok(&format!(
        "ip netns exec {ext} dnsmasq --no-resolv --no-hosts --bind-interfaces --listen-address={up} --address=/example.test/203.0.113.8 --address=/#/ --pid-file={} --user=root",
        pid.display()
    ));
    w.start_daemon(&host, &["--workers", "1", "--uplink", "up0", "--uplink-addr", "198.51.100.2/24", "--uplink-gateway", up]);
    // The daemon's namespace has no route to the upstream.
    assert!(!sh(&format!("ip netns exec {host} ip route get {up}")).status.success(), "the host namespace must have no route for this test");
    w.ctl_ok(0, &["network", "create", "web", "--subnet", "10.72.0.0/24"]);
    let c = w.name("c");
    w.ctl_ok(0, &["sandbox", "create", &c, "--dns", up]);
    w.ctl_ok(0, &["connect", "web", &c]);
    assert_eq!(short(&c, "www.example.test"), vec!["203.0.113.8"], "over UDP{}", w.log_tail(0));
    assert_eq!(short(&c, "+tcp www.example.test"), vec!["203.0.113.8"], "over TCP{}", w.log_tail(0));
    // Sandboxes stay apart: a second sandbox forwards from its own namespace too, and
    // removing the first leaves it working.
    let d = w.name("d");
    w.ctl_ok(0, &["sandbox", "create", &d, "--dns", up]);
    w.ctl_ok(0, &["connect", "web", &d]);
    w.ctl_ok(0, &["sandbox", "rm", &c]);
    assert_eq!(short(&d, "other.example.test"), vec!["203.0.113.8"]);
    // A sandbox whose own --dns is a loopback address means its own resolver (a cache
    // inside it), not the daemon namespace's.
    let l = w.name("l");
    w.ctl_ok(0, &["sandbox", "create", &l, "--dns", "127.0.0.1"]);
    w.ctl_ok(0, &["connect", "web", &l]);
    let pid = w.dir.join("dnsmasq-lo.pid");
    sh_ok(&format!(
        "ip netns exec {l} dnsmasq --no-resolv --no-hosts --bind-interfaces --listen-address=127.0.0.1 --address=/example.test/203.0.113.9 --pid-file={} --user=root",
        pid.display()
    ));
    assert!(wait_for(Duration::from_secs(5), || short(&l, "www.example.test") == vec!["203.0.113.9"]), "the sandbox's own loopback resolver: {:?}", short(&l, "www.example.test"));
    assert_eq!(short(&l, "+tcp www.example.test"), vec!["203.0.113.9"]);
}

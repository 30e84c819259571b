//! Gateway router, NAT, published ports and isolation end to end: sandboxes behind
//! vswitchd's uplink reach an "external" namespace through masquerade, published ports
//! are reachable from outside, from siblings (hairpin) and from the host's loopback,
//! networks stay isolated.
//!
//! World:  sandboxes ── vswitchd (host ns) ── up0 ==veth== eth0 (ext ns, 198.51.100.1/24)
//! The uplink address 198.51.100.2/24 is owned by the dataplane; the kernel of the host
//! namespace has no address on up0.

use std::time::Duration;

use vswitchd_e2e::*;

const EXT_IP: &str = "198.51.100.1";
const UPLINK_IP: &str = "198.51.100.2";

struct Net {
    w: World,
    host: String,
    ext: String,
}

fn world(test: &str, extra: &[&str], tools: &[&str]) -> Option<Net> {
    let mut w = World::new(test, tools)?;
    let host = w.netns("host");
    let ext = w.netns("ext");
    sh_ok(&format!("ip -n {host} link add up0 type veth peer name eth0 netns {ext}"));
    sh_ok(&format!("ip -n {ext} addr add {EXT_IP}/24 dev eth0 && ip -n {ext} link set eth0 up"));
    let mut args = vec!["--workers", "2", "--uplink", "up0", "--uplink-addr", "198.51.100.2/24", "--uplink-gateway", EXT_IP];
    args.extend_from_slice(extra);
    w.start_daemon(&host, &args);
    Some(Net { w, host, ext })
}

fn sandbox(w: &World, net: &str, short: &str, extra: &[&str]) -> (String, String) {
    let n = w.name(short);
    w.ctl_ok(0, &["sandbox", "create", &n]);
    let mut a = vec!["connect", net, &n];
    a.extend_from_slice(extra);
    let out = w.ctl_ok(0, &a);
    let ip = out.split_whitespace().nth(2).and_then(|c| c.split('/').next()).unwrap().to_string();
    (n, ip)
}

/// Starts a TCP server in `ns` on `port` that answers every connection with the
/// client's address as it saw it ("peer=IP:PORT"), and a UDP echo that prefixes the
/// same. Returns nothing; processes die with the namespace.
fn who_am_i_servers(ns: &str, port: u16) {
    let py = format!(
        r#"
import socket, threading
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", {port})); s.listen(64)
    while True:
        c, a = s.accept()
        try:
            c.recv(4096); c.sendall(("peer=%s:%d\n" % a).encode())
        finally:
            c.close()
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", {port}))
    while True:
        d, a = u.recvfrom(65535); u.sendto(("peer=%s:%d " % a).encode() + d, a)
threading.Thread(target=tcp, daemon=True).start()
udp()
"#
    );
    let f = format!("/tmp/whoami-{ns}-{port}.py");
    std::fs::write(&f, py).unwrap();
    sh_ok(&format!("ip netns exec {ns} sh -c 'python3 {f} >/dev/null 2>&1 &'"));
    let listening = |proto: &str| !in_ns(ns, &format!("ss -H{proto}ln 'sport = :{port}'")).stdout.is_empty();
    assert!(wait_for(Duration::from_secs(10), || listening("t") && listening("u")), "servers in {ns} did not start");
}

fn tcp_ask(ns: &str, ip: &str, port: u16) -> String {
    let o = in_ns(ns, &format!("sh -c 'echo hi | timeout 5 nc -w 3 {ip} {port}'"));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn udp_ask(ns: &str, ip: &str, port: u16) -> String {
    let o = in_ns(ns, &format!("sh -c 'echo ping | timeout 5 nc -u -w 2 {ip} {port}'"));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn masquerade_to_the_outside() {
    let Some(n) = world("nat-out", &[], &["ping", "nc", "python3"]) else { return };
    let w = &n.w;
    w.ctl_ok(0, &["network", "create", "web", "--subnet", "10.10.0.0/24"]);
    let (c1, _) = sandbox(w, "web", "c1", &[]);
    // The uplink address answers ARP and ping from outside.
    assert!(ping(&n.ext, UPLINK_IP), "uplink address answers{}", w.log_tail(0));
    // A closed port on it is refused at once, as a host refuses it: TCP gets a RST,
    // UDP a port unreachable (clients used to wait for their timeout).
    let probe = format!(
        "import socket, sys\ntry:\n    socket.create_connection(('{UPLINK_IP}', 8999), timeout=3)\n    print('open')\nexcept ConnectionRefusedError:\n    print('tcp refused')\nexcept OSError as e:\n    print('tcp', e)\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3); u.connect(('{UPLINK_IP}', 8998))\ntry:\n    u.send(b'x'); u.recv(10); print('udp answered')\nexcept ConnectionRefusedError:\n    print('udp refused')\nexcept OSError as e:\n    print('udp', e)\n"
    );
    let f = w.dir.join("probe.py");
    std::fs::write(&f, probe).unwrap();
    let o = String::from_utf8_lossy(&in_ns(&n.ext, &format!("python3 {}", f.display())).stdout).into_owned();
    assert!(o.contains("tcp refused") && o.contains("udp refused"), "{o}{}", w.log_tail(0));
    // The uplink has its row in the stats.
    let st = w.ctl_json(0, &["stats", "--port", "uplink:up0"]);
    assert!(st["ports"][0]["rx_packets"].as_u64() > Some(0) && st["ports"][0]["type"] == "uplink", "{st}");
    // Also by the uplink's interface name.
    let st = w.ctl_json(0, &["stats", "--port", "up0"]);
    assert_eq!(st["ports"][0]["type"], "uplink", "{st}");
    // ICMP echo through NAT.
    assert!(ping(&c1, EXT_IP), "sandbox pings the outside{}", w.log_tail(0));
    // Fragments of a NATed flow are not blackholed: a 3000-byte echo leaves as three
    // fragments and its reply comes back as three.
    let o = in_ns(&c1, &format!("ping -c 2 -i 0.3 -W 2 -s 3000 {EXT_IP}"));
    assert!(o.status.success(), "fragmented ping through NAT: {}{}", String::from_utf8_lossy(&o.stdout), w.log_tail(0));
    // TCP and UDP: the server sees the uplink address as the source.
    who_am_i_servers(&n.ext, 8000);
    let r = tcp_ask(&c1, EXT_IP, 8000);
    assert!(r.starts_with(&format!("peer={UPLINK_IP}:")), "TCP through masquerade: {r:?}");
    let u = udp_ask(&c1, EXT_IP, 8000);
    assert!(u.starts_with(&format!("peer={UPLINK_IP}:")), "UDP through masquerade: {u:?}");
    // Port preservation: a client bound to a fixed port keeps it (RFC 4787 REQ-3).
    let r = in_ns(&c1, &format!("sh -c 'echo hi | timeout 5 nc -p 40123 -w 3 {EXT_IP} 8000'"));
    assert!(String::from_utf8_lossy(&r.stdout).contains(&format!("peer={UPLINK_IP}:40123")), "{r:?}");
    // The connection table shows them.
    let ct = w.ctl_json(0, &["conntrack", "ls"]);
    assert!(ct.as_array().map(|a| !a.is_empty()).unwrap_or(false), "{ct}");
    // States as `conntrack -L` names them, in the JSON too.
    let states: Vec<&str> = ct.as_array().unwrap().iter().filter_map(|c| c["state"].as_str()).collect();
    assert!(states.iter().all(|s| s.chars().all(|c| c.is_ascii_uppercase() || c == '_')) && !states.is_empty(), "{ct}");
    w.ctl_ok(0, &["conntrack", "flush"]);
    // traceroute shows the gateway hop first.
    if in_ns(&c1, "which traceroute").status.success() {
        let t = String::from_utf8_lossy(&in_ns(&c1, &format!("traceroute -n -w 1 -q 1 -m 3 {EXT_IP}")).stdout).into_owned();
        let hops: Vec<&str> = t.lines().skip(1).collect();
        assert!(hops.first().map(|l| l.contains("10.10.0.1")).unwrap_or(false), "first hop is the gateway: {t}");
        assert!(hops.iter().any(|l| l.contains(EXT_IP)), "{t}");
    }
}

#[test]
fn published_ports_from_outside_siblings_and_loopback() {
    let Some(n) = world("publish", &[], &["nc", "python3"]) else { return };
    let w = &n.w;
    w.ctl_ok(0, &["network", "create", "web", "--subnet", "10.20.0.0/24"]);
    let (srv, _) = sandbox(w, "web", "srv", &["-p", "8080:80", "-p", "5353:5300/udp", "-p", "9000-9001:90-91", "-p", "7000"]);
    let (sib, _) = sandbox(w, "web", "sib", &[]);
    who_am_i_servers(&srv, 80);
    // (Not 53: the embedded DNS listens on 127.0.0.11:53 in every sandbox.)
    who_am_i_servers(&srv, 5300);
    who_am_i_servers(&srv, 91);
    // `port SANDBOX` lists them like `docker port`.
    let ports = w.ctl_ok(0, &["port", &srv]);
    assert!(ports.contains("80/tcp -> 0.0.0.0:8080") && ports.contains("5300/udp -> 0.0.0.0:5353"), "{ports}");
    assert!(ports.contains("7000/tcp -> 0.0.0.0:49153"), "ephemeral host port: {ports}");
    let cports: Vec<u16> = ports.lines().filter_map(|l| l.split('/').next()?.parse().ok()).collect();
    assert!(cports.windows(2).all(|w| w[0] <= w[1]) && cports.len() >= 3, "sorted by container port: {ports}");
    // From the external namespace at the uplink address; the service sees the real client.
    let r = tcp_ask(&n.ext, UPLINK_IP, 8080);
    assert!(r.starts_with(&format!("peer={EXT_IP}:")), "published TCP from outside: {r:?}{}", w.log_tail(0));
    let u = udp_ask(&n.ext, UPLINK_IP, 5353);
    assert!(u.starts_with(&format!("peer={EXT_IP}:")), "published UDP from outside: {u:?}");
    assert!(tcp_ask(&n.ext, UPLINK_IP, 9001).starts_with("peer="), "port range maps one to one");
    // From a sibling sandbox through the uplink address (hairpin NAT), and through its
    // gateway's address (published ports answer on every address of the switch).
    let h = tcp_ask(&sib, UPLINK_IP, 8080);
    assert!(h.starts_with("peer="), "hairpin: {h:?}");
    let h = tcp_ask(&sib, "10.20.0.1", 8080);
    assert!(h.starts_with("peer="), "through the gateway address: {h:?}{}", w.log_tail(0));
    // From the host namespace's loopback through the userland proxy.
    let l = tcp_ask(&n.host, "127.0.0.1", 8080);
    assert!(l.starts_with("peer="), "userland proxy TCP: {l:?}");
    let lu = udp_ask(&n.host, "127.0.0.1", 5353);
    assert!(lu.starts_with("peer="), "userland proxy UDP: {lu:?}");
    // A conflicting publication is refused with a clear error.
    let (other, _) = sandbox(w, "web", "other", &[]);
    let e = w.ctl_err(0, &["connect", "web", &other, "-p", "8080:80"]);
    assert!(e.contains("already connected") || e.contains("8080/tcp is already published"), "{e}");
    let (o2n, _) = (w.name("o2"), ());
    w.ctl_ok(0, &["sandbox", "create", &o2n]);
    let e = w.ctl_err(0, &["connect", "web", &o2n, "-p", "8080:80"]);
    assert!(e.contains("8080/tcp is already published by sandbox"), "{e}");
    // A host address ports are never served on is refused (Docker fails to bind it);
    // the uplink address and 127.0.0.1 are accepted.
    let e = w.ctl_err(0, &["connect", "web", &o2n, "-p", "192.0.2.9:8090:80"]);
    assert!(e.contains("-p 192.0.2.9:8090:80: 192.0.2.9 is not an address ports are published on (0.0.0.0, the uplink address 198.51.100.2 or 127.0.0.1)"), "{e}");
    w.ctl_ok(0, &["connect", "web", &o2n, "-p", &format!("{UPLINK_IP}:8091:80"), "-p", "127.0.0.1:8092:80"]);
    // A UDP client that keeps its source port follows the published port to its new
    // owner once the old one is disconnected (the old flow is forgotten, as Docker
    // flushes it), instead of staying translated to an address nobody has.
    let ask = |ns: &str| String::from_utf8_lossy(&in_ns(ns, &format!("sh -c 'echo ping | timeout 3 nc -u -p 40001 -w 1 {UPLINK_IP} 5400'")).stdout).trim().to_string();
    let (u1, _) = sandbox(w, "web", "u1", &["-p", "5400:5300/udp"]);
    who_am_i_servers(&u1, 5300);
    assert!(wait_for(Duration::from_secs(5), || ask(&n.ext).starts_with("peer=")), "first owner answers");
    w.ctl_ok(0, &["disconnect", "web", &u1]);
    let (u2, _) = sandbox(w, "web", "u2", &["-p", "5400:5300/udp", "--ip", "10.20.0.99"]);
    who_am_i_servers(&u2, 5300);
    assert!(wait_for(Duration::from_secs(8), || ask(&n.ext).starts_with("peer=")), "the same client reaches the new owner{}", w.log_tail(0));
    let ports = w.ctl_ok(0, &["port", &o2n]);
    assert!(ports.contains(&format!("80/tcp -> {UPLINK_IP}:8091")) && ports.contains("80/tcp -> 127.0.0.1:8092"), "{ports}");

    // A port range the daemon has no descriptors for is refused up front, and one that
    // fails half-way (a port of it in use) leaves none of its proxy listeners behind
    // (a failure for want of descriptors used to leave thousands open: the wake-up of
    // a listener needed a new descriptor).
    let listeners = || String::from_utf8_lossy(&in_ns(&n.host, "ss -Hltn").stdout).lines().count();
    let before = listeners();
    let pid = w.daemon(0).pid().expect("daemon pid");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    sh_ok(&format!("prlimit --pid {pid} --nofile={}:{}", fds + 400, fds + 400));
    let (big, _) = (w.name("big"), ());
    w.ctl_ok(0, &["sandbox", "create", &big]);
    let e = w.ctl_err(0, &["connect", "web", &big, "-p", "20000-20499:20000-20499"]);
    assert!(e.contains("-p: the userland proxy needs 500 descriptors for these ports"), "{e}");
    assert_eq!(listeners(), before, "no listener left by the refused range");
    let mut busy = std::process::Command::new("nsenter")
        .args([&format!("--net=/run/netns/{}", n.host), "python3", "-c", "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', 20060)); s.listen(); time.sleep(30)"])
        .spawn()
        .expect("python3");
    assert!(wait_for(Duration::from_secs(5), || listeners() == before + 1), "port 20060 taken");
    let e = w.ctl_err(0, &["connect", "web", &big, "-p", "20000-20099:20000-20099"]);
    assert!(e.contains("127.0.0.1:20060") && e.contains("in use"), "{e}");
    assert!(wait_for(Duration::from_secs(5), || listeners() == before + 1), "the range's listeners are closed: {} left", listeners() - before - 1);
    assert!(w.ctl_ok(0, &["port", &big]).trim().is_empty(), "nothing published");
    w.ctl_ok(0, &["connect", "web", &big, "-p", "20100-20109:80-89"]);
    assert_eq!(listeners(), before + 11, "a range that fits is published");
    let _ = busy.kill();
    let _ = busy.wait();
}

#[test]
fn the_uplink_is_neither_a_port_nor_a_subnet_of_a_network() {
    let Some(n) = world("uplink-guard", &[], &["ping"]) else { return };
    let w = &n.w;
    w.ctl_ok(0, &["network", "create", "web", "--subnet", "10.21.0.0/24"]);
    let (c1, _) = sandbox(w, "web", "c1", &[]);
    // Bridging the uplink would put the network on the outside segment.
    let e = w.ctl_err(0, &["port", "add", "web", "up0"]);
    assert!(e.contains("interface up0 is the uplink (--uplink)"), "{e}");
    // A network on the uplink's subnet would shadow the outside (its gateway would be
    // the uplink's next hop, and IPAM would hand out the uplink's own address).
    let e = w.ctl_err(0, &["network", "create", "shadow", "--subnet", "198.51.100.0/24"]);
    assert!(e.contains("subnet 198.51.100.0/24 overlaps 198.51.100.0/24, the subnet of the uplink up0 (--uplink)"), "{e}");
    // Nor an interface stacked on the uplink (a macvlan carries the network out just the
    // same); and a host's own IPv6 subnet is refused like its IPv4 ones.
    sh_ok(&format!("ip -n {} link add link up0 name mv0 type macvlan mode bridge && ip -n {} addr add fd77::1/64 dev mv0 nodad", n.host, n.host));
    let e = w.ctl_err(0, &["port", "add", "web", "mv0"]);
    assert!(e.contains("interface mv0 is stacked on the uplink"), "{e}");
    let e = w.ctl_err(0, &["network", "create", "v6", "--ipv6", "--subnet", "10.40.0.0/24", "--subnet", "fd77::/64"]);
    assert!(e.contains("subnet fd77::/64 overlaps fd77::/64, the subnet of interface mv0"), "{e}");
    let e = w.ctl_err(0, &["network", "create", "lo", "--subnet", "127.0.0.0/24"]);
    assert!(e.contains("subnet 127.0.0.0/24: overlaps 127.0.0.0/8 (loopback)"), "{e}");
    assert_eq!(w.ctl_json(0, &["network", "ls"]).as_array().map(|a| a.len()), Some(1), "nothing was created");
    // The outside is still reached through NAT, and its address is the uplink's gateway's.
    assert!(ping(&c1, EXT_IP), "sandbox reaches the outside{}", w.log_tail(0));
    // The uplink interface deleted and made again (a driver reload): attached again.
    sh_ok(&format!("ip -n {} link del mv0; ip -n {} link del up0", n.host, n.host));
    assert!(no_ping(&c1, EXT_IP));
    sh_ok(&format!("ip -n {} link add up0 type veth peer name eth0 netns {}", n.host, n.ext));
    sh_ok(&format!("ip -n {} addr add {EXT_IP}/24 dev eth0 && ip -n {} link set eth0 up", n.ext, n.ext));
    assert!(wait_for(Duration::from_secs(8), || ping(&c1, EXT_IP)), "uplink attached again{}", w.log_tail(0));

    // A daemon whose uplink or underlay address is not there refuses to start (it used
    // to run on with no way out, saying so only in its log).
    let bare = w.netns("bare");
    for (args, want) in [
        (vec!["--uplink", "nosuch0", "--uplink-addr", "198.51.100.2/24"], "--uplink nosuch0: no such interface in this namespace"),
        (vec!["--uplink", "lo", "--uplink-addr", "198.51.100.2/24"], "--uplink lo: not an Ethernet interface"),
        (vec!["--advertise", "198.19.9.9"], "--advertise 198.19.9.9: no interface in this namespace has that address"),
    ] {
        let e = daemon_refuses(&bare, &w.dir.join("bare-state"), &w.dir.join("bare.sock"), &args);
        assert!(e.contains(want), "{args:?}: {e}");
    }
    // Nor does one whose --uplink-addr falls in a network of its saved state (the
    // network's gateway would shadow the outside); the state is left as it was.
    let mut n = n;
    let i = n.w.start_daemon(&bare, &["--workers", "1"]);
    n.w.ctl_ok(i, &["network", "create", "inner", "--subnet", "10.23.0.0/24"]);
    n.w.stop_daemon(i, libc::SIGTERM);
    sh_ok(&format!("ip -n {bare} link add up1 type veth peer name up1p && ip -n {bare} link set up1 up"));
    let d = n.w.daemon(i);
    let before = std::fs::read_to_string(d.state_dir.join("state.json")).expect("state");
    let e = daemon_refuses(&bare, &d.state_dir, &d.socket, &["--uplink", "up1", "--uplink-addr", "10.23.0.200/24"]);
    assert!(e.contains("--uplink-addr 10.23.0.200/24: its subnet overlaps the subnet 10.23.0.0/24 of network inner"), "{e}");
    assert_eq!(std::fs::read_to_string(d.state_dir.join("state.json")).expect("state"), before, "state unchanged");
    // Nor one whose --uplink is already a port of a network (the outside would be
    // bridged into it past NAT and isolation).
    n.w.restart_daemon(i);
    n.w.ctl_ok(i, &["port", "add", "inner", "up1"]);
    n.w.stop_daemon(i, libc::SIGTERM);
    let d = n.w.daemon(i);
    let e = daemon_refuses(&bare, &d.state_dir, &d.socket, &["--uplink", "up1", "--uplink-addr", "198.51.100.9/24"]);
    assert!(e.contains("--uplink up1: is a port of network inner"), "{e}");
}

#[test]
fn isolation_internal_and_icc() {
    let Some(n) = world("isolation-l3", &[], &["ping", "nc", "python3"]) else { return };
    let w = &n.w;
    w.ctl_ok(0, &["network", "create", "a", "--subnet", "10.30.0.0/24"]);
    w.ctl_ok(0, &["network", "create", "b", "--subnet", "10.31.0.0/24"]);
    w.ctl_ok(0, &["network", "create", "priv", "--subnet", "10.32.0.0/24", "--internal"]);
    w.ctl_ok(0, &["network", "create", "noicc", "--subnet", "10.33.0.0/24", "--icc=false"]);
    let (a1, _) = sandbox(w, "a", "a1", &[]);
    let (_b1, b1ip) = sandbox(w, "b", "b1", &[]);
    let (p1, p1ip) = sandbox(w, "priv", "p1", &[]);
    let (p2, _) = sandbox(w, "priv", "p2", &[]);
    let (n1, _) = sandbox(w, "noicc", "n1", &[]);
    let (_n2, n2ip) = sandbox(w, "noicc", "n2", &[]);
    // Between networks: dropped (routing would otherwise deliver).
    assert!(no_ping(&a1, &b1ip), "a reaches b");
    assert!(ping(&a1, EXT_IP), "a reaches the outside");
    // Internal: the network works inside, no way out, no published ports.
    assert!(ping(&p1, "10.32.0.3"));
    assert!(ping(&p2, &p1ip));
    assert!(no_ping(&p1, EXT_IP), "internal network reaches the outside");
    let e = w.ctl_err(0, &["connect", "priv", &w.name("a1"), "-p", "81:80"]);
    assert!(e.contains("internal"), "{e}");
    // An internal network never provides the default route (Docker's rule): p1, on
    // it first, gets its way out from a network connected later, and keeps it when
    // the later one goes.
    let route = |ns: &str| String::from_utf8_lossy(&in_ns(ns, "ip -4 route show default").stdout).trim().to_string();
    assert_eq!(route(&p1), "", "no default route through an internal network");
    w.ctl_ok(0, &["connect", "a", &p1]);
    assert!(route(&p1).starts_with("default via 10.30.0.1"), "{}", route(&p1));
    assert!(ping(&p1, EXT_IP), "out through the second network");
    assert!(ping(&p1, "10.32.0.3"), "and still on the internal one");
    w.ctl_ok(0, &["disconnect", "a", &p1]);
    assert_eq!(route(&p1), "", "the default route does not move to the internal network");
    // icc=false: only the gateway.
    assert!(ping(&n1, "10.33.0.1"));
    assert!(no_ping(&n1, &n2ip), "icc=false sandboxes reach each other");
    assert!(ping(&n1, EXT_IP), "icc=false still reaches the outside");
    let st = w.ctl_json(0, &["stats"]);
    assert!(st["drops"]["isolated"].as_u64().unwrap_or(0) > 0, "{st}");
}

#[test]
fn path_mtu_discovery_and_ttl() {
    let Some(n) = world("pmtu", &[], &["ping", "tracepath"]) else { return };
    // The uplink link is made small while the daemon runs: 1280 bytes. Sandboxes use
    // 1500. The daemon follows the uplink's MTU (it used to keep the one read at start).
    sh_ok(&format!("ip -n {} link set up0 mtu 1280 && ip -n {} link set eth0 mtu 1280", n.host, n.ext));
    let w = &n.w;
    assert!(wait_for(Duration::from_secs(5), || w.log_tail(0).contains("uplink MTU changed")), "{}", w.log_tail(0));
    w.ctl_ok(0, &["network", "create", "web", "--subnet", "10.40.0.0/24"]);
    let (c1, _) = sandbox(w, "web", "c1", &[]);
    // A DF packet bigger than the uplink MTU gets "fragmentation needed" with MTU 1280.
    let o = in_ns(&c1, &format!("ping -c 1 -W 2 -M do -s 1400 {EXT_IP}"));
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("mtu = 1280") || text.contains("mtu=1280") || text.contains("Frag needed"), "{text}");
    // After that the sandbox's route cache knows 1280, and a 1252-byte ping (1280 total) passes.
    assert!(in_ns(&c1, &format!("ping -c 2 -W 2 -M do -s 1252 {EXT_IP}")).status.success());
    let tp = String::from_utf8_lossy(&in_ns(&c1, &format!("tracepath -n {EXT_IP}")).stdout).into_owned();
    assert!(tp.contains("pmtu 1280"), "{tp}");
    // TTL 1 to the outside: time exceeded from the gateway.
    let o = in_ns(&c1, &format!("ping -c 1 -W 2 -t 1 {EXT_IP}"));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("10.40.0.1") && text.to_lowercase().contains("time to live exceeded"), "{text}");

    // Without DF, a packet bigger than the egress MTU is fragmented (not dropped): a
    // fresh sandbox (no cached path MTU) pings with 1428-byte packets.
    let (c2, _) = sandbox(w, "web", "c2", &[]);
    assert!(in_ns(&c2, &format!("ping -c 2 -W 2 -M dont -s 1400 {EXT_IP}")).status.success(), "fragmented towards the uplink{}", w.log_tail(0));
    // Inbound, routed only after translation (a published port on a network whose
    // MTU is below the uplink's): DF clear -> fragmented; DF set -> "fragmentation
    // needed" that quotes what the outside sent (to the uplink address and published
    // port), so the sender's kernel learns the path MTU.
    w.ctl_ok(0, &["network", "create", "small", "--subnet", "10.41.0.0/24", "--mtu", "1200"]);
    let (c3, _) = sandbox(w, "small", "c3", &["-p", "7000:7000/udp"]);
    who_am_i_servers(&c3, 7000);
    let send = |pmtudisc: u8| -> String {
        let py = format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.setsockopt(socket.IPPROTO_IP, 10, {pmtudisc})\ns.settimeout(3)\n\
             s.sendto(b'a' * 1250, ('{UPLINK_IP}', 7000))\ntry:\n    print(len(s.recv(65535)))\nexcept Exception as e:\n    print('no reply', e)\n"
        );
        let f = format!("/tmp/{}-send.py", w.name("pmtu"));
        std::fs::write(&f, py).unwrap();
        let o = in_ns(&n.ext, &format!("python3 {f}"));
        let _ = std::fs::remove_file(&f);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    // IP_PMTUDISC_DONT (0): DF clear. The echo is "peer=IP:PORT " + the 1250 bytes.
    let got = send(0);
    assert!(got.parse::<usize>().is_ok_and(|n| n > 1250), "fragmented into the network: {got}{}", w.log_tail(0));
    // IP_PMTUDISC_DO (2): DF set; dropped with an ICMP error the sender matches.
    let got = send(2);
    assert!(got.starts_with("no reply"), "{got}");
    let rt = String::from_utf8_lossy(&in_ns(&n.ext, &format!("ip route get {UPLINK_IP}")).stdout).into_owned();
    assert!(rt.contains("mtu 1200"), "the outside learnt the path MTU: {rt}");
    let st = w.ctl_json(0, &["stats"]);
    assert!(st["events"]["fragmented"].as_u64().unwrap_or(0) >= 2, "{}", st["events"]);
}

#[test]
fn conntrack_limit_refuses_new_flows_keeps_old() {
    let Some(n) = world("ct-limit", &["--conntrack-max", "4"], &["nc", "python3"]) else { return };
    let w = &n.w;
    w.ctl_ok(0, &["network", "create", "web", "--subnet", "10.50.0.0/24"]);
    let (c1, ip1) = sandbox(w, "web", "c1", &[]);
    who_am_i_servers(&n.ext, 8000);
    // Stray packets from the outside segment that the switch drops (to foreign
    // addresses routed at the uplink, to a sandbox's address directly) take no entry:
    // they used to fill the table and refuse every new flow.
    sh_ok(&format!("ip -n {} route add 203.0.113.0/24 via {UPLINK_IP} && ip -n {} route add 10.50.0.0/24 via {UPLINK_IP}", n.ext, n.ext));
    let stray = format!(
        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range(1, 41): s.sendto(b'x', ('203.0.113.%d' % i, 1000 + i))\nfor i in range(10): s.sendto(b'x', ('{ip1}', 2000 + i))"
    );
    let o = in_ns(&n.ext, &format!("python3 -c \"{stray}\""));
    assert!(o.status.success(), "{o:?}");
    assert!(
        wait_for(Duration::from_secs(3), || w.ctl_json(0, &["stats"])["drops"]["isolated"].as_u64().unwrap_or(0) >= 50),
        "strays dropped as isolated: {}",
        w.ctl_json(0, &["stats"])
    );
    assert_eq!(w.ctl_json(0, &["conntrack", "ls"]), serde_json::json!([]), "no entry for dropped packets");
    // A long-lived UDP flow is set up first and keeps working.
    let keep = in_ns(&c1, &format!("sh -c 'echo a | timeout 3 nc -u -p 41000 -w 1 {EXT_IP} 8000'"));
    assert!(String::from_utf8_lossy(&keep.stdout).contains("peer="));
    // Fill the table with more flows than allowed.
    for p in 41001..41010 {
        let _ = in_ns(&c1, &format!("sh -c 'echo a | timeout 2 nc -u -p {p} -w 1 {EXT_IP} 8000'"));
    }
    let st = w.ctl_json(0, &["stats"]);
    assert!(st["drops"]["conntrack_full"].as_u64().unwrap_or(0) > 0, "{st}");
    let again = in_ns(&c1, &format!("sh -c 'echo b | timeout 3 nc -u -p 41000 -w 1 {EXT_IP} 8000'"));
    assert!(String::from_utf8_lossy(&again.stdout).contains("peer="), "existing flow still works");
    assert!(w.ctl_json(0, &["conntrack", "ls"]).as_array().unwrap().len() <= 4);
}

#[test]
fn nat_and_published_ports_survive_restart() {
    let Some(mut n) = world("nat-restart", &[], &["nc", "python3", "ping"]) else { return };
    n.w.ctl_ok(0, &["network", "create", "web", "--subnet", "10.60.0.0/24"]);
    let (srv, _) = sandbox(&n.w, "web", "srv", &["-p", "8080:80", "-p", "8081:80"]);
    who_am_i_servers(&srv, 80);
    who_am_i_servers(&n.ext, 8000);
    assert!(tcp_ask(&n.ext, UPLINK_IP, 8080).starts_with("peer="));
    n.w.stop_daemon(0, libc::SIGKILL);
    // While it is down, something else takes 127.0.0.1:8081: the restarted daemon
    // still relays 8080 (one taken port used to cost the endpoint all its proxies).
    let mut squat = std::process::Command::new("nsenter")
        .args([&format!("--net=/run/netns/{}", n.host), "python3", "-c", "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', 8081)); s.listen(); time.sleep(60)"])
        .spawn()
        .expect("python3");
    assert!(wait_for(Duration::from_secs(5), || String::from_utf8_lossy(&in_ns(&n.host, "ss -Hltn").stdout).contains("127.0.0.1:8081")));
    n.w.restart_daemon(0);
    let w = &n.w;
    assert!(tcp_ask(&n.ext, UPLINK_IP, 8080).starts_with("peer="), "published port after restart{}", w.log_tail(0));
    assert!(tcp_ask(&srv, EXT_IP, 8000).starts_with(&format!("peer={UPLINK_IP}:")), "masquerade after restart");
    assert!(tcp_ask(&n.host, "127.0.0.1", 8080).starts_with("peer="), "proxy after restart{}", w.log_tail(0));
    assert!(w.log_tail(0).contains("userland proxy for this port not restored"), "the taken port is reported{}", w.log_tail(0));
    let _ = squat.kill();
    let _ = squat.wait();
}

/// Runs busybox udhcpc on `iface` in `ns` until it has a lease (or gives up after a few
/// seconds), with a script that configures the interface as a DHCP client's OS would
/// (address, MTU, default route) and records what it got. Returns the record
/// ("ip=… mask=… router=… dns=… mtu=… lease=… serverid=…"), empty when no lease.
fn dhcp_client(w: &World, ns: &str, iface: &str, extra: &str) -> String {
    let dir = w.name("dhcp");
    let script = format!("/tmp/{dir}-{ns}.sh");
    let record = format!("/tmp/{dir}-{ns}.lease");
    let _ = std::fs::remove_file(&record);
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    for r in $router; do ip route replace default via "$r" dev "$interface"; done
    echo "ip=$ip mask=$mask router=$router dns=$dns mtu=$mtu lease=$lease serverid=$serverid" > {record}
    ;;
esac
exit 0
"#
        ),
    )
    .unwrap();
    sh_ok(&format!("chmod +x {script}"));
    in_ns(ns, &format!("timeout 20 udhcpc -i {iface} -f -q -n -t 4 -T 1 -s {script} {extra}"));
    let r = std::fs::read_to_string(&record).unwrap_or_default().trim().to_string();
    let _ = std::fs::remove_file(&script);
    let _ = std::fs::remove_file(&record);
    r
}

/// VMs behind `port add --dhcp` ports (a veth and a TAP) get their reserved address,
/// the gateway as router, DNS and the MTU from the gateway, and reach sandboxes, each
/// other and the outside; the address is reserved in IPAM, kept across a restart, and
/// freed with the port.
#[test]
fn vms_get_their_address_by_dhcp() {
    let Some(Net { mut w, host, ext }) = world("dhcp", &[], &["ping", "udhcpc"]) else { return };
    w.ctl_ok(0, &["network", "create", "lan", "--subnet", "10.71.0.0/24", "--mtu", "1400"]);
    let (c1, c1_ip) = sandbox(&w, "lan", "c1", &[]);
    assert_eq!(c1_ip, "10.71.0.2");
    // A VM on someone else's veth, and a VM on a TAP the switch made.
    let vm1 = w.netns("vm1");
    sh_ok(&format!("ip -n {host} link add vm1p type veth peer name eth0 netns {vm1} && ip -n {vm1} link set eth0 up"));
    let out = w.ctl_ok(0, &["port", "add", "lan", "vm1p", "--dhcp", "--dns", "192.0.2.53", "--dns", "192.0.2.54"]);
    assert_eq!(out.trim(), "vm1p 10.71.0.3", "the next free address is reserved");
    let vm2 = w.netns("vm2");
    w.ctl_ok(0, &["port", "add", "lan", "vmtap2", "--type", "tap", "--dhcp", "--ip", "10.71.0.50"]);
    sh_ok(&format!("ip -n {host} link set vmtap2 netns {vm2} && ip -n {vm2} link set vmtap2 up"));

    let got = dhcp_client(&w, &vm1, "eth0", "");
    assert_eq!(got, "ip=10.71.0.3 mask=24 router=10.71.0.1 dns=192.0.2.53 192.0.2.54 mtu=1400 lease=3600 serverid=10.71.0.1", "{}", w.log_tail(0));
    let got2 = dhcp_client(&w, &vm2, "vmtap2", "");
    assert!(got2.starts_with("ip=10.71.0.50 mask=24 router=10.71.0.1 "), "{got2}");
    // Asking for another address (INIT-REBOOT style): still its own.
    assert!(dhcp_client(&w, &vm1, "eth0", "-r 10.71.0.77").starts_with("ip=10.71.0.3 "));
    // Configured that way, the VMs reach the gateway, a sandbox, each other and the
    // outside (through the default route the lease gave and masquerade).
    assert!(ping(&vm1, "10.71.0.1"));
    assert!(ping(&vm1, &c1_ip));
    assert!(ping(&c1, "10.71.0.3"));
    assert!(ping(&vm2, "10.71.0.3"));
    assert!(ping(&vm1, EXT_IP), "out through the uplink{}", w.log_tail(0));
    let mtu = in_ns(&vm1, "cat /sys/class/net/eth0/mtu");
    assert_eq!(String::from_utf8_lossy(&mtu.stdout).trim(), "1400");
    let st = w.ctl_json(0, &["stats"]);
    assert!(st["events"]["dhcp_offer"].as_u64().unwrap_or(0) >= 3 && st["events"]["dhcp_ack"].as_u64().unwrap_or(0) >= 3, "{}", st["events"]);
    // A DISCOVER from a port without --dhcp is switched like any broadcast: nobody
    // answers it here (no DHCP server on the network).
    let vm3 = w.netns("vm3");
    sh_ok(&format!("ip -n {host} link add vm3p type veth peer name eth0 netns {vm3} && ip -n {vm3} link set eth0 up"));
    w.ctl_ok(0, &["port", "add", "lan", "vm3p"]);
    assert_eq!(dhcp_client(&w, &vm3, "eth0", ""), "", "no lease for a port without --dhcp");

    // Listings, and the address reserved in IPAM.
    let row = w.ctl_ok(0, &["port", "ls"]).lines().find(|l| l.contains("vm1p")).unwrap_or_default().to_string();
    assert!(row.contains("10.71.0.3"), "{row}");
    let j = w.ctl_json(0, &["port", "ls"]);
    let vm1p = j.as_array().unwrap().iter().find(|p| p["interface"] == "vm1p").cloned().unwrap();
    assert_eq!(vm1p["dhcp"], serde_json::json!({"ip": "10.71.0.3", "dns": ["192.0.2.53", "192.0.2.54"]}));
    let ins = w.ctl_json(0, &["network", "inspect", "lan"]);
    assert!(ins.to_string().contains("10.71.0.50"), "inspect shows the TAP's address: {ins}");
    let c2 = w.name("c2");
    w.ctl_ok(0, &["sandbox", "create", &c2]);
    let e = w.ctl_err(0, &["connect", "lan", &c2, "--ip", "10.71.0.3"]);
    assert!(e.contains("--ip 10.71.0.3: already in use on network lan"), "{e}");
    let out = w.ctl_ok(0, &["connect", "lan", &c2]);
    assert!(out.contains(" 10.71.0.4/"), "the next automatic address skips the reserved ones: {out}");

    // Bad input: one line naming the field, nothing changes.
    let e = w.ctl_err(0, &["port", "add", "lan", "vm3x", "--ip", "10.71.0.9"]);
    assert!(e.contains("--ip: only with --dhcp"), "{e}");
    let e = w.ctl_err(0, &["port", "add", "lan", "vm3x", "--type", "tap", "--dhcp", "--ip", "10.71.0.2"]);
    assert!(e.contains("--ip 10.71.0.2: already in use on network lan"), "{e}");
    let e = w.ctl_err(0, &["port", "add", "lan", "vm3x", "--type", "tap", "--dhcp", "--dns", "resolver"]);
    assert!(e.contains("--dns \"resolver\": not an IPv4 address"), "{e}");
    let e = w.ctl_err(0, &["port", "add", "lan", "vm3x", "--type", "tap", "--dhcp", "--dns", "127.0.0.1"]);
    assert!(e.contains("--dns 127.0.0.1: not the address of a server"), "{e}");
    assert!(!w.ctl_ok(0, &["port", "ls"]).contains("vm3x"));
    // On an --internal network: no router, and no DNS servers unless given (the
    // host's are out of reach from there).
    w.ctl_ok(0, &["network", "create", "iso", "--subnet", "10.72.0.0/24", "--internal"]);
    let vm4 = w.netns("vm4");
    sh_ok(&format!("ip -n {host} link add vm4p type veth peer name eth0 netns {vm4} && ip -n {vm4} link set eth0 up"));
    w.ctl_ok(0, &["port", "add", "iso", "vm4p", "--dhcp"]);
    let got = dhcp_client(&w, &vm4, "eth0", "");
    assert!(got.starts_with("ip=10.72.0.2 mask=24 router= dns= mtu=1500 "), "{got}");

    // The binding survives a restart (the state file keeps it), also for the TAP moved
    // into vm2 by hand: the daemon noticed the move and reopens it there (it used to make
    // a new TAP of that name in its own namespace and leave vm2's cut off).
    let tap_ns = |w: &World| w.ctl_json(0, &["port", "ls"]).as_array().unwrap().iter().find(|p| p["interface"] == "vmtap2").map(|p| p["netns"].clone());
    assert!(wait_for(Duration::from_secs(5), || tap_ns(&w) == Some(serde_json::json!(vm2))), "move noticed: {:?}", tap_ns(&w));
    let table = w.ctl_ok(0, &["port", "ls"]);
    assert!(table.lines().any(|l| l.contains("vmtap2") && l.trim_end().ends_with(vm2.as_str())), "NETNS column: {table}");
    w.stop_daemon(0, libc::SIGTERM);
    w.restart_daemon(0);
    assert!(wait_for(Duration::from_secs(10), || dhcp_client(&w, &vm1, "eth0", "").starts_with("ip=10.71.0.3 ")), "lease after restart{}", w.log_tail(0));
    assert!(dhcp_client(&w, &vm2, "vmtap2", "").starts_with("ip=10.71.0.50 "), "the moved TAP after restart{}", w.log_tail(0));
    assert!(sh(&format!("ip -n {host} link show vmtap2")).status.code() != Some(0), "no second TAP made in the daemon's namespace");
    assert!(ping(&vm2, "10.71.0.3"));
    // Removing the port frees its address.
    w.ctl_ok(0, &["port", "rm", "lan", "vm1p"]);
    w.ctl_ok(0, &["disconnect", "lan", &c2]);
    let out = w.ctl_ok(0, &["connect", "lan", &c2, "--ip", "10.71.0.3"]);
    assert!(out.contains(" 10.71.0.3/"), "{out}");
    let _ = ext;
}

//! The single-host switch end to end: vswitchd in a host namespace, sandboxes on
//! networks, real traffic.

use std::time::Duration;

use vswitchd_e2e::*;

/// Host namespace + daemon with `workers` workers.
fn world(test: &str, workers: &str, tools: &[&str]) -> Option<World> {
    let mut w = World::new(test, tools)?;
    let host = w.netns("host");
    w.start_daemon(&host, &["--workers", workers]);
    Some(w)
}

fn connect(w: &World, net: &str, sb: &str, extra: &[&str]) -> String {
    let mut a = vec!["connect", net, sb];
    a.extend_from_slice(extra);
    let out = w.ctl_ok(0, &a);
    // "SANDBOX IFACE IP/PREFIX MAC KIND"
    out.split_whitespace().nth(2).and_then(|c| c.split('/').next()).expect("address in connect output").to_string()
}

#[test]
fn two_sandboxes_ping_each_other_and_gateway_and_run_iperf3() {
    let Some(w) = world("basic", "2", &["ping", "iperf3"]) else { return };
    let (c1, c2) = (w.name("c1"), w.name("c2"));
    w.ctl_ok(0, &["network", "create", "web", "--subnet", "10.10.0.0/24"]);
    w.ctl_ok(0, &["sandbox", "create", &c1]);
    w.ctl_ok(0, &["sandbox", "create", &c2]);
    let ip1 = connect(&w, "web", &c1, &[]);
    let ip2 = connect(&w, "web", &c2, &[]);
    assert_eq!((ip1.as_str(), ip2.as_str()), ("10.10.0.2", "10.10.0.3"));
    // What the sandbox sees: eth0 with the address, the MAC derived from it, MTU, default route, lo up.
    let addr = String::from_utf8_lossy(&in_ns(&c1, "ip -o addr show dev eth0").stdout).into_owned();
    assert!(addr.contains("10.10.0.2/24"), "{addr}");
    let link = String::from_utf8_lossy(&in_ns(&c1, "ip -o link show dev eth0").stdout).into_owned();
    assert!(link.contains("02:42:0a:0a:00:02") && link.contains("mtu 1500"), "{link}");
    let route = String::from_utf8_lossy(&in_ns(&c1, "ip route show default").stdout).into_owned();
    assert!(route.contains("via 10.10.0.1 dev eth0"), "{route}");
    assert!(String::from_utf8_lossy(&in_ns(&c1, "ip -o link show dev lo").stdout).contains("UP"));

    assert!(ping(&c1, "10.10.0.1"), "gateway answers");
    assert!(ping(&c1, &ip2));
    assert!(ping(&c2, &ip1));
    let gbps = iperf3(&c1, &c2, &ip2, 3, "", &w.dir);
    assert!(gbps > 0.05, "TCP moves data: {gbps} Gbit/s");
    // TCP and UDP with the sandboxes' default offloads (partial checksums, TSO) must
    // arrive intact: a UDP burst is answered too.
    let udp = in_ns(&c1, &format!("sh -c 'timeout 15 iperf3 -c {ip2} -u -b 50M -t 1 -J || true'"));
    let _ = udp; // server is gone after the TCP run; the TCP run already proved checksums.

    // Dumps: the MAC table has both sandboxes, stats count traffic, JSON parses.
    let fdb = w.ctl_json(0, &["fdb", "show", "web"]);
    let macs: Vec<&str> = fdb.as_array().unwrap().iter().filter_map(|e| e["mac"].as_str()).collect();
    assert!(macs.contains(&"02:42:0a:0a:00:02") && macs.contains(&"02:42:0a:0a:00:03"), "{fdb}");
    let stats = w.ctl_json(0, &["stats"]);
    let rx: u64 = stats["ports"].as_array().unwrap().iter().map(|p| p["rx_packets"].as_u64().unwrap()).sum();
    assert!(rx > 1000, "{stats}");
    assert!(w.ctl_ok(0, &["stats", "--port", &format!("{c1}/eth0")]).contains(&format!("{c1}/eth0")));
    let table = w.ctl_ok(0, &["network", "ls"]);
    assert!(table.contains("web") && table.contains("10.10.0.0/24"), "{table}");
    let insp = w.ctl_json(0, &["network", "inspect", "web"]);
    assert_eq!(insp[0]["endpoints"].as_array().unwrap().len(), 2, "{insp}");
    assert_eq!(insp[0]["subnet"], "10.10.0.0/24");
}

#[test]
fn networks_are_isolated() {
    let Some(w) = world("isolation", "1", &["ping"]) else { return };
    let (a1, a2, b1) = (w.name("a1"), w.name("a2"), w.name("b1"));
    w.ctl_ok(0, &["network", "create", "alpha", "--subnet", "10.20.0.0/24"]);
    // Same subnet layout would be refused; use another one and force an address that
    // would be reachable if frames leaked at L2.
    w.ctl_ok(0, &["network", "create", "beta", "--subnet", "10.21.0.0/24"]);
    for s in [&a1, &a2, &b1] {
        w.ctl_ok(0, &["sandbox", "create", s]);
    }
    connect(&w, "alpha", &a1, &[]);
    connect(&w, "alpha", &a2, &[]);
    connect(&w, "beta", &b1, &[]);
    assert!(ping(&a1, "10.20.0.3"));
    // Give b1 an address in alpha's subnet by hand: if frames leaked between the
    // networks, it would answer.
    in_ns(&b1, "ip addr add 10.20.0.99/24 dev eth0");
    assert!(no_ping(&a1, "10.20.0.99"), "alpha reaches beta");
    assert!(no_ping(&b1, "10.20.0.2"), "beta reaches alpha");
    assert!(no_ping(&b1, "10.20.0.1"), "beta reaches alpha's gateway");
    // Broadcasts do not cross either: b1 never learned a1's MAC.
    let neigh = String::from_utf8_lossy(&in_ns(&b1, "ip neigh show 10.20.0.2").stdout).into_owned();
    assert!(!neigh.contains("02:42:0a:14:00:02"), "{neigh}");
    let fdb = w.ctl_json(0, &["fdb", "show", "beta"]);
    assert!(fdb.as_array().unwrap().iter().all(|e| e["port"].as_str().unwrap().starts_with(&b1)), "{fdb}");
}

#[test]
fn tap_and_veth_endpoints_interoperate() {
    let Some(w) = world("tap-veth", "2", &["ping", "iperf3"]) else { return };
    let (v, t) = (w.name("veth"), w.name("tap"));
    w.ctl_ok(0, &["network", "create", "mix", "--subnet", "10.30.0.0/24", "--mtu", "9000"]);
    w.ctl_ok(0, &["sandbox", "create", &v]);
    w.ctl_ok(0, &["sandbox", "create", &t]);
    let ipv = connect(&w, "mix", &v, &["--port-kind", "veth"]);
    let ipt = connect(&w, "mix", &t, &["--port-kind", "tap", "--ip", "10.30.0.50", "--mac", "02:00:00:aa:bb:cc"]);
    assert_eq!(ipt, "10.30.0.50");
    let link = String::from_utf8_lossy(&in_ns(&t, "ip -o -d link show dev eth0").stdout).into_owned();
    assert!(link.contains("tun") && link.contains("02:00:00:aa:bb:cc") && link.contains("mtu 9000"), "{link}");
    assert!(ping(&v, &ipt));
    assert!(ping(&t, &ipv));
    assert!(ping(&t, "10.30.0.1"));
    // Jumbo frames cross (MTU 9000 on both ends).
    assert!(in_ns(&v, &format!("ping -c 2 -i 0.3 -W 2 -M do -s 8000 {ipt}")).status.success(), "jumbo ping");
    let g1 = iperf3(&v, &t, &ipt, 2, "", &w.dir);
    let g2 = iperf3(&t, &v, &ipv, 2, "", &w.dir);
    assert!(g1 > 0.05 && g2 > 0.05, "veth->tap {g1}, tap->veth {g2} Gbit/s");
    // Both interfaces deleted behind the switch's back (`ip link del eth0` inside the
    // sandboxes): each is made again, with its address, MAC and MTU, as a restart would.
    sh_ok(&format!("ip -n {v} link del eth0 && ip -n {t} link del eth0"));
    assert!(wait_for(Duration::from_secs(10), || ping(&t, &ipv)), "endpoints made again{}", w.log_tail(0));
    let link = String::from_utf8_lossy(&in_ns(&t, "ip -o -d link show dev eth0").stdout).into_owned();
    assert!(link.contains("tun") && link.contains("02:00:00:aa:bb:cc") && link.contains("mtu 9000"), "{link}");
    assert!(ping(&v, "10.30.0.1"), "the veth sandbox's routes are back");
    let eps = w.ctl_json(0, &["network", "inspect", "mix"])[0]["endpoints"].clone();
    assert!(eps.as_array().is_some_and(|a| a.len() == 2 && a.iter().all(|e| e["attached"] == true)), "{eps}");
    let log = std::fs::read_to_string(&w.daemon(0).log).unwrap_or_default();
    assert_eq!(log.matches("endpoint's interface was deleted behind the switch; made again").count(), 2, "each made again once{}", w.log_tail(0));
    // The namespaces themselves deleted (`ip netns del`): made again, with their
    // endpoints and the embedded DNS.
    sh_ok(&format!("ip netns del {v} && ip netns del {t}"));
    assert!(wait_for(Duration::from_secs(10), || ping(&t, &ipv)), "sandboxes made again{}", w.log_tail(0));
    let dns = || String::from_utf8_lossy(&in_ns(&v, &format!("getent hosts {t}")).stdout).into_owned();
    assert!(wait_for(Duration::from_secs(5), || dns().contains(&ipt)), "DNS in the new namespace: {:?}{}", dns(), w.log_tail(0));
    // A network with an MTU below IPv6's minimum (VPN-style 1000) takes veth endpoints
    // too (the kernel turns IPv6 off on such a link; connect used to fail on it).
    w.ctl_ok(0, &["network", "create", "small", "--subnet", "10.31.0.0/24", "--mtu", "1000"]);
    let (v2, t2) = (connect(&w, "small", &v, &[]), connect(&w, "small", &t, &["--port-kind", "tap"]));
    assert!(in_ns(&v, &format!("ping -c 1 -W 2 -M do -s 900 {t2}")).status.success(), "900-byte ping over MTU 1000");
    assert!(in_ns(&t, &format!("ping -c 1 -W 2 -M do -s 900 {v2}")).status.success());
}

#[test]
fn disconnect_and_reconnect() {
    let Some(w) = world("reconnect", "1", &["ping"]) else { return };
    let (c1, c2) = (w.name("c1"), w.name("c2"));
    w.ctl_ok(0, &["network", "create", "n1", "--subnet", "10.40.0.0/24"]);
    w.ctl_ok(0, &["network", "create", "n2", "--subnet", "10.41.0.0/24"]);
    w.ctl_ok(0, &["sandbox", "create", &c1]);
    w.ctl_ok(0, &["sandbox", "create", &c2]);
    connect(&w, "n1", &c1, &[]);
    connect(&w, "n1", &c2, &[]);
    connect(&w, "n2", &c1, &[]);
    assert!(String::from_utf8_lossy(&in_ns(&c1, "ip -o link show dev eth1").stdout).contains("eth1"), "second network is eth1");
    assert!(ping(&c1, "10.40.0.3"));
    assert!(ping(&c1, "10.41.0.1"));
    w.ctl_ok(0, &["disconnect", "n1", &c2]);
    assert!(!in_ns(&c2, "ip link show dev eth0").status.success(), "interface removed");
    assert!(no_ping(&c1, "10.40.0.3"));
    let fdb = w.ctl_json(0, &["fdb", "show", "n1"]);
    assert!(fdb.as_array().unwrap().iter().all(|e| e["mac"] != "02:42:0a:28:00:03"), "MAC entries freed: {fdb}");
    // Disconnecting c1 from n1 moves its default route to n2.
    w.ctl_ok(0, &["disconnect", "n1", &c1]);
    let route = String::from_utf8_lossy(&in_ns(&c1, "ip route show default").stdout).into_owned();
    assert!(route.contains("via 10.41.0.1"), "{route}");
    // The freed address is handed out again; traffic flows again.
    let ip = connect(&w, "n1", &c2, &[]);
    assert_eq!(ip, "10.40.0.2");
    connect(&w, "n1", &c1, &[]);
    assert!(ping(&c2, "10.40.0.3"));
    assert!(ping(&c1, "10.40.0.2"));
}

#[test]
fn graceful_restart_and_kill9_keep_everything() {
    let Some(mut w) = world("restart", "2", &["ping"]) else { return };
    let (c1, c2, c3) = (w.name("c1"), w.name("c2"), w.name("c3"));
    w.ctl_ok(0, &["network", "create", "web", "--subnet", "10.50.0.0/24"]);
    for s in [&c1, &c2, &c3] {
        w.ctl_ok(0, &["sandbox", "create", s]);
    }
    connect(&w, "web", &c1, &[]);
    connect(&w, "web", &c2, &["--port-kind", "tap"]);
    assert!(ping(&c1, "10.50.0.3"));
    let before = w.ctl_json(0, &["network", "inspect", "web"]);

    // Graceful stop: exit status 0, socket removed; the sandboxes keep their addresses.
    let st = w.stop_daemon(0, libc::SIGTERM).expect("was running");
    assert!(st.success(), "clean exit on SIGTERM: {st:?}{}", w.log_tail(0));
    let log = std::fs::read_to_string(&w.daemon(0).log).unwrap_or_default();
    assert!(log.contains("stopped") && !log.contains("ERROR"), "a clean stop joins the workers and logs no error: {log}");
    assert!(!w.daemon(0).socket.exists(), "socket removed");
    let e = w.ctl(0, &["network", "ls"]);
    assert_eq!(e.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&e.stderr).contains("is vswitchd running?"));
    assert!(String::from_utf8_lossy(&in_ns(&c2, "ip -o addr show dev eth0").stdout).contains("10.50.0.3/24"), "TAP persists");
    w.restart_daemon(0);
    assert_eq!(w.ctl_json(0, &["network", "inspect", "web"]), before, "same state after restart");
    assert!(ping(&c1, "10.50.0.3"), "traffic flows again after restart{}", w.log_tail(0));
    assert!(ping(&c2, "10.50.0.1"));

    // kill -9, then a change made while it is down: c3's namespace was deleted by someone.
    w.stop_daemon(0, libc::SIGKILL);
    sh_ok(&format!("ip netns del {c3}"));
    w.restart_daemon(0);
    assert!(ping(&c1, "10.50.0.3"), "after kill -9{}", w.log_tail(0));
    assert!(ping(&c2, "10.50.0.2"));
    // The missing sandbox namespace is recreated; connecting it works.
    assert!(std::path::Path::new(&format!("/run/netns/{c3}")).exists(), "sandbox namespace recreated");
    connect(&w, "web", &c3, &[]);
    assert!(ping(&c3, "10.50.0.2"));
    // Deleted while the daemon runs: a disconnect and a new connect recreate it.
    sh_ok(&format!("ip netns del {c3}"));
    w.ctl_ok(0, &["disconnect", "web", &c3]);
    connect(&w, "web", &c3, &["--port-kind", "tap"]);
    assert!(ping(&c3, "10.50.0.2"), "sandbox namespace recreated on connect{}", w.log_tail(0));
    // ... and its other endpoints come back with it when it is connected elsewhere.
    w.ctl_ok(0, &["network", "create", "web2", "--subnet", "10.51.0.0/24"]);
    sh_ok(&format!("ip netns del {c3}"));
    connect(&w, "web2", &c3, &[]);
    assert!(ping(&c3, "10.50.0.2"), "the first endpoint restored with the namespace{}", w.log_tail(0));
    w.ctl_ok(0, &["disconnect", "web2", &c3]);

    // A veth endpoint whose switch side was deleted while the daemon was down is recreated.
    let host_if = w.ctl_json(0, &["network", "inspect", "web"])[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["sandbox"] == c1.as_str())
        .unwrap()["host_interface"]
        .as_str()
        .unwrap()
        .to_string();
    w.stop_daemon(0, libc::SIGKILL);
    sh_ok(&format!("ip -n {} link del {host_if}", w.daemon(0).host));
    w.restart_daemon(0);
    assert!(ping(&c1, "10.50.0.3"), "veth recreated{}", w.log_tail(0));
    assert!(String::from_utf8_lossy(&in_ns(&c1, "ip route show default").stdout).contains("via 10.50.0.1"));
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let Some(w) = world("bad-input", "1", &[]) else { return };
    let c1 = w.name("c1");
    w.ctl_ok(0, &["network", "create", "web", "--subnet", "10.60.0.0/24"]);
    w.ctl_ok(0, &["sandbox", "create", &c1]);
    let before_state = std::fs::read_to_string(w.daemon(0).state_dir.join("state.json")).unwrap();
    let c1_upper = c1.to_uppercase();
    let c1_case = format!("differs from sandbox {c1} only in case");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // Names are DNS names: one differing only in case would resolve to both.
        (vec!["network", "create", "WEB", "--subnet", "10.62.0.0/24"], "network name \"WEB\": differs from network web only in case"),
        (vec!["sandbox", "create", &c1_upper], &c1_case),
        (vec!["network", "create", "x", "--subnet", "10.0.0.0/33"], "subnet"),
        (vec!["network", "create", "x", "--subnet", "10.0.0/8"], "subnet"),
        (vec!["network", "create", "x", "--subnet", "10.60.0.0/16"], "overlaps"),
        (vec!["network", "create", "x", "--subnet", "10.61.0.5/24"], "host bits"),
        (vec!["network", "create", "web", "--subnet", "10.62.0.0/24"], "already exists"),
        (vec!["network", "create", "x", "--subnet", "10.63.0.0/24", "--gateway", "10.64.0.1"], "gateway"),
        (vec!["network", "create", "x", "--subnet", "10.63.0.0/24", "--gateway", "banana"], "gateway"),
        (vec!["network", "create", "x", "--subnet", "10.63.0.0/24", "--ip-range", "10.64.0.0/25"], "ip-range"),
        (vec!["network", "create", "x", "--subnet", "10.63.0.0/24", "--ip-range", "10.63.0.1/32"], "ip-range 10.63.0.1/32: holds no address for endpoints"),
        (vec!["network", "create", "x", "--subnet", "10.63.0.0/24", "--ip-range", "10.63.0.0/31"], "holds no address for endpoints"),
        (vec!["network", "create", "x", "--subnet", "10.63.0.0/24", "--mtu", "20"], "mtu"),
        (vec!["network", "create", "x", "--ip-range", "10.46.0.0/28"], "ip-range 10.46.0.0/28: give the subnet it lies in too (--subnet)"),
        (vec!["network", "create", "x", "--gateway", "10.46.0.1"], "gateway 10.46.0.1: give its subnet too (--subnet)"),
        (vec!["connect", "web", &c1, "--alias", "10.60.0.3"], "alias name \"10.60.0.3\": an address is not a name"),
        (vec!["connect", "web", &c1, "--alias", "db", "--alias", "DB"], "alias name \"DB\": given twice"),
        (vec!["network", "create", "x", "--ipv6", "--subnet", "10.63.0.0/24", "--subnet", "fd00:63::/64", "--mtu", "1000"], "mtu 1000: IPv6 (--ipv6) needs an MTU of at least 1280"),
        (vec!["sandbox", "create", "dnsbad", "--dns", "224.0.0.251"], "--dns 224.0.0.251: not the address of a name server"),
        (vec!["sandbox", "create", "dnsbad", "--dns", "127.0.0.11"], "--dns 127.0.0.11: that is the embedded DNS itself"),
        (vec!["network", "create", "bad/name"], "network name"),
        (vec!["sandbox", "create", &c1], "already exists"),
        (vec!["connect", "nonet", &c1], "network nonet not found"),
        (vec!["connect", "web", "nosb"], "sandbox nosb not found"),
        (vec!["connect", "web", &c1, "--ip", "10.99.0.5"], "not in the subnet"),
        (vec!["connect", "web", &c1, "--ip", "10.60.0.1"], "gateway"),
        (vec!["connect", "web", &c1, "--ip", "300.1.1.1"], "--ip"),
        (vec!["connect", "web", &c1, "--mac", "zz:00:00:00:00:01"], "--mac"),
        (vec!["connect", "web", &c1, "--mac", "01:00:00:00:00:01"], "unicast"),
        (vec!["connect", "web", &c1, "--port-kind", "wifi"], "port-kind"),
        (vec!["disconnect", "web", &c1], "not connected"),
        (vec!["network", "rm", "nonet"], "not found"),
        (vec!["port", "add", "web", "nosuchif0"], "not found"),
        (vec!["fdb", "show", "nonet"], "not found"),
        (vec!["stats", "--port", "nope"], "not found"),
    ];
    for (args, want) in &cases {
        let err = w.ctl_err(0, args);
        assert!(err.contains(want), "{args:?}: error {err:?} should mention {want:?}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one-line error, got {err:?}");
    }
    assert_eq!(std::fs::read_to_string(w.daemon(0).state_dir.join("state.json")).unwrap(), before_state, "state unchanged");
    // Connecting twice, and an address in use.
    w.ctl_ok(0, &["connect", "web", &c1, "--ip", "10.60.0.7"]);
    assert!(w.ctl_err(0, &["connect", "web", &c1]).contains("already connected"));
    let c2 = w.name("c2");
    w.ctl_ok(0, &["sandbox", "create", &c2]);
    assert!(w.ctl_err(0, &["connect", "web", &c2, "--ip", "10.60.0.7"]).contains("in use"));
    assert!(w.ctl_err(0, &["connect", "web", &c2, "--mac", "02:42:0a:3c:00:07"]).contains("in use"));
    // A --mac equal to what the next free address derives to does not block automatic
    // connects: the next endpoint gets another (random, locally administered) MAC.
    let c3 = w.name("c3");
    w.ctl_ok(0, &["sandbox", "create", &c3]);
    w.ctl_ok(0, &["connect", "web", &c2, "--ip", "10.60.0.9", "--mac", "02:42:0a:3c:00:02"]);
    let out = w.ctl_ok(0, &["connect", "web", &c3]);
    assert!(out.contains("10.60.0.2/") && out.contains(" 02:43:"), "{out}");
    w.ctl_ok(0, &["disconnect", "web", &c2]);
    w.ctl_ok(0, &["disconnect", "web", &c3]);
    // An interface the user made in the sandbox under the name the endpoint would get:
    // refused, and it is left alone (a failed TAP connect used to delete it and leave
    // the switch's TAP stranded in the sandbox).
    sh_ok(&format!("ip -n {c3} link add eth0 type veth peer name upeer0"));
    for kind in ["tap", "veth"] {
        let e = w.ctl_err(0, &["connect", "web", &c3, "--port-kind", kind]);
        assert!(e.contains("already has an interface eth0"), "{kind}: {e}");
        let links = sh_ok(&format!("ip -n {c3} -o link show"));
        assert!(links.contains("eth0@upeer0") && links.contains("upeer0@eth0") && !links.contains("vs"), "{kind}: {links}");
    }
    sh_ok(&format!("ip -n {c3} link del eth0"));
    assert!(w.ctl_err(0, &["network", "rm", "web"]).contains("active endpoints"));
    // A garbage request on the socket gets an error, and the daemon lives on.
    let o = sh(&format!(
        "python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('{}'); s.sendall(b'not json\\n'); print(s.recv(4096).decode())\"",
        w.daemon(0).socket.display()
    ));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"ok\":false"), "{o:?}");
    // Not UTF-8: an error answer too, and the connection serves the next request.
    let o = sh(&format!(
        "python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('{}'); s.sendall(b'{{\\\"cmd\\\":\\\"\\xff\\\"}}\\n{{\\\"cmd\\\":\\\"ping\\\"}}\\n'); f=s.makefile(); print(f.readline().strip()); print(f.readline().strip())\"",
        w.daemon(0).socket.display()
    ));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() == 2 && lines[0].contains("\"ok\":false") && lines[0].contains("bad request") && lines[1].contains("\"ok\":true"), "{o:?}");
    w.ctl_ok(0, &["network", "ls"]);
    // A removed network frees its subnet; prune removes unused ones only.
    w.ctl_ok(0, &["network", "create", "idle", "--subnet", "10.65.0.0/24"]);
    let pruned = w.ctl_json(0, &["network", "prune"]);
    assert_eq!(pruned["removed"], serde_json::json!(["idle"]));
    // Without --subnet a free default subnet is chosen.
    w.ctl_ok(0, &["network", "create", "auto"]);
    let auto = w.ctl_json(0, &["network", "inspect", "auto"]);
    assert_eq!(auto[0]["subnet"], "172.17.0.0/16");
    assert_eq!(auto[0]["gateway"], "172.17.0.1");
}

#[test]
fn contradictory_daemon_options_are_refused() {
    let bin = bin_dir().join("vswitchd");
    if !bin.exists() {
        assert!(!required(), "vswitchd not built");
        return;
    }
    let dir = std::env::temp_dir().join(format!("vswitchd-opts-{}", std::process::id()));
    let (state, sock) = (dir.join("state").display().to_string(), dir.join("sock").display().to_string());
    let ad = ["--advertise", "198.19.0.4"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        ([&ad[..], &["--peer", "0.0.0.0"]].concat(), "--peer 0.0.0.0: 0.0.0.0 is not the unicast address of another host"),
        ([&ad[..], &["--peer", "224.0.0.1"]].concat(), "--peer 224.0.0.1: 224.0.0.1 is not the unicast address"),
        ([&ad[..], &["--peer", "198.19.0.4"]].concat(), "--peer 198.19.0.4: is this host's own --advertise address"),
        (vec!["--vxlan-port", "0"], "--vxlan-port 0:"),
        (vec!["--mesh", "--mesh-port", "0"], "--mesh-port 0:"),
        ([&ad[..], &["--mesh", "--mesh-port", "4789"]].concat(), "--mesh-port 4789: is also the --vxlan-port"),
        (vec!["--mesh-no-inbound"], "--mesh-no-inbound: this vswitchd is not in a mesh"),
        (vec!["--mesh-keepalive", "5"], "--mesh-keepalive: this vswitchd is not in a mesh"),
        (vec!["--mesh-peer", "240.0.0.1"], "is not the unicast address of another host"),
        ([&ad[..], &["--mesh-peer", "198.19.0.4"]].concat(), "--mesh-peer 198.19.0.4: is this host's own --advertise address"),
        (vec!["--mesh-peer", "198.19.0.1:0"], "--mesh-peer \"198.19.0.1:0\": port 0"),
        (vec!["--mesh-peer", "255.255.255.255"], "is not the unicast address of another host"),
    ];
    for (args, want) in cases {
        // A namespace that does not exist: should a case pass the option checks, the
        // daemon stops at --netns instead of running here, and the assertion fails.
        let o = std::process::Command::new(&bin)
            .args(["--netns", "vswitchd-test-no-such-ns", "--state-dir", &state, "--socket", &sock])
            .args(&args)
            .output()
            .expect("run vswitchd");
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(want) && e.trim().lines().count() == 1, "{args:?}: {e:?} should say {want:?} in one line");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctl_without_daemon_says_so() {
    let o = std::process::Command::new(bin_dir().join("vswitchctl"))
        .args(["--socket", "/nonexistent/vswitchd.sock", "network", "ls"])
        .output();
    let Ok(o) = o else {
        if required() {
            panic!("vswitchctl not built");
        }
        return;
    };
    assert_eq!(o.status.code(), Some(3));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cannot connect to vswitchd at /nonexistent/vswitchd.sock") && e.contains("running"), "{e}");
}

#[test]
fn port_add_attaches_an_existing_interface() {
    let Some(w) = world("port-add", "2", &["ping"]) else { return };
    let host = w.daemon(0).host.clone();
    let vm = w.netns("vm");
    let c1 = w.name("c1");
    w.ctl_ok(0, &["network", "create", "lan", "--subnet", "10.70.0.0/24"]);
    w.ctl_ok(0, &["sandbox", "create", &c1]);
    connect(&w, "lan", &c1, &[]);
    // Someone else's veth: one end in the host namespace, the other in "vm".
    sh_ok(&format!("ip -n {host} link add ext0 type veth peer name eth0 netns {vm}"));
    sh_ok(&format!("ip -n {vm} addr add 10.70.0.200/24 dev eth0 && ip -n {vm} link set eth0 up"));
    w.ctl_ok(0, &["port", "add", "lan", "ext0"]);
    let ls = w.ctl_ok(0, &["port", "ls"]);
    assert!(ls.contains("ext0") && ls.contains("system") && ls.contains("up"), "{ls}");
    assert!(ping(&vm, "10.70.0.2"));
    assert!(ping(&vm, "10.70.0.1"));
    // What the host's own stack sends on ext0 once it is up (IPv6 DAD, MLD, router
    // solicitations from ext0's MAC) is not switched into the network: the MAC is never
    // learnt (it was, by the workers' fanout group, before FANOUT_FLAG_IGNORE_OUTGOING).
    let own = sh_ok(&format!("ip -n {host} -br link show ext0")).split_whitespace().nth(2).unwrap_or_default().to_string();
    std::thread::sleep(Duration::from_secs(3));
    let fdb = w.ctl_json(0, &["fdb", "show", "lan"]).to_string();
    assert!(!own.is_empty() && !fdb.contains(&own), "ext0's own MAC {own} learnt: {fdb}");
    assert!(w.ctl_err(0, &["port", "add", "lan", "ext0"]).contains("already a port"));
    // A VM's TAP whose VM is not running (nobody holds the TAP open): attached, no carrier.
    sh_ok(&format!("ip -n {host} tuntap add dev vmq0 mode tap && ip -n {host} link set vmq0 up"));
    w.ctl_ok(0, &["port", "add", "lan", "vmq0"]);
    let row = w.ctl_ok(0, &["port", "ls"]).lines().find(|l| l.contains("vmq0")).unwrap_or_default().to_string();
    assert!(row.contains("no-carrier"), "{row}");
    let j = w.ctl_json(0, &["port", "ls"]);
    let carrier = |name: &str| j.as_array().unwrap().iter().find(|p| p["interface"] == name).map(|p| p["carrier"].clone());
    assert_eq!((carrier("vmq0"), carrier("ext0")), (Some(serde_json::json!(false)), Some(serde_json::json!(true))));
    w.ctl_ok(0, &["port", "rm", "lan", "vmq0"]);
    sh_ok(&format!("ip -n {host} link del vmq0"));
    // Interfaces that must not become bridge ports are refused, and nothing changes: the
    // loopback (every frame flooded to it comes back in, so every MAC would move to it),
    // a member of a kernel bridge.
    let e = w.ctl_err(0, &["port", "add", "lan", "lo"]);
    assert!(e.contains("interface lo is not an Ethernet interface"), "{e}");
    sh_ok(&format!("ip -n {host} link add kbr0 type bridge && ip -n {host} link add kdum0 type veth peer name kdum1 && ip -n {host} link set kdum0 master kbr0"));
    let e = w.ctl_err(0, &["port", "add", "lan", "kdum0"]);
    assert!(e.contains("interface kdum0 is already enslaved to kbr0"), "{e}");
    let e = w.ctl_err(0, &["port", "add", "lan", "kbr0"]);
    assert!(e.contains("interface kbr0 is a switch itself"), "{e}");
    let ls = w.ctl_ok(0, &["port", "ls"]);
    assert!(!ls.contains("lo ") && !ls.contains("kdum0"), "{ls}");
    assert!(ping(&vm, "10.70.0.2"), "forwarding unaffected by the refused ports");
    // The interface goes away (a VM stops) and comes back under the same name: the port
    // shows down meanwhile and is attached again by itself.
    sh_ok(&format!("ip -n {host} link del ext0"));
    let state = |w: &World| w.ctl_json(0, &["port", "ls"]).as_array().unwrap().iter().find(|p| p["interface"] == "ext0").map(|p| p["attached"].clone());
    assert!(wait_for(Duration::from_secs(5), || state(&w) == Some(serde_json::json!(false))), "port shown down: {:?}", state(&w));
    sh_ok(&format!("ip -n {host} link add ext0 type veth peer name eth0 netns {vm}"));
    sh_ok(&format!("ip -n {vm} addr add 10.70.0.200/24 dev eth0 && ip -n {vm} link set eth0 up"));
    assert!(wait_for(Duration::from_secs(8), || ping(&vm, "10.70.0.2")), "port attached again{}", w.log_tail(0));
    assert_eq!(state(&w), Some(serde_json::json!(true)));
    // What comes back under the name must pass `port add`'s checks: a kernel bridge
    // named ext0 is left detached (and said so in the log) until a fit interface returns.
    sh_ok(&format!("ip -n {host} link del ext0 && ip -n {host} link add ext0 type bridge && ip -n {host} link set ext0 up"));
    assert!(
        wait_for(Duration::from_secs(8), || w.log_tail(0).contains("port's interface came back unfit; not attached")),
        "unfit interface noticed{}",
        w.log_tail(0)
    );
    assert_eq!(state(&w), Some(serde_json::json!(false)), "a bridge is not attached as a port");
    sh_ok(&format!("ip -n {host} link del ext0 && ip -n {host} link add ext0 type veth peer name eth0 netns {vm}"));
    sh_ok(&format!("ip -n {vm} addr add 10.70.0.200/24 dev eth0 && ip -n {vm} link set eth0 up"));
    assert!(wait_for(Duration::from_secs(8), || ping(&vm, "10.70.0.2")), "port attached again after the unfit one{}", w.log_tail(0));
    assert_eq!(state(&w), Some(serde_json::json!(true)));
    // `--type tap` on a name that exists (someone's veth, a VM's TAP) is refused and the
    // interface is left alone (a failure used to delete it, whatever it was).
    sh_ok(&format!("ip -n {host} link add theirs0 type veth peer name theirs1"));
    sh_ok(&format!("ip -n {host} tuntap add dev vmq9 mode tap"));
    sh_ok(&format!("ip -n {host} tuntap add dev vmq8 mode tap multi_queue"));
    for name in ["theirs0", "vmq9", "vmq8"] {
        let e = w.ctl_err(0, &["port", "add", "lan", name, "--type", "tap"]);
        assert!(e.contains(&format!("interface {name} exists: --type tap makes a new TAP")), "{e}");
        assert!(sh(&format!("ip -n {host} link show {name}")).status.success(), "{name} left in place");
    }
    assert!(sh(&format!("ip -n {host} link show theirs1")).status.success());
    sh_ok(&format!("ip -n {host} link del theirs0 && ip -n {host} link del vmq9 && ip -n {host} link del vmq8"));
    // A TAP port made by the switch, moved into a namespace by hand (as a VM manager would).
    let tapns = w.netns("tapvm");
    w.ctl_ok(0, &["port", "add", "lan", "vmtap0", "--type", "tap"]);
    sh_ok(&format!("ip -n {host} link set vmtap0 netns {tapns}"));
    sh_ok(&format!("ip -n {tapns} addr add 10.70.0.201/24 dev vmtap0 && ip -n {tapns} link set vmtap0 up"));
    assert!(ping(&tapns, "10.70.0.200"));
    assert!(w.ctl_err(0, &["network", "rm", "lan"]).contains("active endpoints"));
    w.ctl_ok(0, &["port", "rm", "lan", "ext0"]);
    assert!(no_ping(&vm, "10.70.0.2"));
    assert!(sh(&format!("ip -n {host} link show ext0")).status.success(), "a system interface is left in place");
    w.ctl_ok(0, &["disconnect", "lan", &c1]);
    let e = w.ctl_err(0, &["network", "rm", "lan"]);
    assert!(e.contains("attached ports (vmtap0)"), "{e}");
    // The TAP deleted by its VM's manager: shown down (it was listed as up).
    sh_ok(&format!("ip -n {tapns} link del vmtap0"));
    let tap_state = |w: &World| w.ctl_json(0, &["port", "ls"]).as_array().unwrap().iter().find(|p| p["interface"] == "vmtap0").map(|p| p["attached"].clone());
    assert!(wait_for(Duration::from_secs(5), || tap_state(&w) == Some(serde_json::json!(false))), "TAP port shown down: {:?}{}", tap_state(&w), w.log_tail(0));
    w.ctl_ok(0, &["port", "rm", "lan", "vmtap0"]);
    w.ctl_ok(0, &["network", "rm", "lan"]);
}

#[test]
fn mac_entries_age_out() {
    let Some(w) = world("aging", "1", &["ping"]) else { return };
    let (c1, c2) = (w.name("c1"), w.name("c2"));
    w.ctl_ok(0, &["network", "create", "a", "--subnet", "10.80.0.0/24", "--mac-aging", "2", "--mac-table-size", "100"]);
    w.ctl_ok(0, &["sandbox", "create", &c1]);
    w.ctl_ok(0, &["sandbox", "create", &c2]);
    connect(&w, "a", &c1, &[]);
    connect(&w, "a", &c2, &[]);
    assert!(ping(&c1, "10.80.0.3"));
    // An IPv4-only network: no IPv6 on the sandbox's interface (nothing in the sandbox
    // would refresh its FDB entry with router solicitations or MLD reports).
    let v6 = sh_ok(&format!("ip -n {c1} -6 addr show dev eth0"));
    assert!(v6.trim().is_empty(), "IPv6 addresses on an IPv4-only network: {v6}");
    assert!(!w.ctl_json(0, &["fdb", "show", "a"]).as_array().unwrap().is_empty());
    let gone = wait_for(Duration::from_secs(10), || w.ctl_json(0, &["fdb", "show", "a"]).as_array().unwrap().is_empty());
    assert!(gone, "entries aged out: {}", w.ctl_ok(0, &["fdb", "show", "a"]));
    let insp = w.ctl_json(0, &["network", "inspect", "a"]);
    assert_eq!(insp[0]["options"]["mac_table_size"], 100);
}

#[test]
fn two_hundred_sandboxes_reach_the_gateway() {
    let Some(w) = world("scale-200", "2", &["ping"]) else { return };
    w.ctl_ok(0, &["network", "create", "big", "--subnet", "10.90.0.0/22"]);
    let names: Vec<String> = (0..200).map(|i| w.name(&format!("s{i}"))).collect();
    for (i, n) in names.iter().enumerate() {
        w.ctl_ok(0, &["sandbox", "create", n]);
        let kind = if i % 4 == 3 { "tap" } else { "veth" };
        w.ctl_ok(0, &["connect", "big", n, "--port-kind", kind]);
        if (i + 1) % 50 == 0 {
            eprintln!("  {} sandboxes connected", i + 1);
        }
    }
    // Ping the gateway from all of them, 25 at a time.
    let mut failed = Vec::new();
    for chunk in names.chunks(25) {
        let script: String = chunk
            .iter()
            .map(|n| format!("(ip netns exec {n} ping -c 1 -W 3 10.90.0.1 >/dev/null 2>&1 || ip netns exec {n} ping -c 2 -W 3 10.90.0.1 >/dev/null 2>&1 || echo FAIL {n}) &"))
            .collect::<Vec<_>>()
            .join("\n");
        let o = sh(&format!("{script}\nwait"));
        failed.extend(String::from_utf8_lossy(&o.stdout).lines().map(|l| l.to_string()));
    }
    assert!(failed.is_empty(), "{} sandboxes did not reach the gateway: {failed:?}", failed.len());
    let ls = w.ctl_json(0, &["network", "ls"]);
    assert_eq!(ls[0]["endpoints"], 200);
    // And sandbox to sandbox across the crowd (veth to TAP).
    assert!(ping(&names[0], "10.90.0.201"));
}

/// Sends `n` UDP datagrams of one flow from `ns` to `ip:9`, as fast as a loop can.
fn udp_burst(ns: &str, ip: &str, n: u32) {
    let py = format!("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'rollover', ('{ip}', 9)) for _ in range({n})]");
    let o = in_ns(ns, &format!("python3 -c \"{py}\""));
    assert!(o.status.success(), "udp burst: {}", String::from_utf8_lossy(&o.stderr));
}

fn rollovers(w: &World) -> u64 {
    w.ctl_json(0, &["stats"])["events"]["rollover"].as_u64().unwrap_or(0)
}

/// Resumes a SIGSTOPped daemon even when the test fails while it is stopped.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: signalling the daemon this test started, by PID.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

/// A flow whose worker does not read (here: the whole daemon stopped, so every frame
/// waits) moves to another worker's queue, and the daemon counts it as `rollover`:
/// for a TAP by the steering program (more than 128 frames waiting on its queue), for
/// a veth by the kernel's fanout (the packet socket's ring three quarters full).
#[test]
fn a_stalled_workers_flow_rolls_over_and_is_counted() {
    let Some(w) = world("rollover", "2", &["ping", "python3"]) else { return };
    let (v, t) = (w.name("veth"), w.name("tap"));
    w.ctl_ok(0, &["network", "create", "roll", "--subnet", "10.41.0.0/24"]);
    w.ctl_ok(0, &["sandbox", "create", &v]);
    w.ctl_ok(0, &["sandbox", "create", &t]);
    let ipv = connect(&w, "roll", &v, &["--port-kind", "veth"]);
    let ipt = connect(&w, "roll", &t, &["--port-kind", "tap"]);
    assert!(ping(&t, &ipv) && ping(&v, &ipt));
    // A neighbour that does not exist: the frames are flooded, nobody answers, and the
    // sandboxes need no ARP while the daemon is stopped.
    for ns in [&v, &t] {
        sh_ok(&format!("ip netns exec {ns} ip neigh replace 10.41.0.99 lladdr 02:00:00:00:41:99 dev eth0"));
    }
    let pid = w.daemon(0).pid().expect("daemon pid");
    for (ns, n, what) in [(&t, 400, "tap"), (&v, 1500, "veth")] {
        let before = rollovers(&w);
        {
            // SAFETY: signalling the daemon this test started, by PID.
            unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
            let _resume = Resume(pid);
            udp_burst(ns, "10.41.0.99", n);
        }
        let counted = wait_for(Duration::from_secs(10), || rollovers(&w) > before);
        assert!(counted, "{what}: no rollover counted after {n} frames of one flow waited: {}", w.ctl_ok(0, &["stats"]));
        // The daemon forwards again afterwards.
        assert!(ping(&t, &ipv) && ping(&v, &ipt), "{what}: forwarding after the stall");
    }
}

/// Runs a second vswitchd in `host` (bounded by `timeout`) and returns (exit code, stderr).
fn second_daemon(w: &World, host: &str, state_dir: &str, socket: &str) -> (Option<i32>, String) {
    let o = std::process::Command::new("timeout")
        .args(["30", "nsenter", &format!("--net=/run/netns/{host}")])
        .arg(bin_dir().join("vswitchd"))
        .args(["--workers", "1", "--state-dir", state_dir, "--socket", socket])
        .current_dir(&w.dir)
        .output()
        .expect("run a second vswitchd");
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn a_second_daemon_is_refused_and_leaves_the_first_untouched() {
    let Some(mut w) = world("second", "1", &["ping", "nsenter", "timeout"]) else { return };
    let (c1, c2) = (w.name("c1"), w.name("c2"));
    w.ctl_ok(0, &["network", "create", "web", "--subnet", "10.47.0.0/24"]);
    for c in [&c1, &c2] {
        w.ctl_ok(0, &["sandbox", "create", c]);
    }
    connect(&w, "web", &c1, &[]);
    let ip2 = connect(&w, "web", &c2, &[]);
    assert!(ping(&c1, &ip2));
    let host = w.daemon(0).host.clone();
    let (pid, sock) = (w.daemon(0).pid().expect("daemon runs"), w.daemon(0).socket.display().to_string());
    let state = w.daemon(0).state_dir.display().to_string();
    let links = || sh_ok(&format!("ip -n {host} -o link show | grep -c '^[0-9]*: vsw' || true")).trim().to_string();
    let before = links();
    assert_eq!(before, "2", "one switch-side link per endpoint");
    let other_state = w.dir.join("state-other").display().to_string();
    let other_sock = w.dir.join("other.sock").display().to_string();

    // The same namespace with its own state directory and socket: refused before it
    // touches anything (it used to remove the first daemon's links as orphans), and the
    // refusal names the daemon that is there.
    let (code, err) = second_daemon(&w, &host, &other_state, &other_sock);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("another vswitchd runs in this network namespace") && err.contains(&format!("pid {pid}")) && err.contains(&state), "{err}");
    assert!(!std::path::Path::new(&other_sock).exists(), "the refused daemon left no socket");

    // Another namespace, but the first daemon's socket: refused, and the socket stays.
    let elsewhere = w.netns("elsewhere");
    let (code, err) = second_daemon(&w, &elsewhere, &other_state, &sock);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("socket {sock}: another vswitchd (pid {pid}, state dir {state}) is listening")), "{err}");
    assert!(!std::path::Path::new(&other_state).exists(), "the refused daemon made no state directory");
    // Another namespace, but the first daemon's state directory: refused.
    let (code, err) = second_daemon(&w, &elsewhere, &state, &other_sock);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("state directory {state}: in use by another vswitchd (pid {pid})")), "{err}");

    // The first daemon is as it was: its links, its socket, its forwarding.
    assert_eq!(links(), before);
    assert!(w.ctl_ok(0, &["network", "ls"]).contains("web"));
    assert!(ping(&c1, &ip2), "forwarding survives the refused daemons");

    // Once the first is gone (killed: nothing stale is left behind), a new daemon may
    // take the namespace, and it restores the first one's state.
    w.stop_daemon(0, libc::SIGKILL);
    w.restart_daemon(0);
    assert!(ping(&c1, &ip2), "restarted daemon forwards");
}

/// A daemon killed between making a TAP and saving the state (or between saving a
/// disconnect or `port rm` and deleting it) leaves a TAP nobody knows: in the sandbox
/// under the endpoint's name, or in its own namespace. The switch marks its TAPs (an
/// interface alias), and removes marked ones the state does not know at the next start;
/// other TAPs are left alone.
#[test]
fn orphaned_taps_are_removed_at_restart() {
    let Some(mut w) = world("orphan-taps", "1", &[]) else { return };
    let c1 = w.name("c1");
    w.ctl_ok(0, &["network", "create", "web", "--subnet", "10.48.0.0/24"]);
    w.ctl_ok(0, &["sandbox", "create", &c1]);
    connect(&w, "web", &c1, &["--port-kind", "tap"]);
    w.ctl_ok(0, &["port", "add", "web", "ptap0", "--type", "tap"]);
    let host = w.daemon(0).host.clone();
    assert!(sh_ok(&format!("ip -n {c1} -d link show eth0")).contains("alias vswitchd endpoint"));
    assert!(sh_ok(&format!("ip -n {host} -d link show ptap0")).contains("alias vswitchd port"));
    w.stop_daemon(0, libc::SIGKILL);
    sh_ok(&format!("ip -n {c1} tuntap add dev eth7 mode tap && ip -n {c1} link set eth7 alias 'vswitchd endpoint'"));
    sh_ok(&format!("ip -n {c1} tuntap add dev utap0 mode tap"));
    sh_ok(&format!("ip -n {host} tuntap add dev ptap9 mode tap && ip -n {host} link set ptap9 alias 'vswitchd port'"));
    sh_ok(&format!("ip -n {host} tuntap add dev utap1 mode tap"));
    w.restart_daemon(0);
    assert!(wait_for(Duration::from_secs(10), || ping(&c1, "10.48.0.1")), "endpoint restored{}", w.log_tail(0));
    let exists = |ns: &str, dev: &str| sh(&format!("ip -n {ns} link show {dev}")).status.success();
    assert!(!exists(&c1, "eth7"), "orphaned endpoint TAP removed{}", w.log_tail(0));
    assert!(!exists(&host, "ptap9"), "orphaned port TAP removed");
    assert!(exists(&c1, "utap0") && exists(&host, "utap1"), "TAPs the switch did not make stay");
    assert!(exists(&c1, "eth0") && exists(&host, "ptap0"), "the known ones stay");
    sh_ok(&format!("ip -n {host} link del utap1"));
}

/// `--poll-spin-us`: workers that keep polling after work forward as before, also the
/// first frame after they went back to sleep (a ping every 0.2 s finds them asleep).
#[test]
fn workers_that_spin_after_work_forward() {
    let Some(mut w) = World::new("spin", &["ping"]) else { return };
    let host = w.netns("host");
    w.start_daemon(&host, &["--workers", "2", "--poll-spin-us", "200"]);
    let (c1, c2) = (w.name("c1"), w.name("c2"));
    w.ctl_ok(0, &["network", "create", "web", "--subnet", "10.49.0.0/24"]);
    for c in [&c1, &c2] {
        w.ctl_ok(0, &["sandbox", "create", c]);
    }
    connect(&w, "web", &c1, &[]);
    let ip2 = connect(&w, "web", &c2, &["--port-kind", "tap"]);
    let o = in_ns(&c1, &format!("ping -c 5 -i 0.2 -W 1 {ip2}"));
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), w.log_tail(0));
}

/// A daemon killed between making a sandbox's namespace and saving it (or between
/// saving a `sandbox rm` and deleting the namespace) leaves a namespace the state does
/// not hold. The daemon notes such namespaces in its state directory first, and at the
/// next start removes the noted ones the state does not know; other namespaces stay.
#[test]
fn namespaces_of_interrupted_sandbox_changes_are_removed_at_restart() {
    let Some(mut w) = world("netns-pending", "1", &[]) else { return };
    let (c1, c2, c3) = (w.name("c1"), w.name("c2"), w.name("c3"));
    w.ctl_ok(0, &["sandbox", "create", &c1]);
    let pending = w.daemon(0).state_dir.join("netns-pending");
    let notes = || std::fs::read_dir(&pending).map(|d| d.count()).unwrap_or(0);
    assert_eq!(notes(), 0, "no note left after a finished create");
    w.ctl_ok(0, &["sandbox", "create", &c3]);
    w.ctl_ok(0, &["sandbox", "rm", &c3]);
    assert_eq!(notes(), 0, "no note left after a finished rm");
    w.stop_daemon(0, libc::SIGKILL);
    // What a kill in the middle of `sandbox create c2` leaves (a note without an inode,
    // or with the namespace's); c3 is someone else's; c4 was noted, but the namespace
    // of that name now is another one (its inode differs).
    let c4 = w.name("c4");
    sh_ok(&format!("ip netns add {c2} && ip netns add {c3} && ip netns add {c4}"));
    let ino = |n: &str| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(std::path::Path::new("/run/netns").join(n)).unwrap());
    std::fs::create_dir_all(&pending).unwrap();
    std::fs::write(pending.join(&c2), b"").unwrap();
    std::fs::write(pending.join(&c4), format!("{}\n", ino(&c4) + 1)).unwrap();
    w.restart_daemon(0);
    let exists = |n: &str| std::path::Path::new("/run/netns").join(n).exists();
    assert!(!exists(&c2), "the interrupted sandbox's namespace removed{}", w.log_tail(0));
    assert!(exists(&c3) && exists(&c1), "other namespaces stay");
    assert!(exists(&c4), "a namespace with another inode than the noted one stays");
    // With the inode noted, as `sandbox create` notes it once the namespace exists.
    w.stop_daemon(0, libc::SIGKILL);
    let c5 = w.name("c5");
    sh_ok(&format!("ip netns add {c5}"));
    std::fs::write(pending.join(&c5), format!("{}\n", ino(&c5))).unwrap();
    w.restart_daemon(0);
    assert!(!exists(&c5), "the noted namespace removed{}", w.log_tail(0));
    assert_eq!(notes(), 0, "the note is taken back");
    w.ctl_ok(0, &["sandbox", "create", &c2]);
    let e = w.ctl_err(0, &["sandbox", "create", &c3]);
    assert!(e.contains("not created by vswitchd"), "{e}");
}

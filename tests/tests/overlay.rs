//! Overlay networks across hosts (peer mode, no cluster store): hosts are namespaces on
//! an underlay bridge (in an "underlay" namespace), each running its own vswitchd;
//! sandboxes on different hosts talk as if on one switch, over VXLAN or GRE; a Linux
//! kernel VXLAN device interoperates; captures decode; a restart of one host does not
//! disturb the others.

use std::time::Duration;

use vswitchd_e2e::*;

fn start(w: &mut World, hosts: &[(String, String)], me: usize, extra: &[&str]) -> usize {
    let mut args: Vec<String> = vec!["--workers".into(), "2".into(), "--advertise".into(), hosts[me].1.clone()];
    for (i, (_, ip)) in hosts.iter().enumerate() {
        if i != me {
            args.push("--peer".into());
            args.push(ip.clone());
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    w.start_daemon(&hosts[me].0, &a)
}

/// Creates the overlay network on daemon `d` (hosts get disjoint --ip-range halves) and
/// a connected sandbox; returns (sandbox, ip).
fn sandbox(w: &World, d: usize, net: &str, short: &str) -> (String, String) {
    let n = w.name(short);
    w.ctl_ok(d, &["sandbox", "create", &n]);
    let out = w.ctl_ok(d, &["connect", net, &n]);
    (n, out.split_whitespace().nth(2).unwrap().split('/').next().unwrap().to_string())
}

fn overlay_net(w: &World, d: usize, name: &str, encap: &str, range: &str) {
    w.ctl_ok(d, &["network", "create", name, "--driver", "overlay", "--encap", encap, "--vni", "4242", "--subnet", "10.90.0.0/24", "--ip-range", range]);
}

#[test]
fn vxlan_and_gre_between_hosts() {
    let Some(mut w) = World::new("overlay", &["ping", "iperf3", "tshark"]) else { return };
    let hosts = underlay(&w, 2);
    let d1 = start(&mut w, &hosts, 0, &[]);
    let d2 = start(&mut w, &hosts, 1, &[]);
    overlay_net(&w, d1, "ov", "vxlan", "10.90.0.0/25");
    overlay_net(&w, d2, "ov", "vxlan", "10.90.0.128/25");
    let (a, aip) = sandbox(&w, d1, "ov", "a");
    let (b, bip) = sandbox(&w, d2, "ov", "b");
    // The overlay MTU is the underlay's minus the VXLAN overhead, set automatically.
    assert!(String::from_utf8_lossy(&in_ns(&a, "ip link show eth0").stdout).contains("mtu 1450"));
    // An MTU the underlay cannot carry once encapsulated is refused (it black-holed
    // large frames between hosts); one below it is fine.
    let e = w.ctl_err(d1, &["network", "create", "big", "--driver", "overlay", "--vni", "4301", "--mtu", "1500", "--subnet", "10.89.0.0/24"]);
    assert!(e.contains("mtu 1500: more than the underlay carries for vxlan (1450"), "{e}");
    w.ctl_ok(d1, &["network", "create", "small", "--driver", "overlay", "--vni", "4302", "--mtu", "1400", "--subnet", "10.89.0.0/24"]);
    w.ctl_ok(d1, &["network", "rm", "small"]);
    assert!(ping(&a, &bip), "across hosts over VXLAN{}", w.log_tail(d1));
    assert!(ping(&b, &aip));
    assert!(ping(&a, "10.90.0.1"), "each host's own gateway answers");
    // Captured on the underlay it decodes as VXLAN with our VNI.
    let cap = w.dir.join("vxlan.txt");
    let mut tshark = std::process::Command::new("ip")
        .args(["netns", "exec", &hosts[1].0, "tshark", "-i", "ul0", "-c", "2", "-a", "duration:8", "-f", "udp port 4789", "-T", "fields", "-e", "vxlan.vni", "-e", "icmp.type"])
        .stdout(std::fs::File::create(&cap).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    in_ns(&a, &format!("ping -c 3 -i 0.3 {bip}"));
    let _ = tshark.wait();
    let t = std::fs::read_to_string(&cap).unwrap_or_default();
    assert!(t.lines().any(|l| l.starts_with("4242")), "tshark decodes VXLAN VNI 4242: {t:?}");
    // TCP across hosts.
    let g = iperf3(&a, &b, &bip, 2, "", &w.dir);
    assert!(g > 0.05, "iperf3 over VXLAN: {g} Gbit/s");
    // The remote MACs are on the tunnel to the other host, named after it, and that
    // tunnel has its own counters.
    let fdb = w.ctl_ok(d1, &["fdb", "show", "ov"]);
    assert!(fdb.contains("vxlan:198.19.0.2"), "{fdb}");
    let st = w.ctl_json(d1, &["stats", "--port", "vxlan:198.19.0.2"]);
    assert!(st["ports"][0]["rx_packets"].as_u64() > Some(100), "{st}");

    // GRE beside it (key = the network id).
    w.ctl_ok(d1, &["network", "create", "og", "--driver", "overlay", "--encap", "gre", "--vni", "77", "--subnet", "10.91.0.0/24", "--ip-range", "10.91.0.0/25"]);
    w.ctl_ok(d2, &["network", "create", "og", "--driver", "overlay", "--encap", "gre", "--vni", "77", "--subnet", "10.91.0.0/24", "--ip-range", "10.91.0.128/25"]);
    let (c, _) = sandbox(&w, d1, "og", "c");
    let (_e, eip) = sandbox(&w, d2, "og", "e");
    assert!(String::from_utf8_lossy(&in_ns(&c, "ip link show eth0").stdout).contains("mtu 1458"), "GRE with key: 42 bytes");
    let cap = w.dir.join("gre.txt");
    let mut tshark = std::process::Command::new("ip")
        .args(["netns", "exec", &hosts[1].0, "tshark", "-i", "ul0", "-c", "2", "-a", "duration:8", "-f", "ip proto 47", "-T", "fields", "-e", "gre.key", "-e", "gre.proto", "-e", "icmp.type"])
        .stdout(std::fs::File::create(&cap).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(ping(&c, &eip), "across hosts over GRE{}", w.log_tail(d1));
    in_ns(&c, &format!("ping -c 3 -i 0.3 {eip}"));
    let _ = tshark.wait();
    let t = std::fs::read_to_string(&cap).unwrap_or_default();
    assert!(t.lines().any(|l| l.starts_with("0x0000004d\t0x6558") || l.starts_with("77\t0x6558")), "tshark decodes GRE key 77, TEB: {t:?}");
    let g = iperf3(&c, &_e, &eip, 2, "", &w.dir);
    assert!(g > 0.05, "iperf3 over GRE: {g} Gbit/s");
    // The two overlays stay apart.
    assert!(no_ping(&c, &bip));
    // One id space for all encapsulations: frames are told apart by (sender, id), so a
    // GRE network reusing the VXLAN network's id would swallow its frames. Refused, and
    // the VXLAN network keeps working.
    let e = w.ctl_err(d1, &["network", "create", "og2", "--driver", "overlay", "--encap", "gre", "--vni", "4242", "--subnet", "10.89.0.0/24"]);
    assert!(e.contains("vni 4242: already used by network ov (vxlan)"), "{e}");
    assert!(!w.ctl_ok(d1, &["network", "ls"]).contains("og2"));
    assert!(ping(&a, &bip), "VXLAN network unaffected");

    // Dual stack in peer mode: each host gets its own IPv6 range too (--ip-range once per
    // family, like --subnet), so the hosts hand out different IPv6 addresses.
    for (d, r4, r6) in [(d1, "10.92.0.0/25", "fd00:92::/65"), (d2, "10.92.0.128/25", "fd00:92::8000:0:0:0/65")] {
        w.ctl_ok(d, &["network", "create", "o6", "--driver", "overlay", "--vni", "4343", "--ipv6", "--subnet", "10.92.0.0/24", "--subnet", "fd00:92::/64", "--ip-range", r4, "--ip-range", r6]);
    }
    let v6 = |d: usize, short: &str| -> (String, String) {
        let n = w.name(short);
        w.ctl_ok(d, &["sandbox", "create", &n]);
        let out = w.ctl_ok(d, &["connect", "o6", &n]);
        let ip6 = out.split_whitespace().find(|t| t.starts_with("fd00:92:")).map(|t| t.split('/').next().unwrap().to_string());
        (n, ip6.unwrap_or_else(|| panic!("an IPv6 address in {out:?}")))
    };
    let (x1, x1ip) = v6(d1, "x1");
    let (_x2, x2ip) = v6(d2, "x2");
    assert_eq!((x1ip.as_str(), x2ip.as_str()), ("fd00:92::2", "fd00:92:0:0:8000::"), "each host from its own range");
    assert!(ping(&x1, &x2ip), "IPv6 across hosts{}", w.log_tail(d1));
    let e = w.ctl_err(d1, &["network", "create", "o7", "--ipv6", "--subnet", "10.93.0.0/24", "--subnet", "fd00:93::/64", "--ip-range", "fd00:94::/80"]);
    assert!(e.contains("ip-range fd00:94::/80: not inside the subnet fd00:93::/64"), "{e}");
}

#[test]
fn kernel_vxlan_interoperates() {
    let Some(mut w) = World::new("overlay-kernel", &["ping"]) else { return };
    let hosts = underlay(&w, 2);
    // Host 2 is plain Linux: a kernel vxlan device with the same VNI and port.
    let (k, kip) = &hosts[1];
    // On a veth underlay the kernel would leave inner TCP checksums to a NIC that does
    // not exist (a UDP socket then receives them unfinished); a real NIC computes them.
    sh_ok(&format!("ip netns exec {k} ethtool -K ul0 tx off >/dev/null"));
    sh_ok(&format!("ip -n {k} link add vx0 type vxlan id 4242 dstport 4789 remote {} local {kip} dev ul0", hosts[0].1));
    sh_ok(&format!("ip -n {k} addr add 10.90.0.200/24 dev vx0 && ip -n {k} link set vx0 up"));
    let d1 = start(&mut w, &hosts, 0, &[]);
    overlay_net(&w, d1, "ov", "vxlan", "10.90.0.0/25");
    let (a, aip) = sandbox(&w, d1, "ov", "a");
    assert!(ping(&a, "10.90.0.200"), "sandbox reaches the kernel VTEP{}", w.log_tail(d1));
    assert!(ping(k, &aip), "kernel VTEP reaches the sandbox");
    // TCP from the kernel side, whose frames arrive with partial checksums resolved.
    let out = w.dir.join("nc.txt");
    sh_ok(&format!("ip netns exec {a} sh -c 'echo hi | timeout 10 nc -l -q 1 9000 >/dev/null 2>&1 &'"));
    std::thread::sleep(Duration::from_millis(500));
    let _ = in_ns(k, &format!("sh -c 'timeout 5 nc -w 3 {aip} 9000 > {}'", out.display()));
    let got = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(got.contains("hi"), "TCP from the kernel VTEP: {got:?}");
}

#[test]
fn restarting_one_host_does_not_disturb_the_others() {
    let Some(mut w) = World::new("overlay-3", &["ping"]) else { return };
    let hosts = underlay(&w, 3);
    let ds: Vec<usize> = (0..3).map(|i| start(&mut w, &hosts, i, &[])).collect();
    let ranges = ["10.90.0.0/26", "10.90.0.64/26", "10.90.0.128/26"];
    let mut sbs = Vec::new();
    for (i, d) in ds.iter().enumerate() {
        overlay_net(&w, *d, "ov", "vxlan", ranges[i]);
        sbs.push(sandbox(&w, *d, "ov", &format!("s{i}")));
    }
    assert!(ping(&sbs[0].0, &sbs[1].1));
    assert!(ping(&sbs[0].0, &sbs[2].1));
    // Split horizon: host 3 forwards nothing from one tunnel to another (no duplicates
    // of flooded frames, no transit traffic counted on its tunnels).
    let before: u64 = w.ctl_json(ds[2], &["stats"])["ports"].as_array().unwrap().iter().filter(|p| p["port"].as_str().is_some_and(|n| n.starts_with("vxlan:"))).map(|p| p["tx_packets"].as_u64().unwrap_or(0)).sum();
    sh_ok(&format!("ip netns exec {} ip neigh flush all", sbs[0].0));
    let out = String::from_utf8_lossy(&in_ns(&sbs[0].0, &format!("ping -c 5 -i 0.2 {}", sbs[1].1)).stdout).into_owned();
    assert!(out.contains("5 received") && !out.contains("DUP!"), "{out}");
    let after: u64 = w.ctl_json(ds[2], &["stats"])["ports"].as_array().unwrap().iter().filter(|p| p["port"].as_str().is_some_and(|n| n.starts_with("vxlan:"))).map(|p| p["tx_packets"].as_u64().unwrap_or(0)).sum();
    assert!(before > 0, "host 3's tunnels are counted: {}", w.ctl_json(ds[2], &["stats"]));
    assert_eq!(after, before, "host 3 sent nothing of host 1's and host 2's traffic on its tunnels");
    // A steady ping between hosts 1 and 2 while host 3's daemon is killed and restarted.
    let log = w.dir.join("ping.txt");
    let mut p = std::process::Command::new("ip")
        .args(["netns", "exec", &sbs[0].0, "ping", "-i", "0.1", "-c", "60", "-W", "1", &sbs[1].1])
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    w.stop_daemon(ds[2], libc::SIGKILL);
    w.restart_daemon(ds[2]);
    let _ = p.wait();
    let out = std::fs::read_to_string(&log).unwrap();
    let received = out.lines().filter(|l| l.contains("bytes from")).count();
    assert!(received >= 58, "traffic between the other hosts was disturbed: {received}/60");
    assert!(ping(&sbs[2].0, &sbs[0].1), "the restarted host is back{}", w.log_tail(ds[2]));
}

/// `--peer IP:PORT`: hosts on different VXLAN ports (`--vxlan-port`) reach each other
/// when each names the other's port; a bad or repeated `--peer` is refused at start.
#[test]
fn peers_on_their_own_vxlan_ports() {
    let Some(mut w) = World::new("peerport", &["ping"]) else { return };
    let hosts = underlay(&w, 2);
    let (ip1, ip2) = (hosts[0].1.clone(), hosts[1].1.clone());
    let d1 = w.start_daemon(&hosts[0].0, &["--workers", "2", "--advertise", &ip1, "--peer", &format!("{ip2}:4790")]);
    let d2 = w.start_daemon(&hosts[1].0, &["--workers", "2", "--advertise", &ip2, "--vxlan-port", "4790", "--peer", &format!("{ip1}:4789")]);
    overlay_net(&w, d1, "ov", "vxlan", "10.90.0.0/25");
    overlay_net(&w, d2, "ov", "vxlan", "10.90.0.128/25");
    let (a, aip) = sandbox(&w, d1, "ov", "a");
    let (b, bip) = sandbox(&w, d2, "ov", "b");
    assert!(ping(&a, &bip), "h1 -> h2 on 4790{}", w.log_tail(d1));
    assert!(ping(&b, &aip), "h2 -> h1 on 4789{}", w.log_tail(d2));
    // Refused as command-line errors (exit status 2, one line naming --peer).
    let bare = w.netns("bare");
    let refuse = |args: &[&str]| -> String {
        let o = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{bare}"))
            .arg(bin_dir().join("vswitchd"))
            .args(["--state-dir", &w.dir.join("bare-state").display().to_string(), "--socket", &w.dir.join("bare.sock").display().to_string()])
            .args(["--advertise", "198.19.9.9"])
            .args(args)
            .output()
            .expect("vswitchd");
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = refuse(&["--peer", "198.19.9.10:0"]);
    assert!(e.contains("--peer 198.19.9.10:0: port 0"), "{e}");
    let e = refuse(&["--peer", "198.19.9.10:4790", "--peer", "198.19.9.10"]);
    assert!(e.contains("198.19.9.10 is given twice"), "{e}");
    let e = refuse(&["--peer", "host-b:4790"]);
    assert!(e.contains("--peer \"host-b:4790\": not an IPv4 address or IP:PORT"), "{e}");
}

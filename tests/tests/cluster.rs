//! Overlay networks with etcd as the cluster store: definitions shared by every host,
//! cluster-wide IPAM, endpoints published under each host's lease (withdrawn when a host
//! dies, back when it returns), a host joining later, and etcd restarted under traffic.
//!
//! World: an "ul" namespace with a bridge; hosts h1..h3 (198.19.0.N) and an "etcd"
//! namespace (198.19.0.100) on it; one vswitchd per host with --cluster.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vswitchd_e2e::*;

const ETCD: &str = "198.19.0.100";

fn underlay(w: &World, names: &[&str], ips: &[&str]) -> Vec<String> {
    let ul = w.netns("ul");
    sh_ok(&format!("ip -n {ul} link add br0 type bridge && ip -n {ul} link set br0 up"));
    names
        .iter()
        .zip(ips)
        .enumerate()
        .map(|(i, (n, ip))| {
            let h = w.netns(n);
            sh_ok(&format!("ip -n {h} link add ul0 type veth peer name p{i} netns {ul}"));
            sh_ok(&format!("ip -n {ul} link set p{i} master br0 && ip -n {ul} link set p{i} up"));
            sh_ok(&format!("ip -n {h} addr add {ip}/24 dev ul0 && ip -n {h} link set ul0 up"));
            h
        })
        .collect()
}

struct Etcd {
    ns: String,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl Etcd {
    fn start(&mut self) {
        let c = Command::new("ip")
            .args(["netns", "exec", &self.ns, "etcd", "--name", "t", "--data-dir"])
            .arg(&self.dir)
            .args([
                "--listen-client-urls",
                &format!("http://{ETCD}:2379"),
                "--advertise-client-urls",
                &format!("http://{ETCD}:2379"),
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                "t=http://127.0.0.1:2380",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd");
        self.child = Some(c);
        let ns = self.ns.clone();
        assert!(
            wait_for(Duration::from_secs(20), || in_ns(&ns, &format!("curl -s -m 1 http://{ETCD}:2379/health")).stdout.starts_with(b"{\"health\":\"true\"")),
            "etcd did not start"
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn sandbox(w: &World, d: usize, net: &str, short: &str) -> (String, String) {
    let n = w.name(short);
    w.ctl_ok(d, &["sandbox", "create", &n]);
    let out = w.ctl_ok(d, &["connect", net, &n]);
    (n, out.split_whitespace().nth(2).unwrap().split('/').next().unwrap().to_string())
}

/// Captures the VXLAN packets on `host`'s underlay (h2's VXLAN port is 4790, h3's 4791
/// after its restart below) with
/// tshark: once `canary` traffic shows the capture is live, runs `traffic` and returns
/// the two fields asked for, one pair per packet captured after the canary.
fn vxlan_capture(w: &World, host: &str, f1: &str, f2: &str, canary: impl Fn(), traffic: impl FnOnce()) -> Vec<(String, String)> {
    let cap = w.dir.join("vxlan-capture.txt");
    let read = || std::fs::read_to_string(&cap).unwrap_or_default();
    let mut t = Command::new("ip")
        .args(["netns", "exec", host, "tshark", "-l", "-i", "ul0", "-a", "duration:60", "-f", "udp port 4789 or udp port 4790 or udp port 4791", "-d", "udp.port==4790,vxlan", "-d", "udp.port==4791,vxlan", "-T", "fields", "-e", f1, "-e", f2])
        .stdout(std::fs::File::create(&cap).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let live = wait_for(Duration::from_secs(20), || {
        canary();
        std::thread::sleep(Duration::from_millis(300));
        !read().is_empty()
    });
    let skip = read().lines().count();
    if live {
        traffic();
        std::thread::sleep(Duration::from_secs(1));
    }
    // SAFETY: a signal to the child this test started.
    unsafe { libc::kill(t.id() as i32, libc::SIGTERM) };
    let _ = t.wait();
    assert!(live, "tshark captured nothing on {host}");
    read()
        .lines()
        .skip(skip)
        .map(|l| {
            let mut p = l.split('\t');
            (p.next().unwrap_or("").to_string(), p.next().unwrap_or("").to_string())
        })
        .collect()
}

fn remote_count(w: &World, d: usize, net: &str) -> usize {
    w.ctl_json(d, &["network", "inspect", net])[0]["remote_endpoints"].as_array().map(|a| a.len()).unwrap_or(0)
}

#[test]
fn overlay_with_etcd() {
    let Some(mut w) = World::new("cluster", &["ping", "etcd", "curl", "getent", "tshark"]) else { return };
    let ns = underlay(&w, &["h1", "h2", "h3", "etcd", "h4"], &["198.19.0.1", "198.19.0.2", "198.19.0.3", ETCD, "198.19.0.4"]);
    let mut etcd = Etcd { ns: ns[3].clone(), dir: w.dir.join("etcd"), child: None };
    etcd.start();
    let cl = format!("etcd://{ETCD}:2379");
    // h2 listens for VXLAN on another port: the others learn it from its registration.
    let start = |w: &mut World, i: usize| -> usize {
        let ip = format!("198.19.0.{}", i + 1);
        let port = if i == 1 { "4790" } else { "4789" };
        w.start_daemon(&ns[i], &["--workers", "1", "--advertise", &ip, "--cluster", &cl, "--vxlan-port", port])
    };
    let d1 = start(&mut w, 0);
    let d2 = start(&mut w, 1);

    // Defined on one host, known to all.
    w.ctl_ok(d1, &["network", "create", "ov", "--driver", "overlay", "--subnet", "10.95.0.0/24"]);
    assert!(wait_for(Duration::from_secs(10), || w.ctl_ok(d2, &["network", "ls"]).contains("ov")), "h2 learns the network{}", w.log_tail(d2));
    assert!(w.ctl_err(d2, &["network", "create", "ov", "--driver", "overlay", "--subnet", "10.96.0.0/24"]).contains("already exists"));
    // Addresses there are claimed in the store per endpoint: a DHCP port is refused.
    let e = w.ctl_err(d2, &["port", "add", "ov", "vmd0", "--type", "tap", "--dhcp"]);
    assert!(e.contains("--dhcp: network ov is an overlay network of the cluster"), "{e}");
    // Two hosts defining overlapping networks at the same moment: exactly one wins.
    for k in 1..=3 {
        let run = |d: usize, name: String| {
            Command::new(bin_dir().join("vswitchctl"))
                .args(["--socket", &w.daemon(d).socket.display().to_string(), "network", "create", &name, "--driver", "overlay", "--subnet", &format!("10.8{k}.0.0/24")])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (p1, p2) = (run(d1, format!("race{k}")), run(d2, format!("racex{k}")));
        let (o1, o2) = (p1.wait_with_output().unwrap(), p2.wait_with_output().unwrap());
        assert_eq!(o1.status.success() as u8 + o2.status.success() as u8, 1, "round {k}: {o1:?} {o2:?}");
        let loser = if o1.status.success() { &o2 } else { &o1 };
        assert!(String::from_utf8_lossy(&loser.stderr).contains("overlaps"), "{loser:?}");
        let n = if o1.status.success() { format!("race{k}") } else { format!("racex{k}") };
        assert!(wait_for(Duration::from_secs(10), || w.ctl_ok(d2, &["network", "ls"]).contains(&n) && w.ctl_ok(d1, &["network", "ls"]).contains(&n)));
        let d = if o1.status.success() { d1 } else { d2 };
        w.ctl_ok(d, &["network", "rm", &n]);
    }
    // Without --subnet, the loser of the race takes the next free pool subnet.
    let run = |d: usize, name: &str| {
        Command::new(bin_dir().join("vswitchctl"))
            .args(["--socket", &w.daemon(d).socket.display().to_string(), "network", "create", name, "--driver", "overlay"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (p1, p2) = (run(d1, "autoa"), run(d2, "autob"));
    let (o1, o2) = (p1.wait_with_output().unwrap(), p2.wait_with_output().unwrap());
    assert!(o1.status.success() && o2.status.success(), "{o1:?} {o2:?}");
    assert!(wait_for(Duration::from_secs(10), || { let l = w.ctl_ok(d1, &["network", "ls"]); l.contains("autoa") && l.contains("autob") }));
    let sub = |n: &str| w.ctl_json(d1, &["network", "inspect", n])[0]["subnet"].as_str().unwrap().to_string();
    assert_ne!(sub("autoa"), sub("autob"));
    w.ctl_ok(d1, &["network", "rm", "autoa"]);
    w.ctl_ok(d2, &["network", "rm", "autob"]);
    // Addresses are unique across hosts (claimed in etcd, not from a local counter).
    let (a, aip) = sandbox(&w, d1, "ov", "a");
    let (b, bip) = sandbox(&w, d2, "ov", "b");
    assert_ne!(aip, bip);
    assert!(wait_for(Duration::from_secs(10), || remote_count(&w, d1, "ov") == 1), "h1 knows b");
    assert!(ping(&a, &bip), "across hosts{}", w.log_tail(d1));
    assert!(ping(&b, &aip));
    // Names across hosts.
    let g = String::from_utf8_lossy(&in_ns(&a, &format!("getent hosts {b}")).stdout).into_owned();
    assert!(g.starts_with(&format!("{bip} ")), "{g:?}");
    // ARP for an endpoint of another host is answered by this host's switch (as Docker's
    // overlay does with proxy ARP): the request never crosses the underlay. Captured on
    // h1's underlay (VXLAN to h2 goes to its port 4790): the ping's packets to b, no ARP
    // for b.
    let proxied = |w: &World| w.ctl_json(d1, &["stats"])["events"]["arp_proxied"].as_u64().unwrap_or(0);
    let before = proxied(&w);
    let lines = vxlan_capture(&w, &ns[0], "arp.dst.proto_ipv4", "ip.dst", || { let _ = ping(&a, &bip); }, || {
        in_ns(&a, "ip neigh flush all");
        assert!(ping(&a, &bip), "after a neighbour flush{}", w.log_tail(d1));
    });
    assert!(lines.iter().any(|(_, ip)| ip.split(',').any(|x| x == bip)), "the capture saw the ping: {lines:?}");
    assert!(!lines.iter().any(|(t, _)| *t == bip), "an ARP request for b crossed the underlay: {lines:?}");
    assert!(proxied(&w) > before, "h1 answered the ARP request");
    let neigh = String::from_utf8_lossy(&in_ns(&a, &format!("ip neigh show {bip}")).stdout).into_owned();
    let bmac = String::from_utf8_lossy(&in_ns(&b, "cat /sys/class/net/eth0/address").stdout).trim().to_string();
    assert!(neigh.contains(&bmac), "a has b's MAC from the answer: {neigh:?} (b: {bmac})");

    // A third host joins later and reaches both.
    let d3 = start(&mut w, 2);
    assert!(wait_for(Duration::from_secs(10), || w.ctl_ok(d3, &["network", "ls"]).contains("ov")));
    let (c, cip) = sandbox(&w, d3, "ov", "c");
    assert!(ping(&c, &aip) && ping(&c, &bip), "the third host reaches both{}", w.log_tail(d3));
    assert!(ping(&a, &cip));

    // etcd restarted under traffic: the data path does not notice.
    let log = w.dir.join("ping.txt");
    let mut p = Command::new("ip")
        .args(["netns", "exec", &a, "ping", "-i", "0.1", "-c", "50", "-W", "1", &bip])
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    etcd.kill();
    std::thread::sleep(Duration::from_secs(2));
    etcd.start();
    let _ = p.wait();
    let received = std::fs::read_to_string(&log).unwrap().lines().filter(|l| l.contains("bytes from")).count();
    assert!(received >= 48, "traffic disturbed by the etcd restart: {received}/50");
    // ... and the control plane resumes (a new endpoint after the restart is seen).
    let (b2, b2ip) = sandbox(&w, d2, "ov", "b2");
    assert!(wait_for(Duration::from_secs(15), || remote_count(&w, d1, "ov") == 3), "watch resumed{}", w.log_tail(d1));
    assert!(ping(&a, &b2ip));
    let _ = b2;

    // A host fails: its lease expires and its endpoints are withdrawn everywhere.
    w.stop_daemon(d3, libc::SIGKILL);
    assert!(wait_for(Duration::from_secs(25), || remote_count(&w, d1, "ov") == 2), "h3's endpoint withdrawn{}", w.log_tail(d1));
    assert!(ping(&a, &bip), "the others keep talking");
    // Its address stays claimed while it is down: a new endpoint gets another one.
    let (_n1, n1ip) = sandbox(&w, d1, "ov", "n1");
    assert_ne!(n1ip, cip, "the address of an endpoint whose host is down is not given out");
    // ... and so is its MAC.
    let cmac = format!("02:42:{}", cip.split('.').map(|o| format!("{:02x}", o.parse::<u8>().unwrap())).collect::<Vec<_>>().join(":"));
    let n2 = w.name("n2");
    w.ctl_ok(d1, &["sandbox", "create", &n2]);
    let e = w.ctl_err(d1, &["connect", "ov", &n2, "--mac", &cmac]);
    assert!(e.contains("held by an endpoint of a host that is down"), "{e}");
    let e = w.ctl_err(d1, &["connect", "ov", &n2, "--ip", &cip]);
    assert!(e.contains(&format!("--ip {cip}: already in use on network ov (held by an endpoint of a host that is down: endpoint id ")), "{e}");
    // The holder of an address on another host that is up is named.
    let e = w.ctl_err(d1, &["connect", "ov", &n2, "--ip", &bip]);
    assert!(e.contains(&format!("--ip {bip}: already in use on network ov (by sandbox {b} on host 198.19.0.2)")), "{e}");
    // It returns: its endpoint comes back and traffic flows again.
    w.restart_daemon(d3);
    assert!(wait_for(Duration::from_secs(15), || remote_count(&w, d1, "ov") == 3), "h3's endpoint back{}", w.log_tail(d3));
    assert!(ping(&c, &aip), "the returned host works again{}", w.log_tail(d3));
    // Killed and back at once (its registration still alive) on another VXLAN port:
    // the others send to the new one.
    w.stop_daemon(d3, libc::SIGKILL);
    let args = w.daemon_args_mut(d3);
    let i = args.iter().position(|a| a == "--vxlan-port").unwrap();
    args[i + 1] = "4791".into();
    w.restart_daemon(d3);
    assert!(wait_for(Duration::from_secs(10), || std::fs::read_to_string(&w.daemon(d1).log).unwrap_or_default().contains("host registered again with another VXLAN port")), "h1 sees h3's new port{}", w.log_tail(d1));
    assert!(ping(&a, &cip) && ping(&c, &bip), "h3 on its new VXLAN port{}", w.log_tail(d3));

    // An internal overlay network spans hosts too.
    w.ctl_ok(d2, &["network", "create", "secret", "--driver", "overlay", "--internal", "--subnet", "10.97.0.0/24"]);
    assert!(wait_for(Duration::from_secs(10), || w.ctl_ok(d1, &["network", "ls"]).contains("secret")));
    let (x, _) = sandbox(&w, d1, "secret", "x");
    let (_y, yip) = sandbox(&w, d2, "secret", "y");
    assert!(wait_for(Duration::from_secs(10), || remote_count(&w, d1, "secret") == 1));
    assert!(ping(&x, &yip));
    // A network with endpoints cannot be removed anywhere, nor while a host that is
    // down still holds addresses on it.
    assert!(w.ctl_err(d1, &["network", "rm", "secret"]).contains("endpoints"));

    // Network aliases resolve on every host of the network, to every endpoint that
    // carries them (a third host with neither sees both).
    let mut want = std::collections::BTreeSet::new();
    for (d, short) in [(d1, "db1"), (d2, "db2")] {
        let n = w.name(short);
        w.ctl_ok(d, &["sandbox", "create", &n]);
        let out = w.ctl_ok(d, &["connect", "ov", &n, "--alias", "db"]);
        want.insert(out.split_whitespace().nth(2).unwrap().split('/').next().unwrap().to_string());
    }
    let seen = |ns: &str| -> std::collections::BTreeSet<String> {
        String::from_utf8_lossy(&in_ns(ns, "getent ahostsv4 db").stdout).lines().filter_map(|l| l.split_whitespace().next().map(str::to_string)).collect()
    };
    assert!(wait_for(Duration::from_secs(10), || seen(&c) == want), "alias db from h3: {:?} want {want:?}{}", seen(&c), w.log_tail(d3));
    assert!(wait_for(Duration::from_secs(10), || seen(&a) == want), "alias db from h1: {:?} want {want:?}", seen(&a));

    // A MAC address taken by an endpoint on another host is refused, like a local one.
    let amac = w.ctl_json(d1, &["network", "inspect", "ov"])[0]["endpoints"].as_array().unwrap().iter().find(|e| e["sandbox"] == a.as_str()).unwrap()["mac_address"]
        .as_str()
        .unwrap()
        .to_string();
    let m = w.name("m");
    w.ctl_ok(d3, &["sandbox", "create", &m]);
    let e = w.ctl_err(d3, &["connect", "ov", &m, "--mac", &amac]);
    assert!(e.contains(&format!("--mac {amac}: already in use on network ov by sandbox {a} on host 198.19.0.1")), "{e}");
    assert!(ping(&c, &aip), "the owner of the MAC keeps it");

    // Dual stack: IPv6 addresses are claimed cluster-wide too (every host used to hand
    // out ::2 first), and IPv6 crosses hosts.
    w.ctl_ok(d1, &["network", "create", "ov6", "--driver", "overlay", "--ipv6", "--subnet", "10.66.0.0/24", "--subnet", "fd00:66::/64"]);
    assert!(wait_for(Duration::from_secs(10), || w.ctl_ok(d3, &["network", "ls"]).contains("ov6")));
    let mut v6 = Vec::new();
    for (d, short) in [(d1, "v1"), (d3, "v3")] {
        let n = w.name(short);
        w.ctl_ok(d, &["sandbox", "create", &n]);
        let out = w.ctl_ok(d, &["connect", "ov6", &n]);
        let ip6 = out.split_whitespace().find(|t| t.starts_with("fd00:66::")).map(|t| t.split('/').next().unwrap().to_string());
        v6.push((n, ip6.unwrap_or_else(|| panic!("an IPv6 address in {out:?}"))));
    }
    assert_ne!(v6[0].1, v6[1].1, "distinct IPv6 addresses across hosts");
    let e = w.ctl_err(d3, &["connect", "ov6", &m, "--ip6", &v6[0].1]);
    assert!(e.contains(&format!("already in use on network ov6 (by sandbox {} on host 198.19.0.1)", v6[0].0)), "{e}");
    assert!(wait_for(Duration::from_secs(10), || remote_count(&w, d1, "ov6") == 1));
    assert!(ping(&v6[0].0, &v6[1].1), "IPv6 across hosts{}", w.log_tail(d1));
    // Neighbour solicitations for an endpoint of another host are answered here too.
    let nd = |w: &World| w.ctl_json(d1, &["stats"])["events"]["nd_proxied"].as_u64().unwrap_or(0);
    let before = nd(&w);
    let lines = vxlan_capture(&w, &ns[0], "icmpv6.nd.ns.target_address", "ipv6.dst", || { let _ = ping(&v6[0].0, &v6[1].1); }, || {
        in_ns(&v6[0].0, "ip -6 neigh flush all");
        assert!(ping(&v6[0].0, &v6[1].1), "after a neighbour flush{}", w.log_tail(d1));
    });
    assert!(lines.iter().any(|(_, ip)| *ip == v6[1].1), "the capture saw the ping: {lines:?}");
    assert!(!lines.iter().any(|(t, _)| *t == v6[1].1), "a neighbour solicitation for v3 crossed the underlay: {lines:?}");
    assert!(nd(&w) > before, "h1 answered the solicitation");

    // An encrypted network defined by a mesh member is known to every host, but a host
    // outside the mesh refuses to connect to it (its frames could not leave).
    let d4 = w.start_daemon(&ns[4], &["--workers", "1", "--advertise", "198.19.0.4", "--cluster", &cl, "--mesh"]);
    w.ctl_ok(d4, &["network", "create", "cenc", "--driver", "overlay", "--encrypted", "--subnet", "10.67.0.0/24"]);
    assert!(wait_for(Duration::from_secs(10), || w.ctl_ok(d1, &["network", "ls"]).contains("cenc")));
    let e = w.ctl_err(d1, &["connect", "cenc", &a]);
    assert!(e.contains("network cenc is encrypted and this vswitchd is not in a mesh"), "{e}");

    // A host that (re)starts while the store is down still switches: its local network
    // works at once, overlay changes are refused until the store answers, and then it
    // joins on its own and reaches the other hosts again.
    w.ctl_ok(d3, &["network", "create", "local3", "--subnet", "10.68.0.0/24"]);
    let (l1, _) = sandbox(&w, d3, "local3", "l1");
    let (_l2, l2ip) = sandbox(&w, d3, "local3", "l2");
    etcd.kill();
    w.stop_daemon(d3, libc::SIGTERM);
    w.restart_daemon(d3);
    assert!(ping(&l1, &l2ip), "local network without the store{}", w.log_tail(d3));
    let n = w.name("late");
    w.ctl_ok(d3, &["sandbox", "create", &n]);
    let e = w.ctl_err(d3, &["connect", "ov", &n]);
    assert!(e.contains("not joined yet"), "{e}");
    // Nor may an overlay endpoint leave: its claims could not be given back.
    let e = w.ctl_err(d3, &["disconnect", "ov", &c]);
    assert!(e.contains("not joined yet"), "{e}");
    etcd.start();
    assert!(wait_for(Duration::from_secs(20), || remote_count(&w, d3, "ov") > 0), "joins once the store is back{}", w.log_tail(d3));
    assert!(ping(&c, &aip), "overlay across hosts again{}", w.log_tail(d3));
    w.ctl_ok(d3, &["connect", "ov", &n]);

    // A network whose only endpoint is on a host that is down cannot be removed from
    // another host (the endpoint would come back into a network that no longer exists);
    // once its host is back and it is disconnected, it can.
    w.ctl_ok(d3, &["network", "create", "solo", "--driver", "overlay", "--subnet", "10.69.0.0/24"]);
    let (s3, _) = sandbox(&w, d3, "solo", "s3");
    assert!(wait_for(Duration::from_secs(10), || remote_count(&w, d1, "solo") == 1));
    w.stop_daemon(d3, libc::SIGKILL);
    assert!(wait_for(Duration::from_secs(25), || remote_count(&w, d1, "solo") == 0), "endpoint withdrawn with the lease");
    let e = w.ctl_err(d1, &["network", "rm", "solo"]);
    assert!(e.contains("network solo: 1 address (10.69.0.2) is held by endpoints that are not published — their hosts are down") && e.contains("--force"), "{e}");
    w.restart_daemon(d3);
    w.ctl_ok(d3, &["disconnect", "solo", &s3]);
    w.ctl_ok(d1, &["network", "rm", "solo"]);
    // A host that never comes back: --force gives its addresses up.
    w.ctl_ok(d3, &["network", "create", "solo2", "--driver", "overlay", "--subnet", "10.69.1.0/24"]);
    let (s4, _) = sandbox(&w, d3, "solo2", "s4");
    w.stop_daemon(d3, libc::SIGKILL);
    assert!(wait_for(Duration::from_secs(25), || remote_count(&w, d1, "solo2") == 0), "endpoint withdrawn with the lease");
    assert!(w.ctl_err(d1, &["network", "rm", "solo2"]).contains("--force"));
    w.ctl_ok(d1, &["network", "rm", "--force", "solo2"]);
    assert!(wait_for(Duration::from_secs(10), || !w.ctl_ok(d2, &["network", "ls"]).contains("solo2")));
    w.restart_daemon(d3);
    // The returning host learns at its first sync that the network was removed while it
    // was away: it keeps it while its own endpoint is on it (the sandbox's interface is
    // not pulled away under it) and says so; once disconnected, the network goes.
    let warned = || std::fs::read_to_string(&w.daemon(d3).log).unwrap_or_default().contains("overlay network removed from the cluster (or made again there as another network) while this host still has endpoints on it");
    assert!(wait_for(Duration::from_secs(15), warned), "stale network reported{}", w.log_tail(d3));
    w.ctl_ok(d3, &["disconnect", "solo2", &s4]);
    assert!(wait_for(Duration::from_secs(15), || !w.ctl_ok(d3, &["network", "ls"]).contains("solo2")), "stale network dropped after the disconnect{}", w.log_tail(d3));

    // A cluster network overlapping a local network of one host (which the defining
    // host cannot know) is not set up on that host; the others have it.
    w.ctl_ok(d1, &["network", "create", "shadow3", "--driver", "overlay", "--subnet", "10.68.0.0/24"]);
    assert!(wait_for(Duration::from_secs(10), || w.ctl_ok(d2, &["network", "ls"]).contains("shadow3")));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!w.ctl_ok(d3, &["network", "ls"]).contains("shadow3"), "not set up over local3 on h3");
    assert!(ping(&l1, &l2ip), "h3's local network unaffected");
}

#[test]
fn store_data_loss_identity_and_leaving() {
    let Some(mut w) = World::new("cluster-loss", &["ping", "etcd", "curl"]) else { return };
    let ns = underlay(&w, &["h1", "h2", "h3", "etcd"], &["198.19.0.1", "198.19.0.2", "198.19.0.3", ETCD]);
    let mut etcd = Etcd { ns: ns[3].clone(), dir: w.dir.join("etcd"), child: None };
    etcd.start();
    let cl = format!("etcd://{ETCD}:2379");
    let args = |i: usize| vec!["--workers".to_string(), "1".into(), "--advertise".into(), format!("198.19.0.{}", i + 1), "--cluster".into(), cl.clone()];
    let d1 = w.start_daemon(&ns[0], &args(0).iter().map(String::as_str).collect::<Vec<_>>());
    let d2 = w.start_daemon(&ns[1], &args(1).iter().map(String::as_str).collect::<Vec<_>>());
    w.ctl_ok(d1, &["network", "create", "ov", "--driver", "overlay", "--subnet", "10.70.0.0/24"]);
    assert!(wait_for(Duration::from_secs(10), || w.ctl_ok(d2, &["network", "ls"]).contains("ov")));
    let (a, aip) = sandbox(&w, d1, "ov", "a");
    let (_b, bip) = sandbox(&w, d2, "ov", "b");
    assert!(wait_for(Duration::from_secs(10), || remote_count(&w, d1, "ov") == 1));
    assert!(ping(&a, &bip));

    // etcd loses its data (restarted on an empty data directory). The hosts notice
    // (another store id, revisions gone backwards, their leases unknown) and define
    // their networks again, with their endpoints and address claims: a host joining
    // afterwards gets the network, a fresh address, and reaches both.
    etcd.kill();
    std::fs::remove_dir_all(&etcd.dir).unwrap();
    etcd.start();
    assert!(wait_for(Duration::from_secs(20), || in_ns(&ns[3], &format!("curl -s -m 1 http://{ETCD}:2379/v3/kv/range -X POST -d '{{\"key\":\"L3Zzd2l0Y2hkL25ldHdvcmtzL292\"}}'")).stdout.windows(7).any(|x| x == b"\"count\"")), "h1/h2 define ov again{}", w.log_tail(d1));
    let d3 = w.start_daemon(&ns[2], &args(2).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(wait_for(Duration::from_secs(10), || w.ctl_ok(d3, &["network", "ls"]).contains("ov")), "the joining host learns the network{}", w.log_tail(d3));
    assert!(wait_for(Duration::from_secs(15), || remote_count(&w, d3, "ov") == 2), "endpoints published again{}", w.log_tail(d1));
    let (c, cip) = sandbox(&w, d3, "ov", "c");
    assert!(cip != aip && cip != bip, "claims published again: {cip} vs {aip} {bip}");
    assert!(ping(&c, &aip) && ping(&c, &bip), "the new host reaches both{}", w.log_tail(d3));
    assert!(wait_for(Duration::from_secs(15), || remote_count(&w, d1, "ov") == 2), "h1's watch follows the new store{}", w.log_tail(d1));
    assert!(ping(&a, &cip));

    // Identity is the network's, not its name's: removed with --force and made again
    // (same name, so the same name-derived VNI) while h2 was away, the old network's
    // endpoint on h2 must not turn up in the new one. h2 keeps it, cut off, refuses
    // new endpoints on it, and takes the new network once it is disconnected.
    w.ctl_ok(d1, &["network", "create", "idn", "--driver", "overlay", "--subnet", "10.71.0.0/24"]);
    assert!(wait_for(Duration::from_secs(10), || w.ctl_ok(d2, &["network", "ls"]).contains("idn")));
    let (q, _) = sandbox(&w, d2, "idn", "q");
    assert!(wait_for(Duration::from_secs(10), || remote_count(&w, d1, "idn") == 1));
    w.stop_daemon(d2, libc::SIGKILL);
    assert!(wait_for(Duration::from_secs(25), || remote_count(&w, d1, "idn") == 0), "q withdrawn with h2's lease");
    w.ctl_ok(d1, &["network", "rm", "--force", "idn"]);
    w.ctl_ok(d1, &["network", "create", "idn", "--driver", "overlay", "--subnet", "10.72.0.0/24"]);
    let (r, rip) = sandbox(&w, d1, "idn", "r");
    w.restart_daemon(d2);
    let cut = || std::fs::read_to_string(&w.daemon(d2).log).unwrap_or_default().contains("made again there as another network) while this host still has endpoints");
    assert!(wait_for(Duration::from_secs(15), cut), "h2 keeps the old idn, cut off{}", w.log_tail(d2));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(remote_count(&w, d1, "idn"), 0, "the old network's endpoint is not published into the new one");
    let q2 = w.name("q2");
    w.ctl_ok(d2, &["sandbox", "create", &q2]);
    let e = w.ctl_err(d2, &["connect", "idn", &q2]);
    assert!(e.contains("network idn: removed from the cluster (or made again there as another network)"), "{e}");
    w.ctl_ok(d2, &["disconnect", "idn", &q]);
    let sub = |d: usize| w.ctl_json(d, &["network", "inspect", "idn"])[0]["subnet"].as_str().unwrap_or_default().to_string();
    assert!(wait_for(Duration::from_secs(10), || sub(d2) == "10.72.0.0/24"), "h2 takes the new idn{}", w.log_tail(d2));
    let out = w.ctl_ok(d2, &["connect", "idn", &q2]);
    assert!(out.contains("10.72.0."), "{out}");
    assert!(ping(&q2, &rip), "the new network spans h1 and h2{}", w.log_tail(d2));
    let _ = r;

    // A host of the cluster started without --cluster would change cluster networks
    // with nobody to hand addresses out: refused, state unchanged; --leave-cluster
    // removes them (and their endpoints) from that host.
    w.stop_daemon(d3, libc::SIGTERM);
    let st = w.daemon(d3).state_dir.clone();
    let sock = w.dir.join("h3-solo.sock");
    let e = daemon_refuses(&ns[2], &st, &sock, &[]);
    assert!(e.contains(&format!("--cluster: the state directory holds overlay networks of the cluster store {cl} (idn, ov)")) && e.contains("--leave-cluster"), "{e}");
    let before = std::fs::read_to_string(st.join("state.json")).unwrap_or_default();
    assert!(before.contains("\"ov\""), "state unchanged by the refusal");
    w.daemon_args_mut(d3).retain(|a| a != "--cluster" && a != &cl);
    w.daemon_args_mut(d3).push("--leave-cluster".into());
    w.restart_daemon(d3);
    let ls = w.ctl_ok(d3, &["network", "ls"]);
    assert!(!ls.contains("ov") && !ls.contains("idn"), "left: {ls}{}", w.log_tail(d3));
    assert!(!in_ns(&c, "ip -o link").stdout.windows(4).any(|x| x == b"eth0"), "its endpoint is gone");
    w.stop_daemon(d3, libc::SIGTERM);
    w.restart_daemon(d3); // without --cluster, nothing of the cluster left: starts
    // The other hosts are unaffected.
    assert!(ping(&a, &bip));
}

#[test]
fn routed_overlay_with_per_host_subnets() {
    let Some(mut w) = World::new("cluster-udp", &["ping", "etcd", "curl", "tshark", "iperf3"]) else { return };
    let ns = underlay(&w, &["h1", "h2", "etcd"], &["198.19.0.1", "198.19.0.2", ETCD]);
    let mut etcd = Etcd { ns: ns[2].clone(), dir: w.dir.join("etcd"), child: None };
    etcd.start();
    let cl = format!("etcd://{ETCD}:2379");
    let d1 = w.start_daemon(&ns[0], &["--workers", "1", "--advertise", "198.19.0.1", "--cluster", &cl]);
    let d2 = w.start_daemon(&ns[1], &["--workers", "1", "--advertise", "198.19.0.2", "--cluster", &cl]);
    w.ctl_ok(d1, &["network", "create", "flat", "--driver", "overlay", "--encap", "udp", "--subnet", "10.100.0.0/16"]);
    assert!(wait_for(Duration::from_secs(10), || w.ctl_ok(d2, &["network", "ls"]).contains("flat")));
    fn sub(w: &World, d: usize) -> String {
        w.ctl_json(d, &["network", "inspect", "flat"])[0]["subnet"].as_str().unwrap().to_string()
    }
    let (s1, s2) = (sub(&w, d1), sub(&w, d2));
    assert!(s1.ends_with("/24") && s2.ends_with("/24") && s1 != s2, "each host leases its own /24: {s1} {s2}");
    // Listings show the whole range, this host's share, and every host's.
    let ls = w.ctl_ok(d1, &["network", "ls"]);
    assert!(ls.contains(&format!("10.100.0.0/16 (here {s1})")), "{ls}");
    let shares = || w.ctl_json(d1, &["network", "inspect", "flat"])[0]["host_subnets"].clone();
    assert!(wait_for(Duration::from_secs(10), || shares().as_array().is_some_and(|v| v.len() == 2)), "{}", shares());
    let v = shares();
    assert_eq!((v[0]["host"].as_str(), v[0]["subnet"].as_str()), (Some("198.19.0.1"), Some(s1.as_str())), "{v}");
    assert_eq!((v[1]["host"].as_str(), v[1]["subnet"].as_str()), (Some("198.19.0.2"), Some(s2.as_str())), "{v}");
    let (a, aip) = sandbox(&w, d1, "flat", "a");
    let (b, bip) = sandbox(&w, d2, "flat", "b");
    assert!(String::from_utf8_lossy(&in_ns(&a, "ip link show eth0").stdout).contains("mtu 1472"), "IP-in-UDP: 28 bytes");
    assert!(wait_for(Duration::from_secs(10), || in_ns(&a, &format!("ping -c 1 -W 1 {bip}")).status.success()), "routed across hosts{}", w.log_tail(d1));
    assert!(ping(&b, &aip));
    // The far host's router answers through the tunnel too: its gateway's echo, and
    // Time Exceeded for a packet whose TTL runs out there (traceroute's second hop).
    let gw2 = w.ctl_json(d2, &["network", "inspect", "flat"])[0]["gateway"].as_str().unwrap().to_string();
    assert!(ping(&a, &gw2), "the other host's gateway answers{}", w.log_tail(d2));
    let ttl = String::from_utf8_lossy(&in_ns(&a, &format!("ping -c 1 -W 2 -t 2 {bip}")).stdout).into_owned();
    assert!(ttl.contains(&format!("From {gw2}")) && ttl.contains("Time to live exceeded"), "{ttl}");
    let g = iperf3(&a, &b, &bip, 2, "", &w.dir);
    assert!(g > 0.05, "iperf3 over IP-in-UDP: {g} Gbit/s");
    // On the underlay it is IP in UDP port 8285.
    let cap = w.dir.join("udp.txt");
    let mut t = Command::new("ip")
        .args(["netns", "exec", &ns[1], "tshark", "-i", "ul0", "-c", "2", "-a", "duration:8", "-f", "udp port 8285", "-T", "fields", "-e", "udp.dstport"])
        .stdout(std::fs::File::create(&cap).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    in_ns(&a, &format!("ping -c 3 -i 0.3 {bip}"));
    let _ = t.wait();
    assert!(std::fs::read_to_string(&cap).unwrap_or_default().contains("8285"));
    // A restarted host gets the same subnet back, and traffic flows again.
    w.stop_daemon(d2, libc::SIGKILL);
    w.restart_daemon(d2);
    assert_eq!(sub(&w, d2), s2, "the same /24 after a restart");
    assert!(wait_for(Duration::from_secs(15), || in_ns(&a, &format!("ping -c 1 -W 1 {bip}")).status.success()), "after restart{}", w.log_tail(d2));

    // The host comes back at once under a new underlay address (re-addressed): its old
    // registration, still alive, is recognised as its own (same identity), and it takes
    // its /24 over, so its sandboxes keep working.
    w.stop_daemon(d2, libc::SIGKILL);
    sh_ok(&format!("ip -n {} addr add 198.19.0.22/24 dev ul0", ns[1]));
    for a in w.daemon_args_mut(d2).iter_mut() {
        if a == "198.19.0.2" {
            *a = "198.19.0.22".into();
        }
    }
    w.restart_daemon(d2);
    assert_eq!(sub(&w, d2), s2, "the same /24 under the new address{}", w.log_tail(d2));
    assert!(wait_for(Duration::from_secs(15), || in_ns(&a, &format!("ping -c 1 -W 1 {bip}")).status.success()), "after re-addressing{}", w.log_tail(d2));
    let _ = b;
}

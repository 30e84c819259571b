//! The encrypted mesh (Weave-like): hosts are namespaces on an underlay bridge, each
//! running its own vswitchd with `--mesh-password` (or keys listed with `--mesh-allow`).
//! A and C are cut off from each other on the underlay (nftables in A's namespace) and
//! C accepts no unsolicited inbound UDP: their sandboxes still talk, relayed through B;
//! nothing readable crosses the underlay; outsiders are refused; replays are dropped;
//! rekeying under load breaks nothing; a killed host rejoins on its own.

use std::time::Duration;

use serde_json::Value;
use vswitchd_e2e::*;

fn start(w: &mut World, host: &(String, String), extra: &[&str]) -> usize {
    let mut args: Vec<&str> = vec!["--workers", "2", "--advertise", &host.1, "--mesh-keepalive", "1"];
    args.extend_from_slice(extra);
    w.start_daemon(&host.0, &args)
}

/// The encrypted network on daemon `d` with its own address range, and a sandbox on it;
/// returns (sandbox, ip).
fn encrypted_sandbox(w: &World, d: usize, range: &str, short: &str) -> (String, String) {
    w.ctl_ok(d, &["network", "create", "enc", "--driver", "overlay", "--encrypted", "--vni", "77", "--subnet", "10.91.0.0/24", "--ip-range", range]);
    let n = w.name(short);
    w.ctl_ok(d, &["sandbox", "create", &n]);
    let out = w.ctl_ok(d, &["connect", "enc", &n]);
    (n, out.split_whitespace().nth(2).unwrap().split('/').next().unwrap().to_string())
}

fn peers(w: &World, d: usize) -> Value {
    w.ctl_json(d, &["mesh", "peers"])
}

fn peer<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v["peers"].as_array()?.iter().find(|p| p["key"] == key)
}

fn mesh_id(w: &World, d: usize) -> String {
    w.ctl_ok(d, &["mesh", "id"]).trim().to_string()
}

/// Drops everything between this namespace and `ip` (both directions).
fn block(ns: &str, ip: &str) {
    sh_ok(&format!(
        "ip netns exec {ns} nft 'add table inet cut; add chain inet cut in {{ type filter hook input priority 0; }}; \
         add chain inet cut out {{ type filter hook output priority 0; }}; \
         add rule inet cut in ip saddr {ip} drop; add rule inet cut out ip daddr {ip} drop'"
    ));
}

/// Lets in only UDP that answers what this namespace sent (a NAT or stateful firewall).
fn outbound_only(ns: &str) {
    sh_ok(&format!(
        "ip netns exec {ns} nft 'add table inet fw; add chain inet fw in {{ type filter hook input priority 0; }}; \
         add rule inet fw in ct state established,related accept; add rule inet fw in meta l4proto udp drop'"
    ));
}

#[test]
fn encrypted_mesh_relays_hides_and_rekeys() {
    let Some(mut w) = World::new("mesh", &["ping", "iperf3", "tshark", "nft", "python3"]) else { return };
    let hosts = underlay(&w, 3);
    block(&hosts[0].0, &hosts[2].1);
    outbound_only(&hosts[2].0);
    let pw = ["--mesh-password", "correct horse", "--mesh-rekey-after", "4"];
    let b = start(&mut w, &hosts[1], &[&pw[..], &["--peer", "198.19.0.1"]].concat());
    // A also keeps an unencrypted VXLAN network with B, beside the encrypted one.
    let a = start(&mut w, &hosts[0], &[&pw[..], &["--mesh-peer", "198.19.0.2", "--peer", "198.19.0.2"]].concat());
    let c = start(&mut w, &hosts[2], &[&pw[..], &["--mesh-peer", "198.19.0.2:6783", "--mesh-no-inbound"]].concat());
    let (ka, kb, kc) = (mesh_id(&w, a), mesh_id(&w, b), mesh_id(&w, c));
    assert_eq!(ka.len(), 44, "a base64 X25519 key: {ka:?}");
    let mode = sh_ok(&format!("stat -c %a {}", w.daemon(a).state_dir.join("mesh.key").display()));
    assert_eq!(mode.trim(), "600", "the key file is private");

    // A learns C from B, cannot reach it directly, and goes through B.
    let relayed = wait_for(Duration::from_secs(30), || {
        let v = peers(&w, a);
        peer(&v, &kc).is_some_and(|p| p["path"] == format!("via {kb}")) && peer(&v, &kb).is_some_and(|p| p["path"] == "direct")
    });
    assert!(relayed, "A reaches C via B: {}\n{}", peers(&w, a), w.log_tail(a));
    let c_to_a = wait_for(Duration::from_secs(10), || peer(&peers(&w, c), &ka).is_some_and(|p| p["path"] == format!("via {kb}")));
    assert!(c_to_a, "C reaches A via B: {}", peers(&w, c));

    let (sa, ipa) = encrypted_sandbox(&w, a, "10.91.0.0/26", "sa");
    let (sb, ipb) = encrypted_sandbox(&w, b, "10.91.0.64/26", "sb");
    let (sc, ipc) = encrypted_sandbox(&w, c, "10.91.0.128/26", "sc");
    // The MTU leaves room for the mesh's headers.
    let mtu = String::from_utf8_lossy(&in_ns(&sa, "ip link show eth0").stdout).to_string();
    assert!(mtu.contains("mtu 1404"), "encrypted network MTU: {mtu}");
    assert!(ping(&sa, &ipb), "A to B{}", w.log_tail(a));
    assert!(ping(&sa, &ipc), "A to C through B{}{}", w.log_tail(a), w.log_tail(b));
    assert!(ping(&sc, &ipa), "C to A through B");
    assert!(ping(&sc, &ipb), "C to B (C dialled out; B answers inside that session)");

    // The unencrypted overlay keeps working beside the mesh.
    w.ctl_ok(a, &["network", "create", "plain", "--driver", "overlay", "--vni", "88", "--subnet", "10.92.0.0/24", "--ip-range", "10.92.0.0/25"]);
    w.ctl_ok(b, &["network", "create", "plain", "--driver", "overlay", "--vni", "88", "--subnet", "10.92.0.0/24", "--ip-range", "10.92.0.128/25"]);
    w.ctl_ok(a, &["connect", "plain", &sa]);
    let out = w.ctl_ok(b, &["connect", "plain", &sb]);
    let plain_b = out.split_whitespace().nth(2).unwrap().split('/').next().unwrap().to_string();
    assert!(ping(&sa, &plain_b), "VXLAN beside the mesh");

    // A capture of everything on the underlay: a known payload never shows, the mesh
    // traffic is there, and it is all UDP 6783 (the control messages included).
    let pcap = w.dir.join("underlay.pcap");
    let ul = w.name("ul");
    let mut cap = std::process::Command::new("ip")
        .args(["netns", "exec", &ul, "tshark", "-i", "br0", "-a", "duration:6", "-w", pcap.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let secret = "5ec2e7c0ffee5ec2e7c0ffee5ec2e7c0";
    in_ns(&sa, &format!("ping -c 5 -i 0.2 -s 200 -p {secret} {ipc}"));
    in_ns(&sc, &format!("ping -c 5 -i 0.2 -s 200 -p {secret} {ipa}"));
    let _ = cap.wait();
    let raw = std::fs::read(&pcap).unwrap_or_default();
    let needle = (0..16).map(|i| u8::from_str_radix(&secret[2 * i..2 * i + 2], 16).unwrap()).collect::<Vec<u8>>();
    assert!(raw.len() > 5000, "the capture holds the traffic ({} bytes)", raw.len());
    assert!(!raw.windows(needle.len()).any(|x| x == needle), "plaintext of the ping payload on the underlay");
    let ports = sh_ok(&format!("tshark -r {} -Y 'ip' -T fields -e udp.port 2>/dev/null | sort | uniq -c", pcap.display()));
    assert!(ports.contains("6783,6783"), "mesh traffic on UDP 6783: {ports}");

    // Replayed datagrams (captured A→B traffic, sent again from B's address) are
    // dropped and counted.
    let count = |k: &str| peer(&peers(&w, b), &ka).map(|p| p[k].as_u64().unwrap_or(0)).unwrap_or(0);
    let (replays0, drops0) = (count("replays_dropped"), count("drops"));
    let hex = sh_ok(&format!(
        "tshark -r {} -Y 'ip.src==198.19.0.1 && ip.dst==198.19.0.2 && udp.dstport==6783 && udp.length > 100' -T fields -e udp.payload 2>/dev/null",
        pcap.display()
    ));
    let n = hex.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(n >= 5, "captured A to B messages: {n}");
    let script = w.dir.join("replay.py");
    std::fs::write(
        &script,
        "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('198.19.0.1',0))\n\
         for l in open(sys.argv[1]):\n    l=l.strip()\n    if l: s.sendto(bytes.fromhex(l),('198.19.0.2',6783))\n",
    )
    .unwrap();
    let hexf = w.dir.join("replay.hex");
    std::fs::write(&hexf, &hex).unwrap();
    // A's namespace owns 198.19.0.1; the daemon's socket is on another port.
    sh_ok(&format!("ip netns exec {} python3 {} {}", hosts[0].0, script.display(), hexf.display()));
    // Messages of the current session are replays; those of sessions already rekeyed
    // away are dropped as for no session.
    let replayed = wait_for(Duration::from_secs(5), || count("drops") >= drops0 + n as u64 && count("replays_dropped") > replays0);
    assert!(replayed, "every replayed message dropped ({n} sent): {}", peers(&w, b));
    assert!(ping(&sa, &ipb), "the session survives the replays");

    // TCP across the relay while sessions rekey every 4 s: no connection breaks.
    let gbps = iperf3(&sa, &sc, &ipc, 10, "", &w.dir);
    assert!(gbps > 0.0, "iperf3 A to C through B");
    let gbps_ab = iperf3(&sa, &sb, &ipb, 6, "", &w.dir);
    eprintln!("encrypted TCP: A to C via B {gbps:.2} Gbit/s, A to B {gbps_ab:.2} Gbit/s");
    let v = peers(&w, a);
    let rekeys = peer(&v, &kb).and_then(|p| p["rekeys"].as_u64()).unwrap_or(0);
    assert!(rekeys >= 2, "sessions rekeyed under load: {v}");
    let relayed = peers(&w, b)["relayed"].as_u64().unwrap_or(0);
    assert!(relayed > 1000, "B relayed the A-C traffic: {relayed}");

    // The A-C link appears: once C dials A (`mesh connect`, as an operator would after
    // fixing the firewall), traffic goes direct.
    sh_ok(&format!("ip netns exec {} nft delete table inet cut", hosts[0].0));
    w.ctl_ok(c, &["mesh", "connect", "198.19.0.1"]);
    let direct = wait_for(Duration::from_secs(30), || {
        peer(&peers(&w, a), &kc).is_some_and(|p| p["path"] == "direct") && peer(&peers(&w, c), &ka).is_some_and(|p| p["path"] == "direct")
    });
    assert!(direct, "A reaches C directly once it can: {}\n{}", peers(&w, a), w.log_tail(c));
    // (The workers' send routes follow the topology within one agent timer tick.)
    std::thread::sleep(Duration::from_millis(300));
    assert!(ping(&sa, &ipc), "A to C directly");
    let relayed_before = peers(&w, b)["relayed"].as_u64().unwrap_or(0);
    in_ns(&sa, &format!("ping -c 5 -i 0.2 {ipc}"));
    assert_eq!(peers(&w, b)["relayed"].as_u64().unwrap_or(0), relayed_before, "B relays no more");

    // C killed: A and B see it go; restarted, it rejoins by itself and traffic resumes.
    w.stop_daemon(c, libc::SIGKILL);
    let gone = wait_for(Duration::from_secs(20), || peer(&peers(&w, a), &kc).is_none_or(|p| p["path"] == "unreachable"));
    assert!(gone, "A notices C is gone: {}", peers(&w, a));
    w.restart_daemon(c);
    assert_eq!(mesh_id(&w, c), kc, "the key survives a restart");
    let back = wait_for(Duration::from_secs(30), || ping(&sa, &ipc));
    assert!(back, "C rejoins: {}\n{}", peers(&w, a), w.log_tail(c));

    // C's key lost with its state directory: it comes back under a new key; A drops
    // the old key (it was listed as unreachable for ever) and talks to the new one.
    w.stop_daemon(c, libc::SIGKILL);
    std::fs::remove_file(w.daemon(c).state_dir.join("mesh.key")).expect("remove mesh.key");
    w.restart_daemon(c);
    let kc2 = mesh_id(&w, c);
    assert_ne!(kc2, kc, "a new key");
    let replaced = wait_for(Duration::from_secs(40), || {
        let v = peers(&w, a);
        peer(&v, &kc).is_none() && peer(&v, &kc2).is_some_and(|p| p["session_up"] == true)
    });
    assert!(replaced, "A forgets the old key: {}\n{}", peers(&w, a), w.log_tail(a));
    assert!(wait_for(Duration::from_secs(20), || ping(&sa, &ipc)), "traffic to C under its new key");
}

/// A direct path that breaks while traffic flows (every host still reaches B): with the
/// default 10 s keepalive, silence alone would take 32 s to notice; data sent without
/// an answer is probed and the path declared down within seconds, so the sandboxes'
/// pings go through B after a short gap, and `mesh peers` says so.
#[test]
fn broken_direct_path_fails_over_to_the_relay() {
    let Some(mut w) = World::new("meshfail", &["ping", "nft"]) else { return };
    let hosts = underlay(&w, 3);
    let args = |h: &(String, String), peer: Option<&str>| {
        let mut v = vec!["--workers".to_string(), "2".into(), "--advertise".into(), h.1.clone(), "--mesh-password".into(), "pw".into()];
        if let Some(p) = peer {
            v.extend(["--mesh-peer".to_string(), p.to_string()]);
        }
        v
    };
    let start = |w: &mut World, h: &(String, String), peer: Option<&str>| {
        let v = args(h, peer);
        w.start_daemon(&h.0, &v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let a = start(&mut w, &hosts[0], None);
    let b = start(&mut w, &hosts[1], Some("198.19.0.1"));
    let c = start(&mut w, &hosts[2], Some("198.19.0.1"));
    let (ka, kb, kc) = (mesh_id(&w, a), mesh_id(&w, b), mesh_id(&w, c));
    let direct = |v: &Value, k: &str| peer(v, k).is_some_and(|p| p["path"] == "direct" && p["session_up"] == true && p["direct"] == "up");
    let full = wait_for(Duration::from_secs(30), || {
        let (va, vb, vc) = (peers(&w, a), peers(&w, b), peers(&w, c));
        direct(&va, &kb) && direct(&va, &kc) && direct(&vc, &ka) && direct(&vc, &kb) && direct(&vb, &ka) && direct(&vb, &kc)
    });
    assert!(full, "a full mesh: {}\n{}", peers(&w, a), peers(&w, c));
    let (sa, _) = encrypted_sandbox(&w, a, "10.91.0.0/26", "sa");
    let _ = encrypted_sandbox(&w, b, "10.91.0.64/26", "sb");
    let (_, ipc) = encrypted_sandbox(&w, c, "10.91.0.128/26", "sc");
    assert!(ping(&sa, &ipc), "A to C directly{}", w.log_tail(a));

    // 150 pings, one every 0.2 s (30 s); A's namespace drops everything to and from C
    // after 3 s.
    let pinger = std::process::Command::new("ip")
        .args(["netns", "exec", &sa, "ping", "-n", "-i", "0.2", "-c", "150", "-W", "1", &ipc])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ping");
    std::thread::sleep(Duration::from_secs(3));
    block(&hosts[0].0, &hosts[2].1);
    let out = pinger.wait_with_output().expect("ping output");
    let out = String::from_utf8_lossy(&out.stdout);
    let seqs: Vec<u64> = out.lines().filter_map(|l| l.split("icmp_seq=").nth(1)?.split_whitespace().next()?.parse().ok()).collect();
    // The longest run without an answer, the end of the run included (pings that never
    // resume count up to the 150th).
    let gap = seqs.iter().chain(std::iter::once(&151)).collect::<Vec<_>>().windows(2).map(|x| x[1] - x[0]).max().unwrap_or(0);
    let gap_s = gap as f64 * 0.2;
    eprintln!("direct path A-C broken: pings resumed through B after a gap of {gap_s:.1} s ({} of 150 answered)", seqs.len());
    assert!(seqs.last().is_some_and(|l| *l >= 140), "pings resume through B: answered {seqs:?}\n{}\n{}", peers(&w, a), w.log_tail(a));
    assert!(gap_s <= 12.0, "failover to the relay took {gap_s:.1} s (answered {seqs:?})");

    // Both ends say it: relayed through B, the session to the peer not up, the direct
    // path down; the table says the same.
    let relayed = |v: &Value, k: &str| {
        peer(v, k).is_some_and(|p| p["path"] == format!("via {kb}") && p["session_up"] == false && p["direct"] == "down")
    };
    assert!(relayed(&peers(&w, a), &kc), "A lists C relayed: {}", peers(&w, a));
    assert!(relayed(&peers(&w, c), &ka), "C lists A relayed: {}", peers(&w, c));
    let table = w.ctl_ok(a, &["mesh", "peers"]);
    let row = table.lines().find(|l| l.starts_with(&kc)).unwrap_or_default().to_string();
    assert!(row.contains(&format!("via {kb}")) && row.split_whitespace().any(|x| x == "down"), "{table}");
    assert!(!row.split_whitespace().any(|x| x == "up"), "{table}");
    // B stays direct for both.
    assert!(direct(&peers(&w, a), &kb) && direct(&peers(&w, c), &kb), "{}", peers(&w, a));

    // The path mended: the direct link comes back and is used again.
    sh_ok(&format!("ip netns exec {} nft delete table inet cut", hosts[0].0));
    let back = wait_for(Duration::from_secs(45), || direct(&peers(&w, a), &kc) && direct(&peers(&w, c), &ka));
    assert!(back, "A and C direct again: {}\n{}", peers(&w, a), w.log_tail(a));
    std::thread::sleep(Duration::from_millis(300));
    let relayed_before = peers(&w, b)["relayed"].as_u64().unwrap_or(0);
    assert!(ping(&sa, &ipc), "A to C directly again");
    in_ns(&sa, &format!("ping -c 5 -i 0.2 {ipc}"));
    assert_eq!(peers(&w, b)["relayed"].as_u64().unwrap_or(0), relayed_before, "B relays no more");
}

#[test]
fn outsiders_are_refused() {
    let Some(mut w) = World::new("meshauth", &["ping", "nft", "python3"]) else { return };
    let hosts = underlay(&w, 6);
    // Password mode: the host with the wrong password is refused at its first message
    // (its sealed hello does not open with A's password) and never learns A's key.
    let a = start(&mut w, &hosts[0], &["--mesh-password", "right"]);
    let b = start(&mut w, &hosts[1], &["--mesh-password", "right", "--mesh-peer", "198.19.0.1"]);
    let x = start(&mut w, &hosts[2], &["--mesh-password", "wrong", "--mesh-peer", "198.19.0.1"]);
    let (ka, kb, kx) = (mesh_id(&w, a), mesh_id(&w, b), mesh_id(&w, x));
    assert!(wait_for(Duration::from_secs(20), || peer(&peers(&w, a), &kb).is_some_and(|p| p["session_up"] == true)), "{}", peers(&w, a));
    let refused = wait_for(Duration::from_secs(20), || peers(&w, a)["hellos_refused"].as_u64().unwrap_or(0) > 0);
    assert!(refused, "A refuses the wrong password: {}", peers(&w, a));
    let v = peers(&w, a);
    assert!(peer(&v, &kx).is_none_or(|p| p["session_up"] == false), "no session with the outsider: {v}");
    assert!(peer(&peers(&w, x), &ka).is_none(), "the outsider never learns A's key: {}", peers(&w, x));
    // The outsider is told: the member it names is listed as waiting, and its log says
    // the member does not answer (a wrong password is one reason).
    let pending = peers(&w, x)["pending_members"].clone();
    assert!(pending.as_array().is_some_and(|a| a.iter().any(|m| m["address"] == "198.19.0.1:6783" && m["hellos_sent"].as_u64() > Some(0))), "{pending}");
    let said = wait_for(Duration::from_secs(15), || std::fs::read_to_string(&w.daemon(x).log).unwrap_or_default().contains("mesh member does not answer: a different --mesh-password"));
    assert!(said, "the outsider's log says why{}", w.log_tail(x));
    assert!(w.ctl_ok(x, &["mesh", "peers"]).contains("waiting for an answer"));
    // The outsider gives up on that member: it is no longer listed, nor asked.
    assert!(w.ctl_ok(x, &["mesh", "forget", "198.19.0.1"]).contains("no longer asking 198.19.0.1:6783"));
    assert_eq!(peers(&w, x)["pending_members"], serde_json::json!([]));
    let e = w.ctl_err(x, &["mesh", "forget", "198.19.0.1"]);
    assert!(e.contains("address \"198.19.0.1\": no member waiting for an answer there"), "{e}");
    let hellos = peers(&w, a)["hellos_refused"].as_u64().unwrap_or(0);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(peers(&w, a)["hellos_refused"].as_u64().unwrap_or(0), hellos, "a forgotten member is not asked again");
    let (sa, _) = encrypted_sandbox(&w, a, "10.91.0.0/26", "sa");
    let (_, ipb) = encrypted_sandbox(&w, b, "10.91.0.64/26", "sb");
    let (_, ipx) = encrypted_sandbox(&w, x, "10.91.0.128/26", "sx");
    assert!(ping(&sa, &ipb), "members talk");
    assert!(no_ping(&sa, &ipx), "the outsider is not reached");
    // Nor does B hand the outsider's existence on as a peer worth a session.
    assert!(peer(&peers(&w, b), &kx).is_none_or(|p| p["session_up"] == false));

    // Key mode (no password): D admits only E's key; F, unlisted, is refused.
    let e = start(&mut w, &hosts[3], &["--mesh"]);
    let ke = mesh_id(&w, e);
    let d = start(&mut w, &hosts[4], &["--mesh-allow", &ke]);
    let f = start(&mut w, &hosts[5], &["--mesh", "--mesh-peer", "198.19.0.5"]);
    let kf = mesh_id(&w, f);
    w.ctl_ok(e, &["mesh", "connect", "198.19.0.5"]);
    let admitted = wait_for(Duration::from_secs(20), || peer(&peers(&w, d), &ke).is_some_and(|p| p["session_up"] == true));
    assert!(admitted, "D admits E by key: {}\n{}", peers(&w, d), w.log_tail(d));
    let refused = wait_for(Duration::from_secs(20), || peers(&w, d)["handshakes_refused"].as_u64().unwrap_or(0) > 0);
    assert!(refused, "D refuses an unlisted key: {}", peers(&w, d));
    assert!(peer(&peers(&w, d), &kf).is_none_or(|p| p["session_up"] == false));
    // Garbage on the mesh port (random bytes, every message type, truncations) is
    // dropped and counted; the daemon and its sessions carry on.
    let junk = w.dir.join("junk.py");
    let script = r#"import os, random, socket
random.seed(7)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(3000):
    n = random.choice([0, 1, 4, 8, 16, 31, 32, 33, 76, 132, 200, 1400, 9000])
    b = bytearray(os.urandom(n))
    if n > 0:
        b[0] = random.choice([1, 2, 3, 4, 0x10, 0x11, 0, 255])
    if n > 3 and random.random() < 0.7:
        b[1:4] = bytes(3)
    s.sendto(bytes(b), ("198.19.0.1", 6783))
"#;
    std::fs::write(&junk, script).unwrap();
    let before = peers(&w, a)["unknown_dropped"].as_u64().unwrap_or(0);
    sh_ok(&format!("ip netns exec {} python3 {}", hosts[2].0, junk.display()));
    let counted = wait_for(Duration::from_secs(5), || peers(&w, a)["unknown_dropped"].as_u64().unwrap_or(0) > before + 100);
    assert!(counted, "garbage counted: {}", peers(&w, a));
    assert!(ping(&sa, &ipb), "members still talk after the garbage{}", w.log_tail(a));

    // Bad input: one-line errors naming the field.
    let e = w.ctl_err(a, &["mesh", "connect", "not-an-address"]);
    assert!(e.contains("address"), "{e}");
    // Addresses no member can have are refused instead of being dialled forever: this
    // host, the underlay's directed broadcast and network address, unspecified,
    // broadcast, multicast, loopback, port 0, IPv6.
    for (addr, why) in [
        ("198.19.0.1", "198.19.0.1 is an address of this host"),
        ("198.19.0.255", "198.19.0.255 is the broadcast address of 198.19.0.0/24 on interface ul0, not a host"),
        ("198.19.0.0:6783", "198.19.0.0 is the network address of 198.19.0.0/24 on interface ul0"),
        ("0.0.0.0", "is not the unicast address of another host"),
        ("255.255.255.255", "is not the unicast address of another host"),
        ("224.0.0.1", "is not the unicast address of another host"),
        ("127.0.0.1:6783", "is not the unicast address of another host"),
        ("198.19.0.2:0", "port 0"),
        ("[fd00::1]:6783", "the mesh runs over IPv4"),
    ] {
        let e = w.ctl_err(a, &["mesh", "connect", addr]);
        assert!(e.contains(&format!("address {addr:?}")) && e.contains(why), "{addr}: {e}");
    }
    let e = w.ctl_err(a, &["network", "create", "e2", "--encrypted", "--encap", "vxlan"]);
    assert!(e.contains("--encrypted"), "{e}");
    // The same checks at start for --mesh-peer: a directed broadcast is refused.
    let lone = w.netns("lone");
    sh_ok(&format!("ip -n {lone} link add ul0 type veth peer name ul1 && ip -n {lone} addr add 198.19.1.1/24 dev ul0 && ip -n {lone} link set ul0 up"));
    let e = daemon_refuses(&lone, &w.dir.join("lone-state"), &w.dir.join("lone.sock"), &["--mesh", "--mesh-peer", "198.19.1.255"]);
    assert!(e.contains("--mesh-peer 198.19.1.255:6783: 198.19.1.255 is the broadcast address of 198.19.1.0/24 on interface ul0"), "{e}");
}

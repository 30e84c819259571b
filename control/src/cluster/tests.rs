//! The cluster store's transactions against a real etcd (see `etcd::tests::Server`):
//! skipped with a message when `etcd` is not installed, unless `VSWITCHD_E2E=1`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Barrier};
use std::thread;

use super::*;
use crate::etcd::tests::Server;

fn network(name: &str, vni: u32) -> Network {
    serde_json::from_value(serde_json::json!({
        "name": name, "id": format!("{:064x}", vni), "net_id": 1,
        "subnet": "10.77.0.0/24", "gateway": "10.77.0.1", "gateway_mac": "02:42:0a:4d:00:01",
        "mtu": 1450, "mac_table_size": 1024, "mac_aging": 300, "created": 0,
        "driver": "overlay", "vni": vni,
    }))
    .expect("network JSON")
}

fn host(srv: &Server, n: u8) -> Cluster {
    Cluster::connect(&srv.url(), Ipv4Addr::new(192, 0, 2, n), format!("host{n}"), crate::controller::VXLAN_PORT).expect("connect")
}

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 77, 0, n))
}

#[test]
fn claims_and_network_removal_exclude_each_other() {
    let Some(srv) = Server::start("clusterrm") else { return };
    let (a, b) = (host(&srv, 1), host(&srv, 2));
    let n = network("ov", 4242);
    a.create_network(&n).unwrap().unwrap();
    // A held address refuses rm; --force gives it up.
    assert!(b.claim_ip("ov", ip(2), "ep1").unwrap());
    let e = a.delete_network(&n, false).unwrap().unwrap_err();
    assert!(e.contains("1 address (10.77.0.2) is held"), "{e}");
    a.delete_network(&n, true).unwrap().unwrap();
    assert!(a
        .etcd
        .get_prefix(format!("{PREFIX}ipam/ov/"))
        .unwrap()
        .0
        .is_empty());
    // After the removal nothing can be claimed or published on it.
    let e = b.claim_ip("ov", ip(3), "ep2").unwrap_err();
    assert!(e.contains("network ov: removed from the cluster"), "{e}");
    let e = b
        .claim_mac("ov", dataplane::wire::MacAddr([2, 0, 0, 0, 0, 3]), "ep2")
        .unwrap_err();
    assert!(e.contains("network ov: removed from the cluster"), "{e}");
    assert!(a
        .etcd
        .get_prefix(format!("{PREFIX}ipam/ov/"))
        .unwrap()
        .0
        .is_empty());
    assert!(a
        .etcd
        .get_prefix(format!("{PREFIX}macs/ov/"))
        .unwrap()
        .0
        .is_empty());
    // An endpoint whose claims were made before a forced removal is not published.
    a.create_network(&n).unwrap().unwrap();
    assert!(b.claim_ip("ov", ip(4), "ep3").unwrap());
    let ep: Endpoint = serde_json::from_value(serde_json::json!({
        "id": "ep3", "network": "ov", "sandbox": "s3", "ifname": "eth0", "host_ifname": "vsw-ep3",
        "kind": "veth", "port_id": 3, "mac": "02:00:00:00:00:04", "ip": "10.77.0.4",
    }))
    .expect("endpoint JSON");
    a.delete_network(&n, true).unwrap().unwrap();
    let e = b.put_endpoint(&ep).unwrap_err();
    assert!(e.contains("network ov: removed from the cluster"), "{e}");
    assert!(a
        .etcd
        .get_prefix(format!("{PREFIX}endpoints/ov/"))
        .unwrap()
        .0
        .is_empty());
}

/// One host removes the network while another claims an address on it, both at once,
/// many times: never may both succeed (before, the checks and the deletes were separate
/// requests: the claim landed in between and was wiped, or outlived its network).
#[test]
fn a_racing_claim_and_removal_never_both_succeed() {
    let Some(srv) = Server::start("clusterrace") else { return };
    let (a, b) = (Arc::new(host(&srv, 1)), Arc::new(host(&srv, 2)));
    let n = network("race", 4343);
    let (mut removed, mut claimed) = (0, 0);
    for round in 0..60u8 {
        a.create_network(&n).unwrap().unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let (a2, bar2, n2) = (a.clone(), barrier.clone(), n.clone());
        let rm = thread::spawn(move || {
            bar2.wait();
            a2.delete_network(&n2, false).unwrap()
        });
        barrier.wait();
        // Stagger the claim over the removal's few milliseconds (two reads, one txn).
        thread::sleep(std::time::Duration::from_micros(
            u64::from(round % 20) * 150,
        ));
        let id = format!("ep{round}");
        let claim = b.claim_ip("race", ip(10 + round % 200), &id);
        let rm = rm.join().unwrap();
        match (&rm, &claim) {
            (Ok(()), Ok(true)) => {
                panic!("round {round}: the network was removed and an address claimed on it")
            }
            (Ok(()), Err(e)) => {
                assert!(e.contains("removed from the cluster"), "{e}");
                removed += 1;
            }
            (Err(e), Ok(true)) => {
                assert!(e.contains("held by endpoints"), "{e}");
                claimed += 1;
            }
            other => panic!("round {round}: {other:?}"),
        }
        // Leave no claim behind and the network gone for the next round.
        let _ = a.delete_network(&n, true).unwrap();
        assert!(a
            .etcd
            .get_prefix(format!("{PREFIX}ipam/race/"))
            .unwrap()
            .0
            .is_empty());
    }
    println!("removal first {removed} times, claim first {claimed} times");
}

//! `vswitchd`: the switch daemon. See `vswitchd --help`.

use std::path::PathBuf;

use clap::Parser;
use control::api::{DEFAULT_SOCKET, DEFAULT_STATE_DIR};
use control::daemon::{run, DaemonOpts};
use control::dp::DpConfig;
use dataplane::port::afpacket::AfPacketOpts;
use dataplane::port::tap::TapOpts;

/// A userspace virtual switch for containers and VMs.
#[derive(Parser, Debug)]
#[command(name = "vswitchd", version)]
struct Args {
    /// Where the desired state is kept.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// The API socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Forwarding worker threads (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Run inside the network namespace /run/netns/NAME.
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,
    /// Do not pin worker i to CPU i. By default workers are pinned when there are no
    /// more of them than CPUs: a pinned worker wakes on a warm CPU, which cuts the
    /// latency tail several-fold on a small VM.
    #[arg(long)]
    no_pin_cpus: bool,
    /// Workers spin instead of sleeping (lower latency, burns one core per worker).
    #[arg(long)]
    busy_poll: bool,
    /// Workers keep polling this many microseconds after a turn that found packets
    /// before they sleep (0 = sleep at once; costs CPU only while traffic flows).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    poll_spin_us: u32,
    /// Frames read from a port per poll-loop turn.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=64))]
    rx_batch: u16,
    /// Packet buffers per worker (each holds one 64 KiB frame).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(64..=65536))]
    pool_buffers: u32,
    /// Slots of the receive ring of each AF_PACKET port socket (one per port and
    /// worker; --rx-ring-slot bytes each, larger frames wait in the socket queue); 0
    /// receives with recvmmsg and no ring.
    #[arg(long, value_name = "SLOTS", default_value_t = dataplane::port::afpacket::DEFAULT_RX_RING as u32, value_parser = clap::value_parser!(u32).range(0..=65536))]
    rx_ring: u32,
    /// Bytes per receive ring slot (256, 512, 1024, 2048 or 4096; 76 of them
    /// hold the kernel's headers). Frames that do not fit wait whole in the socket
    /// queue and are read in batches. Default 256 (small frames; bulk TCP comes as GSO
    /// super-frames), 2048 with --no-offload (every frame MTU-sized).
    #[arg(long, value_name = "BYTES", value_parser = parse_rx_slot)]
    rx_ring_slot: Option<u32>,
    /// Let the kernel pick a TAP queue by flow hash alone. By default an eBPF program
    /// moves new frames of a flow to the next worker while the flow's worker is behind
    /// (like PACKET_FANOUT_FLAG_ROLLOVER for veth ports).
    #[arg(long)]
    no_tap_steering: bool,
    /// Do not use virtio-net headers on ports: every frame crosses as a plain
    /// MTU-sized frame with a complete checksum (for comparison; slower).
    #[arg(long)]
    no_offload: bool,
    /// The interface towards the outside world (its address is owned by vswitchd).
    #[arg(long, value_name = "IFACE", requires = "uplink_addr")]
    uplink: Option<String>,
    /// The uplink's address, e.g. 198.51.100.2/24.
    #[arg(long, value_name = "IP/PREFIX", requires = "uplink")]
    uplink_addr: Option<String>,
    /// Next hop for everything beyond the uplink's subnet.
    #[arg(long, value_name = "IP", requires = "uplink")]
    uplink_gateway: Option<String>,
    /// Relay published ports from 127.0.0.1 of this namespace (like docker-proxy).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    userland_proxy: bool,
    /// Most connections tracked at once; new flows beyond it are refused and counted.
    #[arg(long, default_value_t = 262_144, value_parser = clap::value_parser!(u32).range(1..=(1 << 24)))]
    conntrack_max: u32,
    /// This host's underlay address: overlay tunnels start here.
    #[arg(long, value_name = "IP")]
    advertise: Option<String>,
    /// Another host carrying the overlay networks (repeatable; without a cluster store,
    /// MACs are learned by flooding over the tunnels). PORT: that host's --vxlan-port
    /// (default: this host's).
    #[arg(long = "peer", value_name = "IP[:PORT]", requires = "advertise")]
    peers: Vec<String>,
    /// UDP port of VXLAN.
    #[arg(long, default_value_t = control::controller::VXLAN_PORT)]
    vxlan_port: u16,
    /// Cluster store: etcd://HOST:PORT[,HOST:PORT…]. Overlay networks, cluster-wide
    /// IPAM, hosts and endpoints live there; needs --advertise.
    #[arg(long, value_name = "URL", requires = "advertise")]
    cluster: Option<String>,
    /// Remove the overlay networks of the cluster store this host was in (with their
    /// endpoints and ports) from this host, and run without a cluster store. Their
    /// addresses stay claimed in the store until the networks are removed there with
    /// `network rm --force`.
    #[arg(long, conflicts_with = "cluster")]
    leave_cluster: bool,
    /// Join the encrypted mesh through this member (IP[:PORT], repeatable); the others
    /// are learned from it.
    #[arg(long = "mesh-peer", value_name = "IP[:PORT]")]
    mesh_peers: Vec<String>,
    /// The mesh password (Weave's): hosts that prove it are admitted. Also
    /// VSWITCHD_MESH_PASSWORD.
    #[arg(long, value_name = "SECRET", env = "VSWITCHD_MESH_PASSWORD", hide_env_values = true)]
    mesh_password: Option<String>,
    /// Admit the host with this public key (`vswitchctl mesh id` on it; repeatable).
    #[arg(long = "mesh-allow", value_name = "KEY")]
    mesh_allow: Vec<String>,
    /// Be in the mesh even with no password, member or key given (others join us).
    #[arg(long)]
    mesh: bool,
    /// UDP port of the mesh.
    #[arg(long, default_value_t = control::controller::MESH_PORT)]
    mesh_port: u16,
    /// This host cannot receive unsolicited inbound UDP (it dials out and keeps its
    /// sessions alive; others do not dial it).
    #[arg(long)]
    mesh_no_inbound: bool,
    /// Seconds between keepalives on idle mesh sessions [default: 10].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    mesh_keepalive: Option<u64>,
    /// Seconds after which a mesh session is rekeyed (WireGuard's 120; for tests).
    #[arg(long, default_value_t = 120, hide = true, value_parser = clap::value_parser!(u64).range(1..=3600))]
    mesh_rekey_after: u64,
    /// Host ports for `-p CONTAINER_PORT` without a host port.
    #[arg(long, value_name = "FIRST-LAST", default_value = "49153-60999")]
    ephemeral_ports: String,
    /// Log filter (also RUST_LOG), e.g. info, debug, control=debug.
    #[arg(long, default_value = "info")]
    log: String,
}

/// `--rx-ring-slot`: one of the slot sizes a ring can have.
fn parse_rx_slot(v: &str) -> Result<u32, String> {
    let sizes = dataplane::port::afpacket::RX_SLOT_SIZES;
    match v.parse::<usize>() {
        Ok(n) if sizes.contains(&n) => Ok(n as u32),
        _ => Err(format!("must be one of {}", sizes.map(|s| s.to_string()).join(", "))),
    }
}

fn main() {
    let a = Args::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or(a.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let workers = a.workers.unwrap_or(ncpu);
    if workers == 0 || workers > 256 {
        eprintln!("vswitchd: --workers {workers}: must be between 1 and 256");
        std::process::exit(2);
    }
    let vnet = !a.no_offload;
    let dp = DpConfig {
        workers,
        rx_batch: a.rx_batch as usize,
        pool_buffers: a.pool_buffers,
        pin: if !a.no_pin_cpus && workers <= ncpu { (0..ncpu).collect() } else { Vec::new() },
        busy_poll: a.busy_poll,
        poll_spin_us: a.poll_spin_us,
        afpacket: AfPacketOpts { vnet, rx_ring: a.rx_ring as usize, rx_slot: a.rx_ring_slot.map_or(dataplane::port::afpacket::default_rx_slot(vnet), |s| s as usize), ..Default::default() },
        tap: TapOpts { vnet, ..Default::default() },
        conntrack_max: a.conntrack_max,
        tap_steering: !a.no_tap_steering,
    };
    let fail = |m: String| -> ! {
        eprintln!("vswitchd: {m}");
        std::process::exit(2);
    };
    let uplink = match (&a.uplink, &a.uplink_addr) {
        (Some(i), Some(addr)) => {
            if let Err(e) = control::model::validate_ifname(i) {
                fail(format!("--uplink: {e}"));
            }
            let addr: control::model::Ipv4Cidr = addr.parse().unwrap_or_else(|e| fail(format!("--uplink-addr {addr:?}: {e}")));
            if addr.prefix_len > 31 || addr.is_network_address() {
                fail(format!("--uplink-addr {addr}: want a host address with its prefix, e.g. 198.51.100.2/24"));
            }
            let gateway = a.uplink_gateway.as_ref().map(|g| {
                let ip: std::net::Ipv4Addr = g.parse().unwrap_or_else(|_| fail(format!("--uplink-gateway {g:?}: not an IPv4 address")));
                if !addr.contains(ip) || ip == addr.addr {
                    fail(format!("--uplink-gateway {ip}: not another address of {}", addr.trunc()));
                }
                ip
            });
            Some(control::controller::UplinkCfg { ifname: i.clone(), addr, gateway })
        }
        _ => None,
    };
    let eph = a
        .ephemeral_ports
        .split_once('-')
        .and_then(|(x, y)| Some((x.parse::<u16>().ok()?, y.parse::<u16>().ok()?)))
        .filter(|(x, y)| *x >= 1 && x <= y)
        .unwrap_or_else(|| fail(format!("--ephemeral-ports {:?}: want FIRST-LAST, e.g. 49153-60999", a.ephemeral_ports)));
    let advertise = a.advertise.as_ref().map(|s| s.parse::<std::net::Ipv4Addr>().unwrap_or_else(|_| fail(format!("--advertise {s:?}: not an IPv4 address"))));
    let mut peers: Vec<(std::net::Ipv4Addr, u16)> = Vec::new();
    for s in &a.peers {
        let (ip, port) = match s.parse::<std::net::SocketAddrV4>() {
            Ok(sa) => (*sa.ip(), sa.port()),
            Err(_) => (s.parse().unwrap_or_else(|_| fail(format!("--peer {s:?}: not an IPv4 address or IP:PORT"))), a.vxlan_port),
        };
        if let Err(e) = control::controller::check_unicast(ip) {
            fail(format!("--peer {s}: {e}"));
        }
        if port == 0 {
            fail(format!("--peer {s}: port 0 is not a port a host listens on"));
        }
        if Some(ip) == advertise {
            fail(format!("--peer {s}: is this host's own --advertise address"));
        }
        if let Some((_, p)) = peers.iter().find(|(i, _)| *i == ip) {
            fail(format!("--peer {s}: {ip} is given twice (also with VXLAN port {p})"));
        }
        peers.push((ip, port));
    }
    let ctl = control::controller::CtlOpts {
        ephemeral_ports: eph,
        userland_proxy: a.userland_proxy,
        uplink,
        advertise,
        peers,
        vxlan_port: a.vxlan_port,
        cluster: a.cluster.clone(),
        leave_cluster: a.leave_cluster,
    };
    if a.vxlan_port == 0 {
        fail("--vxlan-port 0: want the UDP port VXLAN listens on (4789 by default)".to_string());
    }
    let in_mesh = a.mesh || a.mesh_password.is_some() || !a.mesh_peers.is_empty() || !a.mesh_allow.is_empty();
    if a.mesh_no_inbound && !in_mesh {
        fail("--mesh-no-inbound: this vswitchd is not in a mesh (add --mesh-password, --mesh-peer, --mesh-allow or --mesh)".to_string());
    }
    if a.mesh_keepalive.is_some() && !in_mesh {
        fail("--mesh-keepalive: this vswitchd is not in a mesh (add --mesh-password, --mesh-peer, --mesh-allow or --mesh)".to_string());
    }
    let mesh = if in_mesh {
        if a.mesh_password.as_deref() == Some("") {
            fail("--mesh-password: empty".to_string());
        }
        if a.mesh_port == 0 {
            fail("--mesh-port 0: want a fixed UDP port other members can dial (6783 by default)".to_string());
        }
        if advertise.is_some() && a.mesh_port == a.vxlan_port {
            fail(format!("--mesh-port {}: is also the --vxlan-port; the two need their own UDP ports", a.mesh_port));
        }
        let join = a
            .mesh_peers
            .iter()
            .map(|s| {
                let m = control::controller::parse_mesh_addr(s).unwrap_or_else(|e| fail(format!("--mesh-peer {s:?}: {e}")));
                if advertise.is_some_and(|ad| m.ip() == std::net::IpAddr::V4(ad)) {
                    fail(format!("--mesh-peer {s}: is this host's own --advertise address"));
                }
                m
            })
            .collect();
        let allow = a
            .mesh_allow
            .iter()
            .map(|k| dataplane::mesh::key_from_base64(k).unwrap_or_else(|e| fail(format!("--mesh-allow {k:?}: {e}"))))
            .collect();
        Some(control::daemon::MeshCli {
            port: a.mesh_port,
            join,
            password: a.mesh_password.clone(),
            allow,
            inbound: !a.mesh_no_inbound,
            keepalive: std::time::Duration::from_secs(a.mesh_keepalive.unwrap_or(10)),
            rekey_after: std::time::Duration::from_secs(a.mesh_rekey_after),
        })
    } else {
        None
    };
    let opts = DaemonOpts { state_dir: a.state_dir, socket: a.socket, netns: a.netns, dp, ctl, mesh };
    if let Err(e) = run(opts) {
        eprintln!("vswitchd: {e}");
        std::process::exit(1);
    }
}

//! `vswitchctl`: the command-line client of vswitchd. Docker's network vocabulary
//! (`network create/ls/inspect/rm/prune`, `connect`, `disconnect`), OVS's habits for
//! dumps (`fdb show`, `stats`); every listing also as `--format json`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use control::api::{call, ClientError, Connect, NetworkCreate, Request, DEFAULT_SOCKET};
use serde_json::Value;

#[derive(Parser, Debug)]
#[command(name = "vswitchctl", version, about = "Control vswitchd: networks, sandboxes, endpoints, ports")]
struct Cli {
    /// The daemon's API socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET, env = "VSWITCHD_SOCKET", help_heading = "Global options")]
    socket: PathBuf,
    /// Output format of listings.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table, help_heading = "Global options")]
    format: Format,
    /// How long to wait for the daemon's answer, in seconds.
    #[arg(long, global = true, default_value_t = 120, help_heading = "Global options")]
    timeout: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage sandboxes (network namespaces).
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    /// Connect a sandbox to a network.
    Connect {
        /// The network (name).
        network: String,
        /// The sandbox (name).
        sandbox: String,
        /// IPv4 address (default: the next free one).
        #[arg(long)]
        ip: Option<String>,
        /// MAC address (default: 02:42 followed by the IPv4 address).
        #[arg(long)]
        mac: Option<String>,
        /// veth (default) or tap.
        #[arg(long)]
        port_kind: Option<String>,
        /// Publish a port: [HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp] (repeatable).
        #[arg(short = 'p', long = "publish", value_name = "SPEC")]
        publish: Vec<String>,
        /// A DNS name for the sandbox on this network (repeatable).
        #[arg(long = "alias", value_name = "NAME")]
        aliases: Vec<String>,
        /// IPv6 address on a dual-stack network (default: the next free one).
        #[arg(long)]
        ip6: Option<String>,
    },
    /// Disconnect a sandbox from a network.
    Disconnect {
        /// The network (name).
        network: String,
        /// The sandbox (name).
        sandbox: String,
    },
    /// `port SANDBOX`: published ports of a sandbox (like `docker port`);
    /// `port add|rm|ls`: attach existing interfaces (or new TAPs) to networks.
    Port(PortArgs),
    /// MAC tables.
    #[command(subcommand)]
    Fdb(FdbCmd),
    /// The connection tracking table (NAT).
    #[command(subcommand)]
    Conntrack(ConntrackCmd),
    /// Counters per port and drops by reason.
    Stats {
        /// Only this port (sandbox/ifname, interface name, or port number).
        #[arg(long)]
        port: Option<String>,
    },
    /// The encrypted mesh between hosts.
    #[command(subcommand)]
    Mesh(MeshCmd),
    /// Check that the daemon answers.
    Ping,
}

#[derive(Subcommand, Debug)]
enum MeshCmd {
    /// This host's public key (give it to other hosts' --mesh-allow).
    Id,
    /// Peers: key, address, direct or relayed, last handshake, traffic, drops.
    #[command(alias = "ls")]
    Peers,
    /// Join the mesh through the member at IP[:PORT] (port 6783 by default).
    Connect {
        /// A member's underlay address, IP or IP:PORT.
        addr: String,
    },
    /// Stop asking a member that has not answered (listed as waiting in `mesh peers`).
    Forget {
        /// The member's address as `mesh peers` lists it.
        addr: String,
    },
}

#[derive(Subcommand, Debug)]
enum NetworkCmd {
    /// Create a network.
    Create {
        /// The network's name (letters, digits, '_', '.', '-').
        name: String,
        /// Subnet in CIDR form (default: a free one from 172.17-31.0.0/16, 192.168.0.0/16);
        /// give it twice, IPv4 and IPv6, with --ipv6.
        #[arg(long)]
        subnet: Vec<String>,
        /// Gateway address (default: the first address of the subnet); once per family.
        #[arg(long)]
        gateway: Vec<String>,
        /// Dual stack: also an IPv6 subnet.
        #[arg(long)]
        ipv6: bool,
        /// bridge (one host, default) or overlay (across hosts).
        #[arg(long, short = 'd')]
        driver: Option<String>,
        /// Overlay encapsulation: vxlan (default), gre, udp, or mesh (= --encrypted).
        #[arg(long)]
        encap: Option<String>,
        /// Carry the network over the encrypted mesh (--driver overlay --encap mesh).
        #[arg(long)]
        encrypted: bool,
        /// Overlay network id (VXLAN VNI / GRE key); default derived from the name.
        #[arg(long)]
        vni: Option<u32>,
        /// Allocate endpoint addresses from this sub-range (one IPv4 and one IPv6 at most:
        /// repeat it, as with --subnet).
        #[arg(long)]
        ip_range: Vec<String>,
        /// MTU of the network's interfaces (default 1500; an overlay's default is what
        /// its underlay leaves after the encapsulation).
        #[arg(long)]
        mtu: Option<u32>,
        /// Maximum number of learned MAC addresses.
        #[arg(long)]
        mac_table_size: Option<u32>,
        /// Seconds before an idle MAC entry is forgotten.
        #[arg(long)]
        mac_aging: Option<u32>,
        /// No way out: no route to the uplink, no published ports.
        #[arg(long)]
        internal: bool,
        /// Inter-container communication; --icc=false lets sandboxes reach only the gateway.
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
        icc: Option<bool>,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show networks in detail (JSON).
    Inspect {
        /// Networks (names).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (refused while sandboxes or ports are attached).
    #[command(alias = "remove")]
    Rm {
        /// Networks (names).
        #[arg(required = true)]
        names: Vec<String>,
        /// Cluster overlay networks: also give up the addresses still held by endpoints
        /// of hosts that are down (they will not get them back).
        #[arg(long, short)]
        force: bool,
    },
    /// Remove every network without endpoints or ports.
    Prune {
        /// Accepted for Docker compatibility; prune never asks.
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
enum SandboxCmd {
    /// Create a sandbox (a network namespace `ip netns exec NAME` can enter).
    Create {
        /// The sandbox's name, also its namespace's (/run/netns/NAME) and DNS name.
        name: String,
        /// Hostname written to the sandbox's /etc/hostname and /etc/hosts (default: the first 12
        /// digits of its id; the UTS hostname is not changed: a sandbox is a network namespace).
        #[arg(long)]
        hostname: Option<String>,
        /// Upstream DNS server for names that are not local (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// DNS search domain (repeatable).
        #[arg(long)]
        dns_search: Vec<String>,
        /// resolv.conf option, e.g. ndots:2 (repeatable).
        #[arg(long)]
        dns_option: Vec<String>,
    },
    /// Remove sandboxes (disconnecting them first).
    #[command(alias = "remove")]
    Rm {
        /// Sandboxes (names); each is disconnected from its networks first.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List sandboxes.
    #[command(alias = "list")]
    Ls,
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct PortArgs {
    #[command(subcommand)]
    cmd: Option<PortCmd>,
    /// List the ports SANDBOX publishes.
    sandbox: Option<String>,
}

#[derive(Subcommand, Debug)]
enum PortCmd {
    /// Attach an existing interface (system) or a new TAP (tap) to a network.
    Add {
        /// The network (name).
        network: String,
        /// The interface to attach (system), or the name of the TAP to make (tap).
        iface: String,
        /// system (default: read an existing interface with AF_PACKET) or tap.
        #[arg(long = "type")]
        kind: Option<String>,
        /// Serve what is behind the port (a VM) by DHCP from the gateway: an address
        /// reserved in the network's IPAM, the gateway as router, DNS, the MTU.
        #[arg(long)]
        dhcp: bool,
        /// With --dhcp: the address handed out (default: the next free one).
        #[arg(long)]
        ip: Option<String>,
        /// With --dhcp: a DNS server handed out (repeatable, up to 3; default: the host's).
        #[arg(long = "dns")]
        dns: Vec<String>,
    },
    /// Detach an interface from a network.
    Rm {
        /// The network (name).
        network: String,
        /// The attached interface.
        iface: String,
    },
    /// List attached interfaces.
    Ls,
}

#[derive(Subcommand, Debug)]
enum ConntrackCmd {
    /// List tracked connections.
    #[command(alias = "list")]
    Ls,
    /// Forget every connection (established flows are re-created by their next packet).
    Flush,
}

#[derive(Subcommand, Debug)]
enum FdbCmd {
    /// Learned MAC addresses of a network.
    Show {
        /// The network (name).
        network: String,
    },
}

fn main() {
    // A closed stdout (`| head`) ends the program quietly, as it does `ip` or `ovs-vsctl`,
    // instead of a panic in println!.
    // SAFETY: restoring the default disposition of SIGPIPE before any other thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let timeout = Duration::from_secs(cli.timeout.max(1));
    let go = |req: Request| -> Value {
        match call(&cli.socket, &req, timeout) {
            Ok(v) => v,
            Err(e) => die(e),
        }
    };
    // For commands that take several names (`network rm A B`, like `docker network rm`):
    // a refusal is reported on stderr and the loop goes on with the next name; only a
    // daemon that does not answer at all ends the program at once.
    let try_go = |req: Request| -> Option<Value> {
        match call(&cli.socket, &req, timeout) {
            Ok(v) => Some(v),
            Err(e @ ClientError::NotRunning(_)) => die(e),
            Err(e) => {
                eprintln!("Error: {e}");
                None
            }
        }
    };
    let json = cli.format == Format::Json;
    match cli.cmd {
        Cmd::Ping => print_or(json, &go(Request::Ping), |v| {
            let n = v["workers"].as_u64();
            println!("vswitchd {} ({} worker{})", s(&v["version"]), s(&v["workers"]), if n == Some(1) { "" } else { "s" })
        }),
        Cmd::Network(NetworkCmd::Create { name, subnet, gateway, ip_range, mtu, mac_table_size, mac_aging, internal, icc, ipv6, driver, encap, vni, encrypted }) => {
            let (driver, encap) = if encrypted {
                if encap.as_deref().is_some_and(|e| e != "mesh") {
                    eprintln!("Error: --encrypted: carried by the mesh, not --encap {}", encap.unwrap_or_default());
                    std::process::exit(2);
                }
                if driver.as_deref().is_some_and(|d| d != "overlay") {
                    eprintln!("Error: --encrypted: only for --driver overlay");
                    std::process::exit(2);
                }
                (Some("overlay".to_string()), Some("mesh".to_string()))
            } else {
                (driver, encap)
            };
            let split = |v: Vec<String>, what: &str| -> (Option<String>, Option<String>) {
                let (v6, v4): (Vec<String>, Vec<String>) = v.into_iter().partition(|s| s.contains(':'));
                if v4.len() > 1 || v6.len() > 1 {
                    eprintln!("Error: --{what}: at most one IPv4 and one IPv6 value");
                    std::process::exit(2);
                }
                (v4.into_iter().next(), v6.into_iter().next())
            };
            let (subnet, subnet6) = split(subnet, "subnet");
            let (gateway, gateway6) = split(gateway, "gateway");
            let (ip_range, ip_range6) = split(ip_range, "ip-range");
            let v = go(Request::NetworkCreate(NetworkCreate {
                name,
                subnet,
                gateway,
                ipv6,
                subnet6,
                gateway6,
                driver,
                encap,
                vni,
                ip_range,
                ip_range6,
                mtu,
                mac_table_size,
                mac_aging,
                internal,
                icc,
            }));
            print_or(json, &v, |v| println!("{}", s(&v["id"])));
        }
        Cmd::Network(NetworkCmd::Ls { quiet }) => {
            let v = go(Request::NetworkLs);
            print_or(json, &v, |v| {
                if quiet {
                    rows(v).iter().for_each(|n| println!("{}", s(&n["name"])));
                    return;
                }
                table(
                    &["NETWORK ID", "NAME", "DRIVER", "SUBNET", "GATEWAY", "ENDPOINTS", "PORTS"],
                    rows(v).iter().map(|n| {
                        vec![
                            short(&n["id"]),
                            s(&n["name"]),
                            s(&n["driver"]),
                            match n["range"].as_str() {
                                // A routed overlay: the cluster's range, this host's share.
                                Some(r) => format!("{r} (here {})", s(&n["subnet"])),
                                None => dual(&n["subnet"], &n["subnet6"]),
                            },
                            dual(&n["gateway"], &n["gateway6"]),
                            s(&n["endpoints"]),
                            s(&n["ports"]),
                        ]
                    }),
                )
            });
        }
        Cmd::Network(NetworkCmd::Inspect { names }) => {
            // Like `docker network inspect A B`: the ones found, an error for each other.
            let mut all = Vec::new();
            let mut failed = false;
            for name in names {
                match try_go(Request::NetworkInspect { name }) {
                    Some(Value::Array(a)) => all.extend(a),
                    Some(_) => {}
                    None => failed = true,
                }
            }
            println!("{}", serde_json::to_string_pretty(&Value::Array(all)).unwrap_or_default());
            exit_if(failed);
        }
        Cmd::Network(NetworkCmd::Rm { names, force }) => {
            let mut failed = false;
            for name in names {
                match try_go(Request::NetworkRm { name: name.clone(), force }) {
                    Some(_) => println!("{name}"),
                    None => failed = true,
                }
            }
            exit_if(failed);
        }
        Cmd::Network(NetworkCmd::Prune { .. }) => {
            let v = go(Request::NetworkPrune);
            print_or(json, &v, |v| {
                let removed = rows(&v["removed"]);
                if !removed.is_empty() {
                    println!("Deleted Networks:");
                    removed.iter().for_each(|n| println!("{}", s(n)));
                }
            });
        }
        Cmd::Sandbox(SandboxCmd::Create { name, hostname, dns, dns_search, dns_option }) => {
            let v = go(Request::SandboxCreate(control::api::SandboxCreate { name, hostname, dns, dns_search, dns_option }));
            print_or(json, &v, |v| println!("{}", s(&v["name"])));
        }
        Cmd::Sandbox(SandboxCmd::Rm { names }) => {
            let mut failed = false;
            for name in names {
                match try_go(Request::SandboxRm { name: name.clone() }) {
                    Some(_) => println!("{name}"),
                    None => failed = true,
                }
            }
            exit_if(failed);
        }
        Cmd::Sandbox(SandboxCmd::Ls) => {
            let v = go(Request::SandboxLs);
            print_or(json, &v, |v| {
                table(
                    &["NAME", "SANDBOX ID", "NETWORKS"],
                    rows(v).iter().map(|sb| {
                        let nets: Vec<String> = rows(&sb["endpoints"])
                            .iter()
                            .map(|e| format!("{}:{}={}", s(&e["network"]), s(&e["interface"]), dual(&e["ipv4_address"], &e["ipv6_address"])))
                            .collect();
                        vec![s(&sb["name"]), short(&sb["id"]), nets.join(",")]
                    }),
                )
            });
        }
        Cmd::Connect { network, sandbox, ip, mac, port_kind, publish, aliases, ip6 } => {
            let v = go(Request::Connect(Connect { network, sandbox, ip, mac, kind: port_kind, publish, aliases, ip6 }));
            print_or(json, &v, |v| {
                let v6 = v["ipv6_address"].as_str().map(|a| format!(" {a}")).unwrap_or_default();
                println!("{} {} {} {} {}{v6}", s(&v["sandbox"]), s(&v["interface"]), s(&v["ipv4_address"]), s(&v["mac_address"]), s(&v["kind"]))
            });
        }
        Cmd::Disconnect { network, sandbox } => {
            go(Request::Disconnect { network, sandbox });
        }
        Cmd::Port(PortArgs { cmd: None, sandbox: Some(sandbox) }) => {
            let v = go(Request::PortMappings { sandbox });
            print_or(json, &v, |v| rows(v).iter().for_each(|m| println!("{}", s(&m["text"]))));
        }
        Cmd::Port(PortArgs { cmd: None, sandbox: None }) => {
            eprintln!("Error: port: give a SANDBOX, or one of add, rm, ls");
            std::process::exit(2);
        }
        Cmd::Port(PortArgs { cmd: Some(PortCmd::Add { network, iface, kind, dhcp, ip, dns }), .. }) => {
            let v = go(Request::PortAdd(control::api::PortAdd { network, ifname: iface, kind, dhcp, ip, dns }));
            print_or(json, &v, |v| match v["dhcp"]["ip"].as_str() {
                Some(ip) => println!("{} {ip}", s(&v["interface"])),
                None => println!("{}", s(&v["interface"])),
            });
        }
        Cmd::Port(PortArgs { cmd: Some(PortCmd::Rm { network, iface }), .. }) => {
            go(Request::PortRm { network, ifname: iface });
        }
        Cmd::Port(PortArgs { cmd: Some(PortCmd::Ls), .. }) => {
            let v = go(Request::PortLs);
            print_or(json, &v, |v| {
                table(
                    &["PORT", "INTERFACE", "TYPE", "NETWORK", "STATE", "DHCP ADDRESS", "NETNS"],
                    rows(v).iter().map(|p| {
                        let st = match (p["attached"].as_bool(), p["carrier"].as_bool()) {
                            (Some(true), Some(false)) => "no-carrier",
                            (Some(true), _) => "up",
                            _ => "down",
                        };
                        let addr = p["dhcp"]["ip"].as_str().unwrap_or("-").to_string();
                        // Where a switch-made TAP moved by hand is now ("-": here).
                        let ns = p["netns"].as_str().unwrap_or("-").to_string();
                        vec![s(&p["port_id"]), s(&p["interface"]), s(&p["type"]), s(&p["network"]), st.to_string(), addr, ns]
                    }),
                )
            });
        }
        Cmd::Fdb(FdbCmd::Show { network }) => {
            let v = go(Request::FdbShow { network });
            print_or(json, &v, |v| {
                table(&["PORT", "MAC", "AGE"], rows(v).iter().map(|e| vec![s(&e["port"]), s(&e["mac"]), s(&e["age"])]))
            });
        }
        Cmd::Conntrack(ConntrackCmd::Ls) => {
            let v = go(Request::ConntrackLs);
            print_or(json, &v, |v| {
                table(
                    &["PROTO", "ORIGINAL", "REPLY", "STATE", "NAT", "EXPIRES"],
                    rows(v).iter().map(|c| {
                        let nat = match (c["snat"].as_bool(), c["dnat"].as_bool()) {
                            (Some(true), Some(true)) => "snat+dnat",
                            (Some(true), _) => "snat",
                            (_, Some(true)) => "dnat",
                            _ => "-",
                        };
                        vec![s(&c["proto"]), s(&c["orig"]), s(&c["reply"]), ct_state(&c["state"]), nat.to_string(), s(&c["expires_in"])]
                    }),
                )
            });
        }
        Cmd::Conntrack(ConntrackCmd::Flush) => {
            go(Request::ConntrackFlush);
        }
        Cmd::Mesh(MeshCmd::Id) => print_or(json, &go(Request::MeshId), |v| println!("{}", s(&v["key"]))),
        Cmd::Mesh(MeshCmd::Connect { addr }) => print_or(json, &go(Request::MeshConnect { addr }), |v| println!("connecting to {}", s(&v["connecting"]))),
        Cmd::Mesh(MeshCmd::Forget { addr }) => print_or(json, &go(Request::MeshForget { addr }), |v| println!("no longer asking {}", s(&v["forgotten"]))),
        Cmd::Mesh(MeshCmd::Peers) => {
            let v = go(Request::MeshPeers);
            print_or(json, &v, |v| {
                println!("this host: {} listening on {}", s(&v["key"]), s(&v["listen"]));
                table(
                    &["PEER", "ADDRESS", "PATH", "SESSION", "HANDSHAKE", "RX BYTES", "TX BYTES", "DROPS"],
                    rows(&v["peers"]).iter().map(|p| {
                        vec![
                            s(&p["key"]),
                            s(&p["address"]),
                            s(&p["path"]),
                            match (p["session_up"].as_bool(), p["direct"].as_str()) {
                                (Some(true), Some("suspect")) => "suspect",
                                (Some(true), _) => "up",
                                _ => "down",
                            }
                            .to_string(),
                            p["last_handshake_secs_ago"].as_u64().map(|t| format!("{t}s ago")).unwrap_or_else(|| "never".into()),
                            s(&p["rx_bytes"]),
                            s(&p["tx_bytes"]),
                            s(&p["drops"]),
                        ]
                    })
                    // Members asked for by address that have not answered yet.
                    .chain(rows(&v["pending_members"]).iter().map(|m| {
                        vec!["?".into(), s(&m["address"]), format!("waiting for an answer ({} hellos sent)", m["hellos_sent"]), "-".into(), "never".into(), "0".into(), "0".into(), "0".into()]
                    })),
                );
                println!(
                    "\nhandshakes: {} accepted, {} refused; hellos refused: {}; frames through the agent: {} sent (workers send the rest), {} delivered, {} relayed, {} unroutable; {} unknown datagrams",
                    v["handshakes_accepted"], v["handshakes_refused"], v["hellos_refused"], v["sent"], v["delivered"], v["relayed"], v["relay_dropped"], v["unknown_dropped"]
                );
            });
        }
        Cmd::Stats { port } => {
            let filtered = port.is_some();
            let v = go(Request::Stats { port });
            print_or(json, &v, |v| {
                table(
                    &["PORT", "NETWORK", "TYPE", "RX PKTS", "RX BYTES", "RX DROP", "TX PKTS", "TX BYTES", "TX DROP"],
                    rows(&v["ports"]).iter().map(|p| {
                        let net = s(&p["network"]);
                        vec![
                            s(&p["port"]),
                            if net.is_empty() { "-".to_string() } else { net },
                            s(&p["type"]),
                            s(&p["rx_packets"]),
                            s(&p["rx_bytes"]),
                            s(&p["rx_dropped"]),
                            s(&p["tx_packets"]),
                            s(&p["tx_bytes"]),
                            s(&p["tx_dropped"]),
                        ]
                    }),
                );
                let nonzero = |m: &Value| -> Vec<String> {
                    m.as_object()
                        .map(|o| o.iter().filter(|(_, n)| n.as_u64().unwrap_or(0) > 0).map(|(k, n)| format!("{k}={n}")).collect())
                        .unwrap_or_default()
                };
                // With --port the rows are one port's, but drops, events and workers are
                // the whole switch's: say so, so that they do not read as that port's.
                let ind = if filtered {
                    println!("\nswitch-wide (all ports):");
                    "  "
                } else {
                    println!();
                    ""
                };
                let d = nonzero(&v["drops"]);
                println!("{ind}drops: {}", if d.is_empty() { "none".to_string() } else { d.join(" ") });
                println!("{ind}events: {}", nonzero(&v["events"]).join(" "));
                println!("{ind}workers: {} (rx packets per worker: {})", v["workers"], v["worker_rx_packets"]);
            });
        }
    }
}

/// Reports a failed request and exits: 3 when no daemon answers, 1 otherwise.
fn die(e: ClientError) -> ! {
    eprintln!("Error: {e}");
    std::process::exit(match e {
        ClientError::NotRunning(_) => 3,
        _ => 1,
    });
}

/// Exit status 1 after a multi-name command of which some name failed (each failure
/// already reported on stderr).
fn exit_if(failed: bool) {
    if failed {
        std::process::exit(1);
    }
}

/// An IPv4 value followed by its IPv6 counterpart when there is one: `10.80.0.0/24,fd00:80::/64`.
fn dual(v4: &Value, v6: &Value) -> String {
    match v6.as_str() {
        Some(a) if !a.is_empty() => format!("{},{a}", s(v4)),
        _ => s(v4),
    }
}

/// A connection's state as `conntrack -L` shows it: TCP states upper-case (`ESTABLISHED`,
/// `TIME_WAIT`), other protocols `[UNREPLIED]` or `REPLIED`. The daemon's JSON carries
/// the dataplane's own spelling (`Tcp(TimeWait)`, `Udp { replied: false }`); anything
/// else is shown as it comes.
fn ct_state(v: &Value) -> String {
    // `conntrack -L` brackets the state of a flow that has seen no reply.
    match v.as_str() {
        Some("UNREPLIED") => "[UNREPLIED]".into(),
        _ => s(v),
    }
}

fn print_or(json: bool, v: &Value, f: impl FnOnce(&Value)) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        f(v)
    }
}

fn rows(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn short(v: &Value) -> String {
    s(v).chars().take(12).collect()
}

fn table(head: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{:<width$}   ", c, width = w[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(head.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conntrack_states_read_like_conntrack_l() {
        let st = |x: &str| ct_state(&json!(x));
        assert_eq!(st("TIME_WAIT"), "TIME_WAIT");
        assert_eq!(st("UNREPLIED"), "[UNREPLIED]");
        assert_eq!(st("REPLIED"), "REPLIED");
        assert_eq!(ct_state(&Value::Null), "-");
    }

    #[test]
    fn dual_stack_values_join_with_a_comma() {
        assert_eq!(dual(&json!("10.80.0.0/24"), &json!("fd00:80::/64")), "10.80.0.0/24,fd00:80::/64");
        assert_eq!(dual(&json!("10.80.0.2"), &Value::Null), "10.80.0.2");
    }
}

//! The embedded DNS server of user-defined networks, as Docker's: every container with an
//! endpoint on one gets UDP and TCP sockets bound to `127.0.0.11:53` *inside its network
//! namespace* (opened by a thread that joined the namespace; a socket keeps the namespace it
//! was made in), served by tasks of the daemon. It answers the names of the containers on
//! the same networks (container name, aliases, short id; several containers with one alias,
//! e.g. a compose service with `--scale`, all answer, shuffled per query for round robin),
//! and forwards every other name, from the host's namespace, to the container's `--dns`
//! servers or the host's resolvers; on `--internal` networks it answers NXDOMAIN instead.
//! Messages are parsed and built with `hickory-proto` (RFC 1035).
//!
//! The sockets die with the daemon; a restarted daemon opens them again for every
//! container still attached ([`super::NetworkManager::restore`]), so names resolve again
//! once it is up (queries in between time out and are retried by the stub resolver).

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{RData, Record as DnsRecord, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use super::dns_holder::Holders;
use super::state::State;
use crate::error::{Result, RuntimeError};

/// The address Docker's embedded DNS listens on inside each container.
pub const EMBEDDED_DNS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// How long one forwarder may take before the next is asked (and, after the last,
/// SERVFAIL is answered): a stub resolver must never hang on us.
const FORWARD_TIMEOUT: Duration = Duration::from_millis(900);
/// TTL of local answers: containers come and go, so resolvers should not cache them long.
const LOCAL_TTL: u32 = 0;

/// Which container sees which names.
#[derive(Debug, Default)]
pub(crate) struct View {
    /// Container id -> what it may resolve and where its other queries go.
    clients: HashMap<String, Client>,
    /// Network id -> (lower-cased names, address) of every endpoint on it.
    endpoints: HashMap<String, Vec<(Vec<String>, Ipv4Addr)>>,
    internal: HashSet<String>,
}

#[derive(Debug, Default)]
struct Client {
    networks: Vec<String>,
    forwarders: Vec<Ipv4Addr>,
    /// Lower-cased link alias -> lower-cased target name.
    links: HashMap<String, String>,
}

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A name of a container on one of the client's networks (maybe empty for a type
    /// other than A: the name exists, so NOERROR without records).
    Local(Vec<Ipv4Addr>),
    /// Not ours, and the client may not reach the outside.
    NxDomain,
    /// Not ours: ask these servers.
    Forward(Vec<Ipv4Addr>),
}

impl View {
    pub fn from_state(state: &State) -> Self {
        let mut v = View::default();
        for net in state.networks.values().filter(|n| n.internal) {
            v.internal.insert(net.id.clone());
        }
        for (id, r) in &state.containers {
            if r.endpoints.is_empty() {
                continue;
            }
            let mut client = Client {
                forwarders: r.dns.clone(),
                ..Client::default()
            };
            for e in &r.endpoints {
                client.networks.push(e.att.network_id.clone());
                for (alias, target) in &e.att.links {
                    let target = target.trim_start_matches('/').to_ascii_lowercase();
                    client.links.insert(alias.to_ascii_lowercase(), target);
                }
                if r.unpublished {
                    continue; // not running: no names, as Docker's
                }
                let names = e.att.names.iter().map(|n| n.to_ascii_lowercase()).collect();
                v.endpoints
                    .entry(e.att.network_id.clone())
                    .or_default()
                    .push((names, e.att.ip));
            }
            v.clients.insert(id.clone(), client);
        }
        v
    }

    /// The name of the running container with address `ip` on one of `client`'s networks
    /// (a PTR answer).
    pub fn reverse(&self, client: &str, ip: Ipv4Addr) -> Option<String> {
        let c = self.clients.get(client)?;
        c.networks
            .iter()
            .flat_map(|n| self.endpoints.get(n).into_iter().flatten())
            .find(|(_, addr)| *addr == ip)
            .and_then(|(names, _)| names.first().cloned())
    }

    /// Resolves `name` (no trailing dot needed, any case) for container `client`.
    pub fn lookup(&self, client: &str, name: &str, host_servers: &[Ipv4Addr]) -> Answer {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let Some(c) = self.clients.get(client) else {
            return Answer::NxDomain;
        };
        let name = c.links.get(&name).cloned().unwrap_or(name);
        let mut found = false;
        let mut ips = Vec::new();
        for net in &c.networks {
            for (names, ip) in self.endpoints.get(net).into_iter().flatten() {
                if names.contains(&name) {
                    found = true;
                    if !ips.contains(ip) {
                        ips.push(*ip);
                    }
                }
            }
        }
        if found {
            return Answer::Local(ips);
        }
        if c.networks.iter().all(|n| self.internal.contains(n)) {
            return Answer::NxDomain;
        }
        let servers = if c.forwarders.is_empty() {
            host_servers.to_vec()
        } else {
            c.forwarders.clone()
        };
        if servers.is_empty() {
            Answer::NxDomain
        } else {
            Answer::Forward(servers)
        }
    }
}

/// The servers of every container, and the names they answer.
pub(crate) struct Dns {
    view: Arc<RwLock<View>>,
    host_resolv_conf: PathBuf,
    servers: Mutex<HashMap<String, Vec<JoinHandle<()>>>>,
    /// Processes that keep the sockets open across a daemon restart (none in tests that
    /// run the manager without process helpers).
    holders: Option<Holders>,
}

impl Dns {
    pub fn new(host_resolv_conf: PathBuf, holders: Option<Holders>) -> Self {
        Self {
            view: Arc::new(RwLock::new(View::default())),
            host_resolv_conf,
            servers: Mutex::new(HashMap::new()),
            holders,
        }
    }

    /// Kills the socket holders of containers other than `keep` (after a restore).
    pub fn stop_other_holders(&self, keep: &[String]) {
        if let Some(h) = &self.holders {
            h.stop_others(keep);
        }
    }

    /// Makes the answers follow the state (after every change of it).
    pub fn refresh(&self, state: &State) {
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = View::from_state(state);
    }

    pub fn is_serving(&self, id: &str) -> bool {
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    /// Opens `127.0.0.11:53` (UDP and TCP) inside the namespace at `netns` and serves
    /// container `id` from it. Idempotent. Must be called inside a tokio runtime.
    pub async fn serve(&self, id: &str, netns: &Path) -> Result<()> {
        if self.is_serving(id) {
            return Ok(());
        }
        let err = |source| RuntimeError::Dns {
            id: id.to_string(),
            source,
        };
        // The previous daemon's sockets, with whatever queries arrived meanwhile; else new
        // ones, handed to a holder at once.
        let taken = self.holders.as_ref().and_then(|h| h.take_back(id));
        let (udp, tcp) = match taken {
            Some((u, t)) => {
                let udp = std::net::UdpSocket::from(u);
                let tcp = std::net::TcpListener::from(t);
                udp.set_nonblocking(true).map_err(err)?;
                tcp.set_nonblocking(true).map_err(err)?;
                (udp, tcp)
            }
            None => {
                let (udp, tcp) = open_in_netns(id, netns).await?;
                if let Some(h) = &self.holders {
                    if let Err(e) = h.start(id, &udp, &tcp) {
                        tracing::warn!(container = %id, "no holder for the DNS sockets (they will close with the daemon): {e}");
                    }
                }
                (udp, tcp)
            }
        };
        let udp = Arc::new(tokio::net::UdpSocket::from_std(udp).map_err(err)?);
        let tcp = tokio::net::TcpListener::from_std(tcp).map_err(err)?;
        let ctx = Arc::new(Ctx {
            client: id.to_string(),
            view: self.view.clone(),
            host_resolv_conf: self.host_resolv_conf.clone(),
        });
        let udp_task = tokio::spawn(serve_udp(udp, ctx.clone()));
        let tcp_task = tokio::spawn(serve_tcp(tcp, ctx));
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), vec![udp_task, tcp_task]);
        Ok(())
    }

    /// Closes the container's sockets (before its namespace goes).
    pub fn stop(&self, id: &str) {
        let tasks = self
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        for t in tasks.into_iter().flatten() {
            t.abort();
        }
        if let Some(h) = &self.holders {
            h.stop(id);
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let servers = std::mem::take(self.servers.get_mut().unwrap_or_else(|e| e.into_inner()));
        for t in servers.into_values().flatten() {
            t.abort();
        }
    }
}

async fn open_in_netns(
    id: &str,
    netns: &Path,
) -> Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let path = netns.to_path_buf();
    let owner = id.to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| {
            super::netns::join_netns(&path)?;
            let err = |source| RuntimeError::Dns {
                id: owner.clone(),
                source,
            };
            let addr = SocketAddr::from((EMBEDDED_DNS, 53));
            let udp = std::net::UdpSocket::bind(addr).map_err(err)?;
            let tcp = std::net::TcpListener::bind(addr).map_err(err)?;
            udp.set_nonblocking(true).map_err(err)?;
            tcp.set_nonblocking(true).map_err(err)?;
            Ok((udp, tcp))
        })();
        let _ = tx.send(result);
    });
    rx.await.unwrap_or_else(|_| {
        Err(RuntimeError::Dns {
            id: id.to_string(),
            source: std::io::Error::other("the thread opening the sockets died"),
        })
    })
}

struct Ctx {
    client: String,
    view: Arc<RwLock<View>>,
    host_resolv_conf: PathBuf,
}

async fn serve_udp(sock: Arc<tokio::net::UdpSocket>, ctx: Arc<Ctx>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(container = %ctx.client, "embedded DNS: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let (sock, ctx) = (sock.clone(), ctx.clone());
        tokio::spawn(async move {
            if let Some(reply) = handle(&ctx, &query).await {
                let _ = sock.send_to(&reply, peer).await;
            }
        });
    }
}

async fn serve_tcp(listener: tokio::net::TcpListener, ctx: Arc<Ctx>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            // RFC 1035 4.2.2: each message is prefixed with its length (2 bytes).
            loop {
                let Ok(len) = conn.read_u16().await else {
                    return;
                };
                let mut query = vec![0u8; usize::from(len)];
                if conn.read_exact(&mut query).await.is_err() {
                    return;
                }
                let Some(reply) = handle(&ctx, &query).await else {
                    return;
                };
                let Ok(len) = u16::try_from(reply.len()) else {
                    return;
                };
                if conn.write_u16(len).await.is_err() || conn.write_all(&reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The reply to one query message (`None`: not a query we can parse; dropped, as a
/// resolver would).
async fn handle(ctx: &Ctx, query: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    if msg.message_type() != MessageType::Query {
        return None;
    }
    let Some(q) = msg.queries().first().cloned() else {
        return reply(&msg, ResponseCode::FormErr, Vec::new());
    };
    if msg.op_code() != OpCode::Query {
        return reply(&msg, ResponseCode::NotImp, Vec::new());
    }
    if q.query_type() == RecordType::PTR {
        let found = reverse_ip(&q.name().to_ascii()).and_then(|ip| {
            ctx.view
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .reverse(&ctx.client, ip)
        });
        if let Some(name) =
            found.and_then(|n| hickory_proto::rr::Name::from_ascii(format!("{n}.")).ok())
        {
            let rec = DnsRecord::from_rdata(q.name().clone(), LOCAL_TTL, RData::PTR(PTR(name)));
            return reply(&msg, ResponseCode::NoError, vec![rec]);
        }
    }
    let host = std::fs::read_to_string(&ctx.host_resolv_conf).unwrap_or_default();
    let host_servers = super::files::host_nameservers(&host);
    let answer = ctx.view.read().unwrap_or_else(|e| e.into_inner()).lookup(
        &ctx.client,
        &q.name().to_ascii(),
        &host_servers,
    );
    match answer {
        Answer::Local(mut ips) => {
            let records = if q.query_type() == RecordType::A {
                shuffle(&mut ips);
                ips.into_iter()
                    .map(|ip| DnsRecord::from_rdata(q.name().clone(), LOCAL_TTL, RData::A(A(ip))))
                    .collect()
            } else {
                Vec::new()
            };
            reply(&msg, ResponseCode::NoError, records)
        }
        Answer::NxDomain => reply(&msg, ResponseCode::NXDomain, Vec::new()),
        Answer::Forward(servers) => match forward(query, msg.id(), &servers).await {
            Some(r) => Some(r),
            None => reply(&msg, ResponseCode::ServFail, Vec::new()),
        },
    }
}

fn reply(q: &Message, code: ResponseCode, answers: Vec<DnsRecord>) -> Option<Vec<u8>> {
    let mut r = Message::new();
    r.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code)
        .add_queries(q.queries().to_vec())
        .add_answers(answers);
    r.to_vec().ok()
}

/// Asks each server in turn over UDP (from the host's namespace) and relays the first
/// reply with the query's id.
async fn forward(query: &[u8], id: u16, servers: &[Ipv4Addr]) -> Option<Vec<u8>> {
    let sock = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .ok()?;
    let mut buf = vec![0u8; 65535];
    for server in servers {
        if sock.send_to(query, (*server, 53)).await.is_err() {
            continue;
        }
        let got = tokio::time::timeout(FORWARD_TIMEOUT, async {
            loop {
                let (n, from) = sock.recv_from(&mut buf).await.ok()?;
                if from.ip() == std::net::IpAddr::V4(*server)
                    && n >= 2
                    && u16::from_be_bytes([buf[0], buf[1]]) == id
                {
                    return Some(buf[..n].to_vec());
                }
            }
        })
        .await;
        if let Ok(Some(reply)) = got {
            return Some(reply);
        }
    }
    None
}

/// `d.c.b.a.in-addr.arpa.` as `a.b.c.d`.
fn reverse_ip(name: &str) -> Option<Ipv4Addr> {
    let rest = name
        .trim_end_matches('.')
        .to_ascii_lowercase()
        .strip_suffix(".in-addr.arpa")?
        .to_string();
    let mut octets: Vec<u8> = rest
        .split('.')
        .map(|o| o.parse().ok())
        .collect::<Option<_>>()?;
    if octets.len() != 4 {
        return None;
    }
    octets.reverse();
    Some(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
}

/// Round robin without a shared counter: a fresh order per answer, as Docker's.
fn shuffle(ips: &mut [Ipv4Addr]) {
    use std::hash::{BuildHasher, Hasher};
    for i in (1..ips.len()).rev() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        let j = (h.finish() % (i as u64 + 1)) as usize;
        ips.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::{EndpointRecord, Record};
    use super::super::{BridgeNetwork, EndpointAttachment, NetworkMode};
    use super::*;

    fn endpoint(net: &str, ip: [u8; 4], names: &[&str]) -> EndpointRecord {
        EndpointRecord {
            veth: "v".into(),
            bridge: "br".into(),
            subnet: "10.0.0.0/8".parse().unwrap(),
            internal: false,
            att: EndpointAttachment {
                network_id: net.into(),
                ifname: "eth0".into(),
                ip: ip.into(),
                prefix_len: 24,
                gateway: Ipv4Addr::new(10, 0, 0, 1),
                mac: String::new(),
                names: names.iter().map(|s| s.to_string()).collect(),
                links: vec![("db".into(), "/p_web_2".into())],
            },
        }
    }

    fn container(eps: Vec<EndpointRecord>, dns: Vec<Ipv4Addr>) -> Record {
        Record {
            mode: NetworkMode::None,
            hostname: "h".into(),
            netns_path: None,
            ip: None,
            veth: None,
            ports: vec![],
            unpublished: false,
            endpoints: eps,
            dns,
        }
    }

    #[test]
    fn names_resolve_only_on_shared_networks_and_scale_round_robin() {
        let mut s = State::default();
        s.networks.insert(
            "internal".into(),
            BridgeNetwork {
                id: "internal".into(),
                bridge: "br-i".into(),
                subnet: "10.1.0.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 1, 0, 1),
                internal: true,
            },
        );
        let c = |eps, dns| container(eps, dns);
        s.containers.insert(
            "web1".into(),
            c(
                vec![endpoint("a", [10, 0, 0, 2], &["p_web_1", "web"])],
                vec![],
            ),
        );
        s.containers.insert(
            "web2".into(),
            c(
                vec![endpoint("a", [10, 0, 0, 3], &["p_web_2", "Web"])],
                vec![],
            ),
        );
        s.containers.insert(
            "other".into(),
            c(
                vec![endpoint("b", [10, 2, 0, 2], &["other"])],
                vec![Ipv4Addr::new(127, 0, 0, 99)],
            ),
        );
        s.containers.insert(
            "locked".into(),
            c(
                vec![endpoint("internal", [10, 1, 0, 2], &["locked"])],
                vec![],
            ),
        );
        let v = View::from_state(&s);
        let host = [Ipv4Addr::new(1, 1, 1, 1)];
        let Answer::Local(mut ips) = v.lookup("web1", "WEB.", &host) else {
            panic!()
        };
        ips.sort();
        assert_eq!(
            ips,
            vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)]
        );
        assert_eq!(
            v.lookup("web1", "p_web_2", &host),
            Answer::Local(vec![Ipv4Addr::new(10, 0, 0, 3)])
        );
        // Reverse lookups of a container's address give its first name.
        assert_eq!(
            v.reverse("web1", Ipv4Addr::new(10, 0, 0, 3)).as_deref(),
            Some("p_web_2")
        );
        assert_eq!(v.reverse("other", Ipv4Addr::new(10, 0, 0, 3)), None);
        assert_eq!(
            reverse_ip("3.0.0.10.in-addr.arpa."),
            Some(Ipv4Addr::new(10, 0, 0, 3))
        );
        assert_eq!(reverse_ip("example.com."), None);
        // A link's alias resolves to its target for the linking container.
        assert_eq!(
            v.lookup("web1", "db", &host),
            Answer::Local(vec![Ipv4Addr::new(10, 0, 0, 3)])
        );
        // Another network's names are not visible: forwarded like any other name.
        assert_eq!(
            v.lookup("web1", "other", &host),
            Answer::Forward(host.to_vec())
        );
        // --dns is where other names go.
        assert_eq!(
            v.lookup("other", "example.com", &host),
            Answer::Forward(vec![Ipv4Addr::new(127, 0, 0, 99)])
        );
        // Internal networks never forward.
        assert_eq!(v.lookup("locked", "example.com", &host), Answer::NxDomain);
        assert_eq!(
            v.lookup("locked", "locked", &host),
            Answer::Local(vec![Ipv4Addr::new(10, 1, 0, 2)])
        );
    }

    #[test]
    fn replies_echo_the_query() {
        let mut q = Message::new();
        q.set_id(7)
            .set_recursion_desired(true)
            .add_query(hickory_proto::op::Query::query(
                "web.".parse().unwrap(),
                RecordType::A,
            ));
        let bytes = reply(
            &q,
            ResponseCode::NoError,
            vec![DnsRecord::from_rdata(
                "web.".parse().unwrap(),
                0,
                RData::A(A(Ipv4Addr::new(10, 0, 0, 2))),
            )],
        )
        .unwrap();
        let r = Message::from_vec(&bytes).unwrap();
        assert_eq!(r.id(), 7);
        assert_eq!(r.message_type(), MessageType::Response);
        assert_eq!(r.answers().len(), 1);
        assert_eq!(r.queries()[0].name().to_ascii(), "web.");
    }
}

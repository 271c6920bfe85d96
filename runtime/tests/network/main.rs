//! Container networking on the real kernel (root): namespaces, veths, the bridge, NAT and
//! published ports. "Containers" are busybox processes in the namespaces the manager
//! prepares. Traffic goes only to 127.0.0.1, the containers' own addresses and a "test
//! host" namespace each test makes itself. Each test has its own bridge, subnet, chain
//! prefix and directories (so they run in parallel), and a guard that removes everything
//! by name even when the test fails.

mod fixture;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fixture::*;
use skiff_runtime::network::{parse_publish, NetworkMode, Protocol};
use skiff_runtime::RuntimeError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_containers_reach_each_other_and_release_cleans_up() {
    skiff_tests::require!("bridge_containers_reach_each_other", unavailable());
    let fx = Fixture::new(1, 24);
    let mgr = fx.manager().await;
    let a = mgr
        .prepare(fx.request("a", NetworkMode::Bridge, vec![]))
        .await
        .unwrap();
    let b = mgr
        .prepare(fx.request("b", NetworkMode::Bridge, vec![]))
        .await
        .unwrap();
    let (ip_a, ip_b) = (a.ip.unwrap(), b.ip.unwrap());
    assert_ne!(ip_a, ip_b);
    assert!(fx.config.subnet.contains(ip_a) && fx.config.subnet.contains(ip_b));
    assert_eq!(a.gateway, Some(Ipv4Addr::new(172, 31, 1, 1)));
    assert!(a.hosts.contains(&format!("{ip_a}\ta\n")));

    // Inside: eth0 with the address and MAC, lo up, default route via the gateway.
    let addrs = String::from_utf8(
        in_ns(ns_of(&a), &["ip", "-4", "-o", "addr"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        addrs.contains(&format!("eth0    inet {ip_a}/24"))
            || addrs.contains(&format!("inet {ip_a}/24")),
        "{addrs}"
    );
    assert!(
        addrs.contains("lo    inet 127.0.0.1/8") || addrs.contains("inet 127.0.0.1/8"),
        "{addrs}"
    );
    let link = String::from_utf8(
        in_ns(ns_of(&a), &["ip", "-o", "link", "show", "eth0"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(link.contains(a.mac.as_deref().unwrap()), "{link}");
    let routes =
        String::from_utf8(in_ns(ns_of(&a), &["ip", "route"]).output().unwrap().stdout).unwrap();
    assert!(
        routes.contains("default via 172.31.1.1 dev eth0"),
        "{routes}"
    );
    assert_eq!(fx.veths_on_bridge().lines().count(), 2);

    for (from, to) in [(&a, ip_b), (&b, ip_a)] {
        let out = in_ns(
            ns_of(from),
            &["busybox", "ping", "-c", "1", "-W", "2", &to.to_string()],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "ping {to}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    mgr.release(&a.container_id).await.unwrap();
    mgr.release(&b.container_id).await.unwrap();
    mgr.release(&b.container_id).await.unwrap(); // idempotent
    fx.assert_only_bridge_left();
    assert!(!ns_of(&a).exists());
    // The address is free again (round robin moves on, but nothing is leaked).
    assert!(mgr.attached().await.is_empty());
    mgr.teardown().await.unwrap();
    assert!(!fx.bridge_exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_nat_shows_host_address() {
    skiff_tests::require!("outbound_nat_shows_host_address", unavailable());
    let mut fx = Fixture::new(2, 24);
    let (th_ns, th_ip) = fx.add_test_host();
    let mgr = fx.manager().await;
    let c = mgr
        .prepare(fx.request("c", NetworkMode::Bridge, vec![]))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );

    let listener = std::thread::spawn({
        let th_ns = th_ns.clone();
        move || {
            on_thread_in(th_ns, move || {
                let l = TcpListener::bind((th_ip, 9000)).unwrap();
                l.set_nonblocking(true).unwrap();
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    match l.accept() {
                        Ok((mut s, peer)) => {
                            let mut got = String::new();
                            s.set_nonblocking(false).unwrap();
                            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                            let _ = s.read_to_string(&mut got);
                            return Some((peer, got));
                        }
                        Err(_) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        Err(_) => return None,
                    }
                }
            })
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut nc = in_ns(
        ns_of(&c),
        &["busybox", "nc", "-w", "3", &th_ip.to_string(), "9000"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    nc.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let nc = Proc(nc);
    let (peer, got) = listener
        .join()
        .unwrap()
        .expect("no connection reached the test host");
    drop(nc);
    assert_eq!(got, "hello\n");
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(fx.host_gateway_on_test_link()),
        "source was not masqueraded"
    );

    mgr.release(&c.container_id).await.unwrap();
    fx.assert_only_bridge_left();
    mgr.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_port_answers_on_loopback_and_from_other_hosts() {
    skiff_tests::require!("published_port_answers", unavailable());
    let mut fx = Fixture::new(3, 24);
    let (th_ns, _) = fx.add_test_host();
    let root = web_root(fx.dir.path());
    let udp_port = free_udp_port();
    let mut ports = parse_publish("80").unwrap();
    ports.extend(parse_publish(&format!("{udp_port}:53/udp")).unwrap());
    let mgr = fx.manager().await;
    let c = mgr
        .prepare(fx.request("web", NetworkMode::Bridge, ports))
        .await
        .unwrap();
    // Planned at prepare, bound at the container's start.
    mgr.publish(&c.container_id).await.unwrap();
    let (port, udp) = (c.ports[0], c.ports[1]);
    assert_ne!(port.host_port, 0, "a free host port is chosen for -p 80");
    assert_eq!(
        (udp.protocol, udp.host_port, udp.container_port),
        (Protocol::Udp, udp_port, 53)
    );
    fx.start_httpd(ns_of(&c), &root);
    let echo = udp_echo_in(ns_of(&c).to_path_buf(), 53, 2);

    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, port.host_port));
    wait_until("httpd behind 127.0.0.1", || {
        http_get(local, "/")
            .map(|b| b.contains("hello from the container"))
            .unwrap_or(false)
    });
    // From the host itself the userland proxy answers (the container sees the gateway).
    let body = http_get(local, "/cgi-bin/peer").unwrap();
    assert!(
        body.contains("172.31.3.1]") || body.contains("peer=172.31.3.1\n"),
        "{body}"
    );

    // From another host, DNAT delivers it (the container sees the real client).
    let remote = SocketAddr::from((fx.host_gateway_on_test_link(), port.host_port));
    let body = on_thread_in(th_ns.clone(), move || http_get(remote, "/cgi-bin/peer")).unwrap();
    assert!(
        body.contains("10.250.3.2]") || body.contains("peer=10.250.3.2\n"),
        "{body}"
    );
    // From the host to one of its own non-loopback addresses: DNAT in OUTPUT.
    let own = SocketAddr::from((fx.host_gateway_on_test_link(), port.host_port));
    let before = fx.dnat_packets(port.host_port);
    let body = http_get(own, "/").unwrap();
    assert!(body.contains("hello from the container"), "{body}");
    assert!(
        fx.dnat_packets(port.host_port) > before,
        "not DNAT'd in OUTPUT"
    );

    // UDP both ways too: through the proxy from the host, by DNAT from the test host.
    let reply = udp_ask(SocketAddr::from((Ipv4Addr::LOCALHOST, udp_port)));
    assert_eq!(reply, "echo from 172.31.3.1");
    let remote_udp = SocketAddr::from((fx.host_gateway_on_test_link(), udp_port));
    let reply = on_thread_in(th_ns, move || udp_ask(remote_udp));
    assert_eq!(reply, "echo from 10.250.3.2");
    echo.join().unwrap();
    assert_eq!(
        fx.our_rules()
            .iter()
            .filter(|l| l.contains("DNAT --to-destination"))
            .count(),
        2
    );

    fx.stop_procs();
    mgr.release(&c.container_id).await.unwrap();
    fx.assert_only_bridge_left();
    // The host port is free at once (a next container may publish it right away).
    TcpListener::bind(("0.0.0.0", port.host_port)).expect("TCP port still held after release");
    UdpSocket::bind(("0.0.0.0", udp_port)).expect("UDP port still held after release");
    mgr.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_and_host_make_no_namespace() {
    skiff_tests::require!("none_and_host_make_no_namespace", unavailable());
    let fx = Fixture::new(4, 24);
    let mgr = fx.manager().await;
    let n = mgr
        .prepare(fx.request("n", NetworkMode::None, vec![]))
        .await
        .unwrap();
    assert_eq!(n.ip, None);
    // The container's init makes its own namespace (runtime isolation tests check it has
    // only loopback): the manager makes, records and leaves nothing.
    assert_eq!(n.netns_path, None);
    assert_eq!(n.mode, NetworkMode::None);
    assert!(fx.netns_files().is_empty());
    assert!(mgr.attached().await.is_empty());

    let h = mgr
        .prepare(fx.request("h", NetworkMode::Host, vec![]))
        .await
        .unwrap();
    assert_eq!(h.netns_path, None);
    assert_eq!(h.hosts, std::fs::read_to_string("/etc/hosts").unwrap());

    mgr.release(&n.container_id).await.unwrap();
    mgr.release(&h.container_id).await.unwrap();
    assert!(!fx.bridge_exists(), "none/host must not create the bridge");
    assert!(fx.our_rules().is_empty());
    mgr.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_port_is_refused_and_nothing_is_left() {
    skiff_tests::require!("busy_port_is_refused", unavailable());
    let fx = Fixture::new(5, 24);
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = holder.local_addr().unwrap().port();
    let mgr = fx.manager().await;
    let spec = parse_publish(&format!("{busy}:80")).unwrap();
    // As dockerd: a busy port does not fail the create (prepare), only the start (publish).
    let p = mgr
        .prepare(fx.request("p", NetworkMode::Bridge, spec))
        .await
        .unwrap();
    let err = mgr.publish(&p.container_id).await.unwrap_err();
    assert!(
        matches!(err, RuntimeError::PortInUse { port, .. } if port == busy),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("failed to bind host port for 0.0.0.0:{busy}/tcp: address already in use")
    );
    assert!(!fx
        .our_rules()
        .iter()
        .any(|l| l.contains("DNAT --to-destination")));
    // Once the port is free, the start binds it.
    drop(holder);
    mgr.publish(&p.container_id).await.unwrap();
    assert!(TcpListener::bind(("0.0.0.0", busy)).is_err(), "not bound");
    // Another container with the same port is created too; its start finds it allocated.
    let spec = parse_publish(&format!("127.0.0.1:{busy}:80")).unwrap();
    let p2 = mgr
        .prepare(fx.request("p2", NetworkMode::Bridge, spec))
        .await
        .unwrap();
    let err = mgr.publish(&p2.container_id).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Bind for 127.0.0.1:{busy} failed: port is already allocated")
    );
    mgr.release(&p2.container_id).await.unwrap();
    mgr.release(&p.container_id).await.unwrap();
    TcpListener::bind(("0.0.0.0", busy)).expect("the port was not freed");
    assert!(mgr.attached().await.is_empty());
    assert!(fx.netns_files().is_empty());
    let ok = mgr
        .prepare(fx.request("q", NetworkMode::Bridge, vec![]))
        .await
        .unwrap();
    // The same id twice is refused too.
    let again = mgr
        .prepare(fx.request("q", NetworkMode::Bridge, vec![]))
        .await
        .unwrap_err();
    assert!(matches!(
        again,
        RuntimeError::NetworkAttachmentExists { .. }
    ));
    mgr.release(&ok.container_id).await.unwrap();
    fx.assert_only_bridge_left();
    mgr.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_subnet_is_a_clear_error() {
    skiff_tests::require!("exhausted_subnet", unavailable());
    let fx = Fixture::new(6, 30); // one container address: .2
    let mgr = fx.manager().await;
    let first = mgr
        .prepare(fx.request("x", NetworkMode::Bridge, vec![]))
        .await
        .unwrap();
    let err = mgr
        .prepare(fx.request("y", NetworkMode::Bridge, vec![]))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::SubnetExhausted { .. }), "{err}");
    assert!(err.to_string().contains("172.31.6.0/30"), "{err}");
    assert_eq!(fx.netns_files(), vec![first.container_id.clone()]);
    mgr.release(&first.container_id).await.unwrap();
    let again = mgr
        .prepare(fx.request("y", NetworkMode::Bridge, vec![]))
        .await
        .unwrap();
    assert_eq!(again.ip, first.ip, "the released address is reusable");
    mgr.release(&again.container_id).await.unwrap();
    fx.assert_only_bridge_left();
    mgr.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_after_restart_rebuilds_without_duplicates() {
    skiff_tests::require!("restore_after_restart", unavailable());
    let mut fx = Fixture::new(7, 24);
    let root = web_root(fx.dir.path());
    let mgr = fx.manager().await;
    let c = mgr
        .prepare(fx.request(
            "r",
            NetworkMode::Bridge,
            parse_publish("127.0.0.1::80").unwrap(),
        ))
        .await
        .unwrap();
    mgr.publish(&c.container_id).await.unwrap();
    let gone = mgr
        .prepare(fx.request("gone", NetworkMode::Bridge, vec![]))
        .await
        .unwrap();
    fx.start_httpd(ns_of(&c), &root);
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, c.ports[0].host_port));
    wait_until("httpd", || http_get(local, "/").is_ok());
    let mut before = fx.our_rules();
    before.sort();

    // The daemon dies: its proxies go with it; rules, veths and namespaces stay.
    drop(mgr);
    wait_until("proxy to stop with the daemon", || {
        http_get(local, "/").is_err()
    });
    // Meanwhile one container's namespace vanished, and a stray tagged rule appeared.
    ok(&["umount", "-l", ns_of(&gone).to_str().unwrap()]);
    // ... and someone deleted the bridge (its veths stay, detached).
    ok(&["ip", "link", "del", &fx.config.bridge]);
    let stray_chain = format!("SKT{}-DNAT", fx.n);
    let stray_tag = format!("skiff:{}", fx.id("ghost"));
    ok(&[
        "iptables",
        "-w",
        "-t",
        "nat",
        "-A",
        &stray_chain,
        "-p",
        "tcp",
        "--dport",
        "1",
        "-j",
        "RETURN",
        "-m",
        "comment",
        "--comment",
        &stray_tag,
    ]);

    let mgr = fx.manager().await;
    assert_eq!(mgr.attached().await, vec![c.container_id.clone()]);
    let restored = mgr.attachment_of(&c.container_id).await.unwrap();
    assert_eq!(
        (restored.ip, &restored.ports, &restored.netns_path),
        (c.ip, &c.ports, &c.netns_path)
    );
    assert!(mgr.attachment_of(&gone.container_id).await.is_none());
    let mut after = fx.our_rules();
    after.sort();
    assert_eq!(after, before, "restore changed or doubled rules");
    wait_until("proxy after restore", || {
        http_get(local, "/")
            .map(|b| b.contains("hello"))
            .unwrap_or(false)
    });
    assert_eq!(fx.veths_on_bridge().lines().count(), 1);
    // Restoring twice in a row (a second restart) changes nothing either.
    drop(mgr);
    let mgr = fx.manager().await;
    let mut again = fx.our_rules();
    again.sort();
    assert_eq!(again, before);

    fx.stop_procs();
    mgr.release(&c.container_id).await.unwrap();
    fx.assert_only_bridge_left();
    mgr.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_prepare_undoes_what_it_made() {
    skiff_tests::require!("failed_prepare_undoes", unavailable());
    let fx = Fixture::new(8, 24);
    let port = TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mgr = fx.manager().await;
    let first = mgr
        .prepare(fx.request("ok", NetworkMode::Bridge, vec![]))
        .await
        .unwrap();
    // A stale file where the namespace should go makes the setup fail half-way: after
    // the ports are planned, the address reserved and the state written.
    let id = fx.id("bad");
    std::fs::write(fx.config.exec_root.join("netns").join(&id), b"").unwrap();
    let spec = parse_publish(&format!("{port}:80")).unwrap();
    let err = mgr
        .prepare(fx.request("bad", NetworkMode::Bridge, spec))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Io { .. }), "{err}");
    assert_eq!(mgr.attached().await, vec![first.container_id.clone()]);
    let state = std::fs::read_to_string(fx.config.state_dir.join("network.json")).unwrap();
    assert!(!state.contains(&id), "{state}");
    TcpListener::bind(("0.0.0.0", port)).expect("the port was not freed");
    assert!(!fx
        .our_rules()
        .iter()
        .any(|l| l.contains(&format!("skiff:{id}"))));
    assert_eq!(fx.veths_on_bridge().lines().count(), 1);
    // The same id works once the obstacle is gone.
    let again = mgr
        .prepare(fx.request("bad", NetworkMode::Bridge, vec![]))
        .await
        .unwrap();
    mgr.release(&again.container_id).await.unwrap();
    mgr.release(&first.container_id).await.unwrap();
    fx.assert_only_bridge_left();
    mgr.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_prepares_get_distinct_addresses() {
    skiff_tests::require!("concurrent_prepares", unavailable());
    let fx = Fixture::new(10, 24);
    let mgr = std::sync::Arc::new(fx.manager().await);
    let names: Vec<String> = (0..6).map(|i| format!("c{i}")).collect();
    let prepared = futures::future::join_all(names.iter().map(|n| {
        let mgr = mgr.clone();
        let req = fx.request(n, NetworkMode::Bridge, parse_publish("80").unwrap());
        tokio::spawn(async move { mgr.prepare(req).await })
    }))
    .await;
    let atts: Vec<_> = prepared.into_iter().map(|r| r.unwrap().unwrap()).collect();
    for a in &atts {
        mgr.publish(&a.container_id).await.unwrap();
    }
    let mut ips: Vec<_> = atts.iter().map(|a| a.ip.unwrap()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 6, "addresses collided: {ips:?}");
    assert_eq!(fx.veths_on_bridge().lines().count(), 6);
    let dnat = fx
        .our_rules()
        .iter()
        .filter(|l| l.contains("-j DNAT"))
        .count();
    assert_eq!(dnat, 6);
    let released = futures::future::join_all(atts.iter().map(|a| {
        let mgr = mgr.clone();
        let id = a.container_id.clone();
        tokio::spawn(async move { mgr.release(&id).await })
    }))
    .await;
    released.into_iter().for_each(|r| r.unwrap().unwrap());
    fx.assert_only_bridge_left();
    std::sync::Arc::try_unwrap(mgr)
        .ok()
        .expect("no other owner")
        .teardown()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_attachments_are_kept_as_spares_and_reused_whole() {
    skiff_tests::require!("released_attachments_are_kept_as_spares", unavailable());
    let mut fx = Fixture::new(11, 24);
    fx.config.spares = 1;
    let mgr = fx.manager().await;
    let a = mgr
        .prepare(fx.request("a", NetworkMode::Bridge, vec![]))
        .await
        .unwrap();
    let b = mgr
        .prepare(fx.request("b", NetworkMode::Bridge, vec![]))
        .await
        .unwrap();
    mgr.release(&a.container_id).await.unwrap();
    mgr.release(&b.container_id).await.unwrap();
    // One kept (room for one), the other deleted; no container rules either way.
    assert_eq!(fx.veths_on_bridge().lines().count(), 1);
    assert_eq!(fx.netns_files().len(), 1);
    assert!(mgr.attached().await.is_empty());
    let kept = if ns_of(&a).exists() { &a } else { &b };

    // The next container gets the kept namespace and address, working: the gateway answers.
    let port = parse_publish("8080").unwrap();
    let c = mgr
        .prepare(fx.request("c", NetworkMode::Bridge, port))
        .await
        .unwrap();
    assert_eq!((c.ip, &c.netns_path), (kept.ip, &kept.netns_path));
    mgr.publish(&c.container_id).await.unwrap();
    assert!(c.hosts.contains(&format!("{}\tc\n", c.ip.unwrap())));
    let gw = c.gateway.unwrap().to_string();
    let ping = in_ns(ns_of(&c), &["busybox", "ping", "-c", "1", "-W", "2", &gw])
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");
    assert!(fx
        .our_rules()
        .iter()
        .any(|l| l.contains(&format!("skiff:{}", c.container_id))));
    // With no spare left, the next container gets an attachment of its own.
    let d = mgr
        .prepare(fx.request("d", NetworkMode::Bridge, vec![]))
        .await
        .unwrap();
    assert_ne!(d.ip, c.ip);

    // A spare whose namespace vanished (e.g. a reboot) is dropped, not handed out.
    mgr.release(&c.container_id).await.unwrap();
    assert!(!fx
        .our_rules()
        .iter()
        .any(|l| l.contains(&format!("skiff:{}", c.container_id))));
    ok(&["umount", "-l", ns_of(&c).to_str().unwrap()]);
    let e = mgr
        .prepare(fx.request("e", NetworkMode::Bridge, vec![]))
        .await
        .unwrap();
    assert_ne!(e.netns_path, c.netns_path);
    let ping = in_ns(ns_of(&e), &["busybox", "ping", "-c", "1", "-W", "2", &gw])
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");

    // A daemon's shutdown with no container attached drops the spares and skiff's rules
    // (the bridge stays); teardown removes the rest.
    mgr.release(&d.container_id).await.unwrap();
    mgr.release(&e.container_id).await.unwrap();
    assert_eq!(fx.netns_files().len(), 1, "one spare kept");
    assert!(
        !fx.our_rules().is_empty(),
        "base rules stay while the daemon runs"
    );
    mgr.shutdown().await.unwrap();
    assert!(fx.netns_files().is_empty());
    assert!(fx.our_rules().is_empty());
    assert!(fx.bridge_exists());
    mgr.teardown().await.unwrap();
    assert!(fx.netns_files().is_empty());
    assert!(!fx.bridge_exists());
    assert!(fx.our_rules().is_empty());
}

//! The transport layer on its own: per-peer connection set-up (a peer whose handshake hangs does
//! not delay calls to other peers), `host:port` names, draining shutdown, and the in-process and
//! fault-injecting transports.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use quiver_net::fault::{Fault, FaultTransport};
use quiver_net::local::LocalTransport;
use quiver_net::server::{self, RpcService};
use quiver_net::tls::{ClusterIdentity, GeneratedCa, Role, Roles};
use quiver_net::{rpc, QuicTransport, Transport, TransportError};
use quiver_proto::NodeError;
use tokio_util::sync::CancellationToken;

/// Answers `"echo:<request>"` after `delay`.
struct Echo {
    delay: Duration,
}

impl RpcService for Echo {
    type Request = String;
    type Response = String;
    fn kind(_: &String) -> &'static str {
        "echo"
    }
    fn reject(error: NodeError) -> String {
        format!("rejected: {error}")
    }
    fn is_error(response: &String) -> bool {
        response.starts_with("rejected")
    }
    fn handle(
        self: Arc<Self>,
        request: String,
        _roles: Roles,
        _deadline: Instant,
    ) -> BoxFuture<'static, String> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            format!("echo:{request}")
        })
    }
}

fn identity(ca: &GeneratedCa, name: &str) -> ClusterIdentity {
    let (cert, key) = ca
        .issue(name, &["127.0.0.1".into()], &Role::ALL)
        .expect("issue");
    ClusterIdentity::from_pem(ca.cert_pem.as_bytes(), cert.as_bytes(), key.as_bytes())
        .expect("identity")
}

/// An echo server on loopback; returns its address and the task serving it.
fn echo_server(
    ca: &GeneratedCa,
    delay: Duration,
    shutdown: &CancellationToken,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let endpoint = server::bind(
        "127.0.0.1:0".parse().expect("addr"),
        &identity(ca, "server"),
    )
    .expect("bind");
    let addr = endpoint.local_addr().expect("addr");
    let task = tokio::spawn(server::serve(
        endpoint,
        Arc::new(Echo { delay }),
        shutdown.clone(),
    ));
    (addr, task)
}

async fn echo(
    transport: &dyn Transport,
    peer: &str,
    text: &str,
    timeout: Duration,
) -> Result<String, TransportError> {
    rpc(transport, peer, "test", timeout, text.to_owned()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_handshake_hangs_does_not_delay_calls_to_other_peers() {
    let ca = GeneratedCa::generate("test CA").expect("ca");
    let shutdown = CancellationToken::new();
    let (live, _server) = echo_server(&ca, Duration::ZERO, &shutdown);
    // A UDP port that takes packets and never answers: a QUIC handshake to it hangs.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let silent_addr = silent.local_addr().expect("addr").to_string();
    let transport = QuicTransport::new(&identity(&ca, "client")).expect("transport");

    let hanging = {
        let transport = transport.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = echo(&*transport, &silent_addr, "x", Duration::from_secs(20)).await;
            (result, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let answer = echo(
        &*transport,
        &live.to_string(),
        "hi",
        Duration::from_secs(10),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(answer.expect("live peer answers"), "echo:hi");
    assert!(
        took < Duration::from_secs(2),
        "a call to a live peer waited {took:?} behind another peer's handshake"
    );
    assert!(
        !hanging.is_finished(),
        "the silent peer's handshake is still pending"
    );
    let (result, waited) = hanging.await.expect("join");
    assert!(
        matches!(result, Err(TransportError::Unreachable { .. })),
        "{result:?}"
    );
    // It fails by itself: the idle timeout or the connect timeout ends the handshake.
    assert!(
        waited >= Duration::from_secs(3)
            && waited <= quiver_net::client::CONNECT_TIMEOUT + Duration::from_secs(1),
        "the silent peer failed after {waited:?}"
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_reached_by_host_name() {
    let ca = GeneratedCa::generate("test CA").expect("ca");
    let shutdown = CancellationToken::new();
    let (addr, _server) = echo_server(&ca, Duration::ZERO, &shutdown);
    let transport = QuicTransport::new(&identity(&ca, "client")).expect("transport");
    let by_name = format!("localhost:{}", addr.port());
    assert_eq!(
        echo(&*transport, &by_name, "named", Duration::from_secs(10))
            .await
            .expect("call by name"),
        "echo:named"
    );
    let unknown = echo(
        &*transport,
        "no-such-host.invalid:7000",
        "x",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        matches!(unknown, Err(TransportError::Unreachable { .. })),
        "{unknown:?}"
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish() {
    let ca = GeneratedCa::generate("test CA").expect("ca");
    let shutdown = CancellationToken::new();
    let (addr, server) = echo_server(&ca, Duration::from_millis(500), &shutdown);
    let transport = QuicTransport::new(&identity(&ca, "client")).expect("transport");
    let peer = addr.to_string();
    let in_flight = {
        let transport = transport.clone();
        let peer = peer.clone();
        tokio::spawn(async move { echo(&*transport, &peer, "slow", Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    shutdown.cancel();
    assert_eq!(
        in_flight
            .await
            .expect("join")
            .expect("answered while draining"),
        "echo:slow"
    );
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops after draining")
        .expect("join");
    // After shutdown nothing is served.
    let after = echo(&*transport, &peer, "late", Duration::from_secs(2)).await;
    assert!(after.is_err(), "{after:?}");
}

#[tokio::test]
async fn local_transport_answers_through_the_servers_codec_path() {
    let local = LocalTransport::new(Roles::of(&Role::ALL));
    local.serve(
        "echo:1",
        Arc::new(Echo {
            delay: Duration::ZERO,
        }),
    );
    assert_eq!(
        echo(&*local, "echo:1", "a", Duration::from_secs(1))
            .await
            .expect("call"),
        "echo:a"
    );
    // Garbage gets the service's typed refusal, exactly as over QUIC.
    let answer = local
        .exchange("echo:1", vec![0xff; 7], Duration::from_secs(1))
        .await
        .expect("an answer");
    let decoded = quiver_proto::decode::<String>(&answer).expect("decodable");
    assert!(decoded.body.starts_with("rejected: "), "{}", decoded.body);
    local.remove("echo:1");
    assert!(matches!(
        echo(&*local, "echo:1", "a", Duration::from_secs(1)).await,
        Err(TransportError::Unreachable { .. })
    ));
}

#[tokio::test]
async fn fault_transport_partitions_refuses_delays_drops_and_heals() {
    let local = LocalTransport::new(Roles::of(&Role::ALL));
    for peer in ["a:1", "b:1"] {
        local.serve(
            peer,
            Arc::new(Echo {
                delay: Duration::ZERO,
            }),
        );
    }
    let faults = FaultTransport::new(local);
    let deadline = Duration::from_millis(300);
    let call = |peer: &'static str| {
        let faults = faults.clone();
        async move {
            let started = Instant::now();
            let result = echo(&*faults, peer, "x", deadline).await;
            (result.is_ok(), started.elapsed())
        }
    };

    faults.partition(["a:1"]);
    let (ok, took) = call("a:1").await;
    assert!(!ok && took >= deadline, "a partitioned peer never answers");
    assert!(call("b:1").await.0, "other peers are unaffected");

    faults.set("a:1", Fault::Refuse);
    let (ok, took) = call("a:1").await;
    assert!(!ok && took < deadline, "refused at once");

    faults.set("a:1", Fault::Delay(Duration::from_millis(100)));
    let (ok, took) = call("a:1").await;
    assert!(
        ok && took >= Duration::from_millis(100),
        "delayed but answered"
    );
    faults.set("a:1", Fault::Delay(Duration::from_secs(1)));
    assert!(!call("a:1").await.0, "a delay past the deadline times out");

    faults.set("a:1", Fault::DropEvery(2));
    let outcomes: Vec<bool> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(call("a:1").await.0);
        }
        v
    };
    assert_eq!(outcomes, [true, false, true, false]);

    faults.set_all(Fault::Refuse);
    assert!(!call("b:1").await.0, "a rule for every peer");
    faults.heal();
    assert!(call("a:1").await.0 && call("b:1").await.0, "healed");
}

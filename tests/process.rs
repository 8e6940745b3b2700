//! Process-level tests of the push pipeline's guarantees (issue 4, items 5 and 6), with the
//! real binary: a `wxexpress sandbox` process plays WeChat, `wxexpress serve` processes are
//! configured by environment variables only, and the tests kill, stop and restart them.
//!
//! - `kill -9` at any moment loses no accepted event and pushes none twice: WeChat accepting
//!   a node twice shows as the same node twice in the sandbox's inbox.
//! - SIGTERM stops claiming and lets in-flight pushes finish within the grace period.
//! - Two instances on one PostgreSQL (when `TEST_DATABASE_URL` is set) share the work with no
//!   double pushes and one token refresher.

#[path = "process/harness.rs"]
mod harness;
#[path = "process/proxy.rs"]
mod proxy;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};
use wxexpress::outcomes::receiver::Receiver;
use wxexpress::store::{EntryState, Store};

use harness::*;
use proxy::Proxy;

/// A waybill's scans, oldest first: (action_type, action_time, action_msg).
const STEPS: [(i64, i64, &str); 3] = [
    (100001, 1_700_000_100, "已揽件"),
    (200001, 1_700_000_200, "快件到达 【泉州磁灶集散中心】"),
    (300002, 1_700_000_300, "派送中"),
];

/// Each waybill has its own receiver, so an inbox is one waybill's notifications.
fn phone(i: usize) -> String {
    format!("139{i:08}")
}

fn waybill_id(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:04}")
}

/// An NDJSON batch line: waybill `i` (created or replaced) and its scan `step`.
fn line(prefix: &str, i: usize, step: usize) -> Value {
    let (action_type, action_time, msg) = STEPS[step];
    json!({
        "waybill_id": waybill_id(prefix, i),
        "waybill": {
            "create_time": 1_700_000_000,
            "sender": { "name": "张三", "phone": "13800138001", "province": "浙江省", "city": "绍兴市", "area": "柯桥区", "address": "纺都路137号" },
            "receiver": { "name": "李四", "phone": phone(i), "province": "福建省", "city": "泉州市", "area": "晋江市", "address": "庄宅北区158-6" }
        },
        "event": { "action_type": action_type, "action_time": action_time, "action_msg": msg }
    })
}

fn lines(prefix: &str, range: std::ops::Range<usize>, step: usize) -> Vec<Value> {
    range.map(|i| line(prefix, i, step)).collect()
}

fn callback_url(gateway_port: u16) -> String {
    format!("http://127.0.0.1:{gateway_port}/wechat/callback")
}

async fn bind_all(sandbox: &SandboxProc, n: usize) {
    for i in 0..n {
        sandbox.bind(&phone(i)).await;
    }
}

/// A waybill's path as `GET /v1/waybills/{id}` shows it: event id -> (action_type, action_time).
fn path_nodes(w: &Value) -> BTreeMap<i64, (i64, i64)> {
    w["path"]
        .as_array()
        .expect("path")
        .iter()
        .map(|p| {
            let at = |k: &str| p[k].as_i64().expect("number");
            (at("event_id"), (at("action_type"), at("action_time")))
        })
        .collect()
}

/// The (action_type, action_time) of waybill `id`'s nodes in receiver `i`'s inbox, in order.
async fn inbox_of(sandbox: &SandboxProc, i: usize, id: &str) -> Vec<(i64, i64)> {
    sandbox
        .inbox(&phone(i))
        .await
        .iter()
        .filter(|node| node.waybill_id == id)
        .map(|node| (node.action_type, node.action_time))
        .collect()
}

/// For waybills `0..n`: no notification is pending or dead (skipped only as coalesced or
/// stale), every delivered notification's node is in the receiver's inbox exactly once and
/// nothing else is, in `action_time` order, and the newest scan `newest` is among them.
/// Returns how many notifications were delivered.
async fn assert_each_node_arrived_once(
    gw: &Gateway,
    sandbox: &SandboxProc,
    prefix: &str,
    n: usize,
    newest: usize,
) -> usize {
    let mut delivered_total = 0;
    for i in 0..n {
        let id = waybill_id(prefix, i);
        let w = gw.get_waybill(&id).await;
        let nodes = path_nodes(&w);
        let mut delivered = Vec::new();
        for n in w["notifications"].as_array().expect("notifications") {
            match (n["state"].as_str(), n["skip_reason"].as_str()) {
                (Some("delivered"), _) => {
                    let event = n["event_id"].as_i64().expect("event_id");
                    delivered.push(nodes[&event]);
                }
                (Some("skipped"), Some("coalesced" | "stale")) => {}
                _ => panic!("{id}: notification not settled as expected: {n}"),
            }
        }
        delivered.sort();
        let inbox = inbox_of(sandbox, i, &id).await;
        let mut unique = inbox.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            inbox.len(),
            "{id}: WeChat got a node twice: {inbox:?}"
        );
        assert!(
            inbox.windows(2).all(|p| p[0].1 < p[1].1),
            "{id}: nodes arrived out of order: {inbox:?}"
        );
        if unique != delivered {
            let exchanges: Vec<String> = sandbox
                .exchanges(&id)
                .await
                .iter()
                .map(|x| {
                    format!(
                        "{} {:?} {} {}",
                        x.action_type, x.verdict, x.errcode, x.detail
                    )
                })
                .collect();
            panic!(
                "{id}: the inbox {unique:?} and the delivered notifications {delivered:?} disagree\n\
                 notifications: {:#}\nWeChat's reverse queries: {exchanges:#?}",
                w["notifications"]
            );
        }
        let (t, at, _) = STEPS[newest];
        assert!(
            inbox.contains(&(t, at)),
            "{id}: the newest scan never arrived: {inbox:?}"
        );
        delivered_total += delivered.len();
    }
    delivered_total
}

fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}/gateway.db", dir.display())
}

/// A failure that lists a notification delivered "on the receipt" whose node WeChat's log shows
/// as `Unreachable ... connection closed before message completed` is a real loss: the kill fell
/// after the callback recorded the receipt and before its reply reached WeChat.
#[tokio::test]
async fn kill_9_at_any_moment_loses_nothing_and_doubles_nothing() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let sandbox = SandboxProc::start(dir.path(), &callback_url(port)).await;
    // Slow enough that pushes are in flight whenever the gateway is killed.
    sandbox
        .set_faults(json!({ "pathnotify": { "latency_ms": 50 } }))
        .await;
    const N: usize = 200;
    bind_all(&sandbox, N).await;
    let db = sqlite_url(dir.path());
    // 16 pushes at a time: a scan's 200 pushes then take longer than the kill's delay.
    let slow = [("WXEXPRESS_OUTBOX__CONCURRENCY", "16")];
    let mut gw = Gateway::new("gateway", dir.path(), port, &db, &sandbox.base, &slow);
    gw.start().await;
    let store = Store::connect(&db)
        .await
        .expect("open the gateway's database");

    // Each scan of every waybill is accepted, then the gateway is killed mid-flight and
    // restarted (the dead process's leases lapse after 5 s; the rest goes on at once).
    for (step, kill_after_ms) in [(0, 300), (1, 450), (2, 200)] {
        gw.post_batch(&lines("K", 0..N, step)).await;
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        let pending = count(&outbox_states(&store).await, EntryState::Pending);
        let pushed = sandbox.pathnotify_calls().await;
        gw.kill9();
        eprintln!("kill -9 after scan {step}: {pending} entries pending, {pushed} pathnotify calls so far");
        assert!(
            pending > 0,
            "the kill after scan {step} came too late to interrupt anything"
        );
        gw.start().await;
    }

    let states = drained(&store, Duration::from_secs(40)).await;
    assert_eq!(count(&states, EntryState::Dead), 0, "{states:?}");
    let delivered = assert_each_node_arrived_once(&gw, &sandbox, "K", N, 2).await;
    let stats = sandbox.stats().await;
    let pathnotify = &stats.apis["pathnotify"];
    eprintln!(
        "delivered {delivered} notifications with {} pathnotify calls ({:?} errors); {:?}",
        pathnotify.calls, pathnotify.errors, states
    );
    assert_eq!(
        pathnotify.ok as usize, delivered,
        "every pathnotify WeChat accepted is one delivered notification"
    );
}

#[tokio::test]
async fn a_node_whose_reverse_query_was_answered_before_kill_9_is_not_pushed_again() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let sandbox = SandboxProc::start(dir.path(), &callback_url(port)).await;
    let proxy = Proxy::start(&sandbox.base);
    let db = sqlite_url(dir.path());
    let mut gw = Gateway::new("gateway", dir.path(), port, &db, &proxy.base, &[]);
    gw.start().await;
    let store = Store::connect(&db)
        .await
        .expect("open the gateway's database");
    sandbox.bind(&phone(0)).await;
    let id = waybill_id("R", 0);

    // WeChat answers the pathnotify (after our callback answered its reverse query), but the
    // answer never reaches the gateway: it dies first.
    let answered = proxy.swallow_pathnotify_answer(&id);
    gw.post_batch(&[line("R", 0, 2)]).await;
    tokio::time::timeout(Duration::from_secs(20), answered)
        .await
        .expect("the push reached WeChat")
        .expect("the proxy reported it");
    gw.kill9();
    assert_eq!(
        sandbox.inbox(&phone(0)).await.len(),
        1,
        "WeChat delivered the node"
    );
    let entries = store.list_outbox(&id).await.expect("outbox");
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].state,
        EntryState::Pending,
        "the gateway never heard the answer"
    );
    assert!(
        entries[0].receipt_at.is_some(),
        "the reverse query recorded WeChat's receipt"
    );

    gw.start().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.list_outbox(&id).await.expect("outbox")[0].state == EntryState::Pending {
        assert!(
            Instant::now() < deadline,
            "the entry was not settled after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let w = gw.get_waybill(&id).await;
    let n = &w["notifications"][0];
    assert_eq!(n["state"], "delivered", "{n}");
    let last = n["attempts"].as_array().expect("attempts").last().cloned();
    assert!(
        last.as_ref()
            .and_then(|a| a["detail"].as_str())
            .is_some_and(|d| d.contains("receipt")),
        "delivered on the strength of the receipt: {last:?}"
    );
    assert_eq!(sandbox.inbox(&phone(0)).await.len(), 1, "not pushed twice");
    assert_eq!(
        sandbox.exchanges(&id).await.len(),
        1,
        "one reverse query for the node"
    );
    assert_eq!(proxy.pathnotify_calls(), 1);
    assert_eq!(sandbox.pathnotify_calls().await, 1);
}

#[tokio::test]
async fn sigterm_stops_claiming_and_lets_in_flight_pushes_finish_within_the_grace_period() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let sandbox = SandboxProc::start(dir.path(), &callback_url(port)).await;
    sandbox
        .set_faults(json!({ "pathnotify": { "latency_ms": 1000 } }))
        .await;
    const N: usize = 40;
    const GRACE: Duration = Duration::from_secs(5);
    bind_all(&sandbox, N).await;
    let db = sqlite_url(dir.path());
    let mut gw = Gateway::new(
        "gateway",
        dir.path(),
        port,
        &db,
        &sandbox.base,
        &[
            ("WXEXPRESS_OUTBOX__CONCURRENCY", "8"),
            ("WXEXPRESS_OUTBOX__SHUTDOWN_GRACE_SECS", "5"),
        ],
    );
    gw.start().await;
    let store = Store::connect(&db)
        .await
        .expect("open the gateway's database");
    gw.post_batch(&lines("T", 0..N, 2)).await;

    // Wait until a full set of pushes is in flight (each takes a second at WeChat).
    let deadline = Instant::now() + Duration::from_secs(15);
    while sandbox.pathnotify_calls().await < 8 {
        assert!(Instant::now() < deadline, "pushes never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let in_flight = sandbox.pathnotify_calls().await;
    let finished = sandbox.stats().await.apis["pathnotify"].ok;
    assert_eq!(finished, 0, "no push may have finished before SIGTERM");

    let asked = Instant::now();
    gw.sigterm();
    let status = gw
        .wait_exit(GRACE + Duration::from_secs(3))
        .await
        .expect("the gateway exits within the grace period and a margin");
    let took = asked.elapsed();
    eprintln!("{in_flight} pushes in flight at SIGTERM; exited with {status} after {took:?}");
    assert!(status.success(), "exit status {status}");

    assert_eq!(
        sandbox.pathnotify_calls().await,
        in_flight,
        "no push started after SIGTERM"
    );
    let states = outbox_states(&store).await;
    assert_eq!(
        count(&states, EntryState::Delivered) as u64,
        in_flight,
        "every push in flight finished: {states:?}"
    );
    assert_eq!(
        count(&states, EntryState::Pending) as u64,
        N as u64 - in_flight,
        "the rest waits: {states:?}"
    );
    let mut inbox_total = 0;
    for i in 0..N {
        let inbox = sandbox.inbox(&phone(i)).await;
        assert!(inbox.len() <= 1, "{i}: {inbox:?}");
        inbox_total += inbox.len() as u64;
    }
    assert_eq!(inbox_total, in_flight, "each finished push arrived once");

    // After a restart the rest is delivered, each node once.
    gw.start().await;
    let states = drained(&store, Duration::from_secs(30)).await;
    assert_eq!(
        count(&states, EntryState::Delivered),
        N as i64,
        "{states:?}"
    );
    assert_each_node_arrived_once(&gw, &sandbox, "T", N, 2).await;
    assert_eq!(sandbox.pathnotify_calls().await, N as u64);
}

/// A fresh PostgreSQL database for one test, dropped at the end.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// `None` (with a note) when `TEST_DATABASE_URL` is not set.
    async fn create() -> Option<PgDatabase> {
        let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
            eprintln!(
                "note: TEST_DATABASE_URL is not set; the two-instance PostgreSQL test is skipped"
            );
            return None;
        };
        let name = format!("wxp_{}_{:08x}", std::process::id(), rand::random::<u32>());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connect to TEST_DATABASE_URL");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&name);
        Some(PgDatabase {
            admin_url,
            name,
            url: url.to_string(),
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime: a short-lived thread with its own runtime.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async move {
                    let mut admin = PgConnection::connect(&admin_url).await?;
                    admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await?;
                    admin.close().await
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("note: could not drop test database {}", self.name);
        }
    }
}

#[tokio::test]
async fn two_instances_on_one_postgresql_share_the_work_with_no_double_pushes_and_one_token_refresher(
) {
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (port_a, port_b) = (free_port(), free_port());
    // WeChat sends every reverse query to one instance (as behind one public URL); it
    // answers for the other's pushes from the shared database.
    let sandbox = SandboxProc::start(dir.path(), &callback_url(port_a)).await;
    sandbox
        .set_faults(json!({ "pathnotify": { "latency_ms": 20 } }))
        .await;
    const N: usize = 300;
    bind_all(&sandbox, N).await;
    let (proxy_a, proxy_b) = (Proxy::start(&sandbox.base), Proxy::start(&sandbox.base));
    let mut a = Gateway::new("gateway-a", dir.path(), port_a, &pg.url, &proxy_a.base, &[]);
    let mut b = Gateway::new("gateway-b", dir.path(), port_b, &pg.url, &proxy_b.base, &[]);
    a.migrate().await;
    a.spawn();
    b.spawn();
    a.ready().await;
    b.ready().await;
    let store = Store::connect(&pg.url)
        .await
        .expect("open the shared database");

    // Every scan is ingested half through each instance, at the same time.
    let half = N / 2;
    for step in 0..STEPS.len() {
        let (first, second) = if step % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (l1, l2) = (lines("D", 0..half, step), lines("D", half..N, step));
        tokio::join!(first.post_batch(&l1), second.post_batch(&l2));
    }

    let states = drained(&store, Duration::from_secs(40)).await;
    assert_eq!(count(&states, EntryState::Dead), 0, "{states:?}");
    let delivered = assert_each_node_arrived_once(&a, &sandbox, "D", N, 2).await;
    let stats = sandbox.stats().await;
    let (via_a, via_b) = (proxy_a.pathnotify_calls(), proxy_b.pathnotify_calls());
    eprintln!(
        "delivered {delivered}: {via_a} pushes by A, {via_b} by B; {states:?}; sandbox {:?}",
        stats.apis
    );
    assert!(via_a > 0 && via_b > 0, "both instances pushed");
    assert_eq!(
        (via_a + via_b) as usize,
        delivered,
        "one push per delivered notification"
    );
    assert_eq!(stats.apis["pathnotify"].ok as usize, delivered);
    let token_calls = |api: &str| stats.apis.get(api).map_or(0, |s| s.calls);
    assert_eq!(token_calls("stable_token"), 1, "one token refresher");
    assert_eq!(token_calls("token"), 0);
}

/// What a chaos run found, per waybill and in all.
#[derive(Debug, Default)]
struct Tally {
    /// Nodes a notification says were delivered (or the newest scan, which must always
    /// arrive) that are not in the receiver's inbox.
    lost: usize,
    /// Nodes in an inbox more often than once.
    doubled: usize,
    /// Notifications neither delivered nor skipped as coalesced or stale.
    unsettled: usize,
    delivered: usize,
}

async fn tally(gw: &Gateway, sandbox: &SandboxProc, prefix: &str, n: usize) -> Tally {
    let mut t = Tally::default();
    let (newest_type, newest_time, _) = STEPS[STEPS.len() - 1];
    for i in 0..n {
        let id = waybill_id(prefix, i);
        let w = gw.get_waybill(&id).await;
        let nodes = path_nodes(&w);
        let inbox = inbox_of(sandbox, i, &id).await;
        let mut unique = inbox.clone();
        unique.sort();
        unique.dedup();
        t.doubled += inbox.len() - unique.len();
        let mut expected = vec![(newest_type, newest_time)];
        for note in w["notifications"].as_array().expect("notifications") {
            match (note["state"].as_str(), note["skip_reason"].as_str()) {
                (Some("delivered"), _) => {
                    t.delivered += 1;
                    expected.push(nodes[&note["event_id"].as_i64().expect("event_id")]);
                }
                (Some("skipped"), Some("coalesced" | "stale")) => {}
                _ => t.unsettled += 1,
            }
        }
        expected.sort();
        expected.dedup();
        let missing: Vec<_> = expected.iter().filter(|e| !unique.contains(e)).collect();
        if !missing.is_empty() {
            eprintln!(
                "{id}: never arrived: {missing:?}; inbox {inbox:?}; notifications {}",
                w["notifications"]
            );
        }
        t.lost += missing.len();
    }
    t
}

/// The chaos run of `docs/RELIABILITY.md`: two instances on one PostgreSQL and the sandbox;
/// scans are ingested in rounds through either instance, and after each round one instance,
/// chosen at random, is killed with SIGKILL after a random delay and restarted. At the end no
/// node may be lost and none pushed twice. Small here; `CHAOS_WAYBILLS`, `CHAOS_SLICES`
/// (rounds per scan) and `CHAOS_SEED` make it as long as wanted.
#[tokio::test]
async fn chaos_two_instances_killed_at_random_lose_no_node_and_push_none_twice() {
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    chaos(dir.path(), &pg.url, 2).await;
}

/// The same on SQLite, where one instance writes through its group commit: that instance is
/// killed at random and restarted, the pushes it was settling in flight.
#[tokio::test]
async fn chaos_one_sqlite_instance_killed_at_random_loses_no_node_and_pushes_none_twice() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    chaos(dir.path(), &sqlite_url(dir.path()), 1).await;
}

/// One chaos run with `instances` gateways on `db` (see the tests above).
async fn chaos(dir: &std::path::Path, db: &str, instances: usize) {
    use rand::{Rng, SeedableRng};
    let env_num = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env_num("CHAOS_WAYBILLS", 120) as usize;
    let slices = env_num("CHAOS_SLICES", 2).max(1) as usize;
    let seed = env_num("CHAOS_SEED", 20261201);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let ports: Vec<u16> = (0..instances).map(|_| free_port()).collect();
    let sandbox = SandboxProc::start(dir, &callback_url(ports[0])).await;
    // Slow enough that pushes are in flight whenever an instance is killed.
    sandbox
        .set_faults(json!({ "pathnotify": { "latency_ms": 30 } }))
        .await;
    bind_all(&sandbox, n).await;
    // The carrier's webhook receiver: the kills fall while outcomes are being delivered too.
    let receiver = Receiver::start(
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind the receiver"),
        WEBHOOK_SECRET,
    )
    .expect("the receiver starts");
    let webhook = [
        ("WXEXPRESS_OUTCOMES__WEBHOOK_URL", receiver.url.as_str()),
        ("WXEXPRESS_OUTCOMES__WEBHOOK_SECRET", WEBHOOK_SECRET),
        (
            "WXEXPRESS_OUTCOMES__RETRY_SCHEDULE",
            "0.1,0.2,0.5,1,1,1,1,1",
        ),
        ("WXEXPRESS_OUTCOMES__POLL_INTERVAL_MS", "20"),
        ("WXEXPRESS_OUTCOMES__BATCH_MAX", "25"),
    ];
    let mut gws: Vec<Gateway> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let name = format!("chaos-{}", char::from(b'a' + i as u8));
            Gateway::new(&name, dir, *port, db, &sandbox.base, &webhook)
        })
        .collect();
    gws[0].migrate().await;
    for g in gws.iter_mut() {
        g.start().await;
    }
    let store = Store::connect(db).await.expect("the shared database");

    let started = Instant::now();
    let (mut kills, mut kills_mid_flight) = (0, 0);
    for step in 0..STEPS.len() {
        for slice in 0..slices {
            let range = slice * n / slices..(slice + 1) * n / slices;
            let via = rng.gen_range(0..instances);
            gws[via].post_batch(&lines("X", range, step)).await;
            let victim = rng.gen_range(0..instances);
            tokio::time::sleep(Duration::from_millis(rng.gen_range(20..600))).await;
            let pending = count(&outbox_states(&store).await, EntryState::Pending);
            gws[victim].kill9();
            kills += 1;
            kills_mid_flight += usize::from(pending > 0);
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..300))).await;
            gws[victim].start().await;
        }
    }
    let states = drained(&store, Duration::from_secs(120)).await;
    let t = tally(&gws[0], &sandbox, "X", n).await;
    let stats = sandbox.stats().await;
    let pathnotify = &stats.apis["pathnotify"];
    eprintln!(
        "chaos (seed {seed}, {instances} instance(s), {:?}): {n} waybills, {} scans, {kills} \
         SIGKILLs ({kills_mid_flight} with entries pending) in {:.1} s; \
         {} delivered with {} pathnotify calls ({} accepted); lost {}, pushed twice {}, \
         unsettled {}; outbox {states:?}",
        store.backend(),
        n * STEPS.len(),
        started.elapsed().as_secs_f64(),
        t.delivered,
        pathnotify.calls,
        pathnotify.ok,
        t.lost,
        t.doubled,
        t.unsettled,
    );
    assert_eq!((t.lost, t.doubled, t.unsettled), (0, 0, 0), "{t:?}");
    assert_eq!(
        pathnotify.ok as usize, t.delivered,
        "one accepted push per delivery"
    );
    assert_outcomes_reached_the_carrier(&store, &receiver, &states, t.delivered).await;
}

const WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// After a run with kills: every settled entry has exactly one outcome, the webhook receiver
/// (which verified every signature) got each of them, and they agree with the pushes.
async fn assert_outcomes_reached_the_carrier(
    store: &Store,
    receiver: &Receiver,
    states: &BTreeMap<EntryState, i64>,
    delivered: usize,
) {
    let entries: i64 = states.values().sum();
    assert_eq!(
        store.count_outcomes().await.expect("count outcomes"),
        entries,
        "exactly one outcome per settled entry"
    );
    let mut ids = std::collections::BTreeSet::new();
    let mut after = wxexpress::store::FeedPosition::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (ids.len() as i64) < entries && Instant::now() < deadline {
        let page = store
            .outcomes_page(after, 500, &Default::default())
            .await
            .expect("feed page");
        ids.extend(page.items.iter().map(|r| format!("out_{}", r.outbox_id)));
        after = page.next;
        if !page.has_more {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(
        ids.len() as i64,
        entries,
        "the feed holds every outcome once"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.item_count() < ids.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let items = receiver.items();
    let got: std::collections::BTreeSet<String> = items.keys().cloned().collect();
    assert_eq!(got, ids, "the webhook delivered every outcome");
    assert_eq!(receiver.refused(), 0, "every request was signed");
    let delivered_items = items
        .values()
        .filter(|i| i["outcome"] == "delivered")
        .count();
    assert_eq!(
        delivered_items, delivered,
        "delivered items are the delivered pushes"
    );
    // A webhook-id carries one body, however often it was sent.
    let mut bodies: BTreeMap<String, String> = BTreeMap::new();
    for r in receiver.received() {
        let body = bodies.entry(r.webhook_id.clone()).or_insert(r.body.clone());
        assert_eq!(
            *body, r.body,
            "{} was redelivered with another body",
            r.webhook_id
        );
    }
    receiver.stop().await;
}

/// Runs `wxexpress ARGS` with only `env` (plus PATH) in `dir`.
fn cli_output(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_wxexpress"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("run wxexpress")
}

/// [`cli_output`] as (exit code, stderr).
fn run_cli(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = cli_output(dir, args, env);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_empty_secret_stops_serve_with_one_line_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, err) = run_cli(
        dir.path(),
        &["serve"],
        &[
            ("WXEXPRESS_WECHAT__APPID", "wxba5fad812f8e6fb9"),
            ("WXEXPRESS_WECHAT__SECRET", ""),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("configuration error: wechat.secret: ")),
        "{err}"
    );
    assert!(
        !dir.path().join("data").join("wxexpress.db").exists(),
        "nothing started"
    );
}

#[test]
fn sandbox_mode_refuses_a_public_listen_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, err) = run_cli(
        dir.path(),
        &["serve"],
        &[("WXEXPRESS_SERVER__LISTEN", "0.0.0.0:0")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("server.listen: "), "{err}");
    let (code, err) = run_cli(dir.path(), &["sandbox", "--listen", "0.0.0.0:0"], &[]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("--allow-remote"), "{err}");
}

#[tokio::test]
async fn wechat_rid_prints_what_the_sandbox_logged_and_explains_its_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = SandboxProc::start(dir.path(), &callback_url(free_port())).await;
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{}/cgi-bin/stable_token", sandbox.base))
        .json(&json!({ "grant_type": "client_credential", "appid": wxexpress::sandbox::defaults::APPID, "secret": wxexpress::sandbox::defaults::SECRET }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().expect("a token");
    let failed: Value = http
        .post(format!(
            "{}/cgi-bin/express/delivery/userquery?access_token={token}",
            sandbox.base
        ))
        .json(&json!({ "phone": "12345" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let errmsg = failed["errmsg"].as_str().unwrap();
    let rid = &errmsg[errmsg.rfind("rid: ").unwrap() + 5..];
    let env: Vec<(String, String)> = harness::wechat_env(&sandbox.base);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = cli_output(dir.path(), &["wechat", "rid", rid], &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("/cgi-bin/express/delivery/userquery"),
        "{stdout}"
    );
    assert!(stdout.contains("40097"), "{stdout}");
    assert!(!stdout.contains(token), "no token printed: {stdout}");
    let (code, err) = run_cli(dir.path(), &["wechat", "rid", "00000000-00000000"], &env);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("older than 7 days") && err.contains("76001"),
        "{err}"
    );
}

#[test]
fn bench_prints_each_path_beside_its_baseline_with_no_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "bench",
        "--seconds",
        "1",
        "--connections",
        "4",
        "--waybills",
        "50",
    ];
    let out = cli_output(dir.path(), &args, &[]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for path in [
        "reverse query, new (secure JSON)",
        "reverse query, replayed",
        "NDJSON ingest, events (per batch)",
        "single-event POSTs",
        "push ceiling (no storage)",
        "pushes end to end (sandbox)",
    ] {
        let row = table
            .lines()
            .find(|l| l.starts_with(path))
            .unwrap_or_else(|| panic!("no row {path}: {table}"));
        let cols: Vec<&str> = row[path.len()..].split_whitespace().collect();
        // req/s, p50, p99, errors, baseline name (3 words), baseline req/s, ratio
        assert!(cols[0].parse::<f64>().unwrap() > 0.0, "{row}");
        assert_eq!(cols[3], "0", "no errors: {row}");
        assert!(
            [
                "actix JSON echo",
                "typed sqlx rows",
                "push ceiling",
                "(absolute)"
            ]
            .iter()
            .any(|b| row.contains(b)),
            "{row}"
        );
    }
    assert!(table.contains("process RSS"), "{table}");
    let pushes = table
        .lines()
        .find(|l| l.starts_with("pushes end to end (sandbox)"))
        .unwrap();
    assert!(
        pushes.contains("push ceiling"),
        "pushes get a ratio: {pushes}"
    );
    assert!(table.contains("SQLite (synchronous = full)"), "{table}");
}

#[test]
fn json_logs_are_one_object_per_line_with_level_target_message_and_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sqlite_url(dir.path());
    let out = cli_output(
        dir.path(),
        &["migrate"],
        &[
            ("WXEXPRESS_DATABASE__URL", db.as_str()),
            ("WXEXPRESS_LOG__FORMAT", "json"),
            ("WXEXPRESS_LOG__LEVEL", "info"),
        ],
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let applied = lines
        .iter()
        .find(|l| l["message"] == "migrations applied")
        .unwrap_or_else(|| panic!("no migrations line: {text}"));
    assert_eq!(applied["level"], "INFO");
    assert!(applied["target"]
        .as_str()
        .is_some_and(|t| t.starts_with("wxexpress")));
    assert!(applied["timestamp"].is_string());
    assert_eq!(applied["database"], db.as_str(), "fields are top-level");

    // Text stays the default, and a bad [log] is one line naming the key.
    let out = cli_output(
        dir.path(),
        &["migrate"],
        &[("WXEXPRESS_DATABASE__URL", db.as_str())],
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("migrations applied") && !text.contains("\"message\""),
        "{text}"
    );
    let (code, err) = run_cli(
        dir.path(),
        &["migrate"],
        &[
            ("WXEXPRESS_DATABASE__URL", db.as_str()),
            ("WXEXPRESS_LOG__FORMAT", "yaml"),
            ("WXEXPRESS_LOG__LEVEL", "inof"),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("configuration error: log.format: \"yaml\""),
        "{err}"
    );
    assert!(
        err.contains("configuration error: log.level: \"inof\""),
        "{err}"
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text_on_their_own_listener_only() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let metrics_port = free_port();
    let sandbox = SandboxProc::start(dir.path(), &callback_url(port)).await;
    const N: usize = 5;
    bind_all(&sandbox, N).await;
    let db = sqlite_url(dir.path());
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let mut gw = Gateway::new(
        "gateway",
        dir.path(),
        port,
        &db,
        &sandbox.base,
        &[("WXEXPRESS_SERVER__METRICS_LISTEN", metrics_listen.as_str())],
    );
    gw.start().await;
    let store = Store::connect(&db)
        .await
        .expect("open the gateway's database");
    gw.post_batch(&lines("M", 0..N, 2)).await;
    drained(&store, Duration::from_secs(30)).await;

    let http = reqwest::Client::new();
    // An event without the bearer key: refused, and counted as rejected.
    let unauthenticated = http
        .post(format!(
            "http://127.0.0.1:{port}/v1/waybills/M00000000/events"
        ))
        .json(&json!({ "action_type": 100001, "action_time": 1_700_000_000 }))
        .send()
        .await
        .expect("the public listener answers");
    assert_eq!(unauthenticated.status(), 401);
    // A JSONP lookup without its callback: refused, and counted.
    let refused = http
        .get(format!("http://127.0.0.1:{port}/wechat/waybill"))
        .send()
        .await
        .expect("the public listener answers");
    assert_eq!(refused.status(), 400);
    let resp = http
        .get(format!("http://{metrics_listen}/metrics"))
        .send()
        .await
        .expect("the metrics listener answers");
    assert_eq!(resp.status(), 200);
    assert!(resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain")));
    let text = resp.text().await.expect("a body");
    for series in wxexpress::series::SERIES {
        assert!(
            text.lines().any(|l| l.starts_with(series)),
            "{series} missing:\n{text}"
        );
    }
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix}:\n{text}"))
    };
    assert_eq!(
        value("wxexpress_events_ingested_total{outcome=\"stored\"}"),
        N as f64
    );
    assert!(value("wxexpress_wechat_calls_total{api=\"pathnotify\",errcode=\"0\"}") >= N as f64);
    assert_eq!(
        value("wxexpress_outbox_entries{kind=\"pathnotify\",state=\"pending\"}"),
        0.0
    );
    assert!(value("wxexpress_callback_duration_seconds_count") >= N as f64);
    assert_eq!(value("wxexpress_outbox_oldest_pending_seconds"), 0.0);
    assert_eq!(
        value("wxexpress_events_ingested_total{outcome=\"rejected\"}"),
        1.0
    );
    assert_eq!(
        value("wxexpress_jsonp_requests_total{err_code=\"bad_callback\"}"),
        1.0
    );
    assert_eq!(
        value("wxexpress_pushes_total{kind=\"pathnotify\",outcome=\"delivered\"}"),
        N as f64
    );

    // Never on the public listener.
    let public = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("the public listener answers");
    assert_eq!(public.status(), 404);
}

/// Prometheus's own advice: a series that only appears after its first event reads "no data"
/// on a dashboard and breaks alerts. Every series the dashboard may query is there, at zero,
/// before the gateway has done anything.
#[tokio::test]
async fn every_series_exists_from_start_up_before_any_traffic() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, metrics_port) = (free_port(), free_port());
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let mut gw = Gateway::new(
        "idle",
        dir.path(),
        port,
        &sqlite_url(dir.path()),
        "http://127.0.0.1:9",
        &[("WXEXPRESS_SERVER__METRICS_LISTEN", metrics_listen.as_str())],
    );
    gw.start().await;
    let text = reqwest::Client::new()
        .get(format!("http://{metrics_listen}/metrics"))
        .send()
        .await
        .expect("the metrics listener answers")
        .text()
        .await
        .expect("a body");
    let missing: Vec<&str> = wxexpress::series::SERIES
        .iter()
        .copied()
        .filter(|s| !text.lines().any(|l| l.starts_with(s)))
        .collect();
    assert!(missing.is_empty(), "missing at start: {missing:?}\n{text}");
    gw.sigterm();
}

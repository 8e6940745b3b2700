//! The push ceiling: what this machine allows for a push with no storage at all.
//!
//! The same three exchanges a gateway's push makes, with the same crates and the same
//! crypto: `userquery` and `pathnotify` to the same in-process sandbox the push run uses (its
//! token check, validation and inbox), and WeChat's encrypted reverse query answered by an
//! actix-web callback with the gateway's own envelope code (verify, decrypt, build the reply,
//! encrypt, sign) from an in-memory map of paths. 256 pushes in flight, as the push node runs.
//! Everything the gateway's rate falls short of this is the gateway's own cost: storage,
//! outbox, leases, logging.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use futures_util::StreamExt as _;

use crate::clock::now_secs;
use crate::domain::{Contact, Contacts, NodeText};
use crate::sandbox::{Sandbox, SandboxSettings};
use crate::wechat::client::{TokenEndpoint, WechatClient};
use crate::wechat::crypto::MessageCrypto;
use crate::wechat::envelope::{self, CallbackQuery, MessageFormat, MessageMode};
use crate::wechat::push::pathnotify_body;
use crate::wechat::reverse_query::{build_reply, Lookup, PathNode, Query};

use super::data::{receiver, SENDER};
use super::Row;

/// Pushes in flight, as the bench's push node (`outbox.concurrency = 256`).
const IN_FLIGHT: usize = 256;
/// Path nodes each waybill has before the pushed one (the bench's seed has five).
const EARLIER_NODES: i64 = 5;

/// One waybill as the relay holds it: its receiver and its path, newest first.
struct Held {
    receiver_phone: String,
    create_time: i64,
    path: Vec<PathNode>,
}

/// What the storage-free callback needs.
struct Relay {
    crypto: MessageCrypto,
    original_id: String,
    paths: RwLock<HashMap<String, Held>>,
}

/// Pushes `pushes` nodes (one per waybill, every receiver bound) through the relay and
/// returns the rate. `workers`: the callback's HTTP workers, as the gateway's.
pub(super) async fn ceiling(pushes: usize, workers: usize) -> anyhow::Result<Row> {
    let callback_listener = TcpListener::bind("127.0.0.1:0")?;
    let callback_url = format!("http://{}/wechat/callback", callback_listener.local_addr()?);
    let settings = SandboxSettings {
        callback_url,
        ..SandboxSettings::default()
    };
    let relay = web::Data::new(Relay {
        crypto: MessageCrypto::new(
            &settings.token,
            &settings.appid,
            &settings.encoding_aes_key,
            None,
        )?,
        original_id: settings.original_id.clone(),
        paths: RwLock::new(HashMap::new()),
    });
    let sandbox = Sandbox::try_new(settings.clone())?;
    let running = sandbox.start(TcpListener::bind("127.0.0.1:0")?)?;
    let mut server = HttpServer::new({
        let relay = relay.clone();
        move || {
            App::new()
                .app_data(relay.clone())
                .route("/wechat/callback", web::post().to(answer))
        }
    })
    .disable_signals()
    .listen(callback_listener)?;
    if workers > 0 {
        server = server.workers(workers);
    }
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);

    let t0 = chrono::Utc::now().timestamp() - 86_400;
    let earlier: Vec<PathNode> = (0..EARLIER_NODES)
        .rev()
        .map(|n| PathNode {
            action_type: 200001,
            action_time: t0 + 3600 * (n + 1),
            text: NodeText {
                action_msg: "快件到达 【泉州磁灶集散中心】".into(),
                ..Default::default()
            },
        })
        .collect();
    for w in 0..pushes {
        sandbox.bind_phone(&receiver(w));
    }
    let client = WechatClient::new(&format!("http://{}", running.addr), Duration::from_secs(10));
    let token = client
        .fetch_token(
            TokenEndpoint::Stable,
            &settings.appid,
            &settings.secret,
            false,
        )
        .await
        .result
        .map_err(|e| anyhow::anyhow!("the ceiling's token: {}", e.label()))?
        .access_token;

    let started = Instant::now();
    let results: Vec<bool> = futures_util::stream::iter(0..pushes)
        .map(|w| {
            let (client, token, relay, earlier) = (&client, &token, &relay, &earlier);
            async move { push_one(client, token, relay, earlier, t0, w).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let secs = started.elapsed().as_secs_f64();
    handle.stop(true).await;
    running.handle.stop(true).await;
    let delivered = results.iter().filter(|ok| **ok).count();
    Ok(Row {
        path: "push ceiling (no storage)",
        rate: delivered as f64 / secs,
        p50_ms: 0.0,
        p99_ms: 0.0,
        errors: pushes - delivered,
        baseline: None,
        cpu_us: None,
    })
}

/// One push: `userquery`, the path held, `pathnotify` (answered after WeChat's reverse query
/// reached the relay's callback). `true` when WeChat delivered it.
async fn push_one(
    client: &WechatClient,
    token: &str,
    relay: &Relay,
    earlier: &[PathNode],
    t0: i64,
    w: usize,
) -> bool {
    let phone = receiver(w);
    let bound = client.userquery(token, &phone).await;
    if !matches!(bound.result, Ok(ref a) if a.exist == 1) {
        return false;
    }
    let waybill_id = format!("CEIL{w:08}");
    let node = PathNode {
        action_type: 300002,
        action_time: now_secs() - 60,
        text: NodeText {
            action_msg: "快件已由 【晋江庄宅营业部】 派送".into(),
            ..Default::default()
        },
    };
    let contacts = Contacts {
        sender: Contact {
            name: Some("寄件人".into()),
            phone: Some(SENDER.into()),
            province: "浙江省".into(),
            city: "绍兴市".into(),
            area: "柯桥区".into(),
            street: None,
            address: None,
        },
        receiver: Contact {
            name: Some("收件人".into()),
            phone: Some(phone.clone()),
            province: "福建省".into(),
            city: "泉州市".into(),
            area: "晋江市".into(),
            street: None,
            address: Some("庄宅北区158-6".into()),
        },
    };
    let body = pathnotify_body(
        &waybill_id,
        t0,
        &contacts,
        node.action_type,
        node.action_time,
        &node.text,
    );
    {
        let mut path = Vec::with_capacity(earlier.len() + 1);
        path.push(node);
        path.extend_from_slice(earlier);
        let held = Held {
            receiver_phone: phone,
            create_time: t0,
            path,
        };
        let mut paths = relay.paths.write().unwrap_or_else(|p| p.into_inner());
        paths.insert(waybill_id, held);
    }
    let pushed = client.pathnotify(token, &body).await;
    matches!(pushed.result, Ok(ref a) if a.exist == 1)
}

/// The storage-free callback: verify, decrypt, answer from the map, encrypt, sign.
async fn answer(
    relay: web::Data<Relay>,
    query: web::Query<CallbackQuery>,
    body: web::Bytes,
) -> HttpResponse {
    let (mode, format) = (MessageMode::Secure, MessageFormat::Json);
    let Ok(opened) =
        envelope::open_request(&relay.crypto, mode, format, &query, &body, now_secs(), 300)
    else {
        return HttpResponse::Unauthorized().finish();
    };
    let Some(q) = Query::from_document(&opened.doc) else {
        return HttpResponse::BadRequest().finish();
    };
    let lookup = {
        let paths = relay.paths.read().unwrap_or_else(|p| p.into_inner());
        match paths.get(&q.waybill_id) {
            None => Lookup::UnknownWaybill,
            Some(h) if q.receiver_phone.as_deref() != Some(h.receiver_phone.as_str()) => {
                Lookup::PhoneMismatch
            }
            Some(h) => Lookup::Found {
                create_time: h.create_time,
                path: h.path.clone(),
            },
        }
    };
    let reply = build_reply(&q, &relay.original_id, now_secs(), &lookup);
    let nonce = query.nonce.clone().unwrap_or_default();
    let slot = opened
        .key_slot
        .unwrap_or(crate::wechat::crypto::KeySlot::Current);
    match envelope::seal_reply(
        &relay.crypto,
        mode,
        format,
        &reply,
        &nonce,
        now_secs(),
        slot,
    ) {
        Ok(sealed) => HttpResponse::Ok()
            .content_type("application/json; charset=utf-8")
            .body(sealed),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

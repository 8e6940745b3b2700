//! Load-test helper for the reverse-query benchmark (`scripts/bench/reverse_query.sh`).
//!
//! It plays the carrier and WeChat around a running gateway, but never measures anything
//! itself: the load comes from `wrk` in another process.
//!
//! - `seed`: stores N waybills with a five-node path each through `POST /v1/events/batch`.
//! - `requests`: writes pre-signed, pre-encrypted `waybill_notify_query` pushes (secure mode,
//!   JSON) to `PREFIX.1` … `PREFIX.T`, one file per wrk thread, one request per line as
//!   `QUERY<TAB>BODY`. Every request has its own dedupe key (`FromUserName` + `CreateTime` +
//!   `WaybillId`), so each one sent once takes the gateway's fresh path, not the replay path.
//! - `verify`: reads one reply body on stdin, checks `MsgSignature` and `Nonce`, decrypts it,
//!   and checks `ResultCode` 0 and the number of path nodes.
//!
//! WeChat settings and the API key come from the same `WXEXPRESS_*` variables the gateway
//! reads, so both sides always agree.

use std::io::{BufWriter, Read, Write};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use wxexpress::wechat::crypto::MessageCrypto;
use wxexpress::wechat::envelope::{open_reply, seal_request, Document, MessageFormat, MessageMode};

/// Five nodes per waybill: (action_type, hours after creation, action_msg).
const PATH: &[(i64, i64, &str)] = &[
    (
        100001,
        1,
        "【绍兴柯桥营业部】已揽收，揽投员：王师傅 13700001234",
    ),
    (
        200001,
        6,
        "快件离开 【绍兴转运中心】，正在发往 【泉州转运中心】",
    ),
    (200001, 30, "快件到达 【泉州磁灶集散中心】"),
    (
        300002,
        34,
        "【晋江庄宅营业点】快递员 李师傅 13700005678 正在为您派件",
    ),
    (
        300003,
        37,
        "您的快件已签收，签收人：本人。如有疑问请联系派件员",
    ),
];
const WAYBILLS_PER_BATCH: usize = 2000; // 10 000 lines: the gateway's default batch_max_lines

#[derive(Parser)]
#[command(about = "Seeds a running wxexpress and writes reverse-query requests for wrk")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Store N waybills, each with a five-node path.
    Seed {
        /// Gateway base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Backoffice API key (the first one if the variable holds a list).
        #[arg(long, env = "WXEXPRESS_BACKOFFICE__API_KEYS")]
        api_key: String,
        #[arg(long, default_value_t = 10_000)]
        waybills: usize,
    },
    /// Write COUNT unique requests over the first WAYBILLS waybills to PREFIX.1 … PREFIX.THREADS.
    Requests {
        #[command(flatten)]
        wechat: WechatArgs,
        #[arg(long, default_value_t = 10_000)]
        waybills: usize,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long)]
        out: String,
    },
    /// Verify and decrypt one reply body read on stdin.
    Verify {
        #[command(flatten)]
        wechat: WechatArgs,
        /// The nonce of the request (the reply must echo it).
        #[arg(long)]
        nonce: String,
        /// Path nodes the reply must list.
        #[arg(long, default_value_t = PATH.len())]
        nodes: usize,
    },
}

#[derive(clap::Args)]
struct WechatArgs {
    #[arg(long, env = "WXEXPRESS_WECHAT__TOKEN")]
    token: String,
    #[arg(long, env = "WXEXPRESS_WECHAT__APPID")]
    appid: String,
    #[arg(long, env = "WXEXPRESS_WECHAT__ENCODING_AES_KEY")]
    aes_key: String,
    #[arg(long, env = "WXEXPRESS_WECHAT__ORIGINAL_ID")]
    original_id: String,
}

impl WechatArgs {
    fn crypto(&self) -> Result<MessageCrypto> {
        MessageCrypto::new(&self.token, &self.appid, &self.aes_key, None)
            .context("WeChat crypto settings")
    }
}

fn waybill_id(w: usize) -> String {
    format!("SF{:013}", 1_000_000_000_000u64 + w as u64)
}
fn receiver_phone(w: usize) -> String {
    format!("139{:08}", w)
}
fn sender_phone(w: usize) -> String {
    format!("138{:08}", w)
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Seed {
            url,
            api_key,
            waybills,
        } => seed(&url, first_key(&api_key), waybills).await,
        Command::Requests {
            wechat,
            waybills,
            count,
            threads,
            out,
        } => write_requests(&wechat, waybills, count, threads, &out),
        Command::Verify {
            wechat,
            nonce,
            nodes,
        } => verify(&wechat, &nonce, nodes),
    }
}

fn first_key(keys: &str) -> &str {
    keys.split(',').next().unwrap_or_default().trim()
}

async fn seed(url: &str, api_key: &str, waybills: usize) -> Result<()> {
    let client = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    // Created two days ago, so every node lies in the past.
    let create_time = now - 48 * 3600;
    let started = std::time::Instant::now();
    let mut stored = 0usize;
    for first in (0..waybills).step_by(WAYBILLS_PER_BATCH) {
        let mut body = String::new();
        for w in first..(first + WAYBILLS_PER_BATCH).min(waybills) {
            for (n, (action_type, hours, msg)) in PATH.iter().enumerate() {
                let mut line = json!({
                    "waybill_id": waybill_id(w),
                    "event": {"action_type": action_type, "action_time": create_time + hours * 3600, "action_msg": msg},
                });
                if n == 0 {
                    line["waybill"] = json!({
                        "create_time": create_time,
                        "sender": {"name": "张三", "phone": sender_phone(w), "province": "浙江省", "city": "绍兴市", "area": "柯桥区", "address": "纺都路137号"},
                        "receiver": {"name": "李四", "phone": receiver_phone(w), "province": "福建省", "city": "泉州市", "area": "晋江市", "address": "庄宅北区158-6"},
                    });
                }
                body.push_str(&line.to_string());
                body.push('\n');
            }
        }
        let resp = client
            .post(format!("{url}/v1/events/batch"))
            .bearer_auth(api_key)
            .header("Content-Type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .context("sending a batch")?;
        let status = resp.status();
        let report: Value = resp.json().await.context("reading the batch report")?;
        if !status.is_success() || report["rejected"] != 0 {
            bail!("batch starting at waybill {first} failed ({status}): {report}");
        }
        stored += report["accepted"].as_u64().unwrap_or(0) as usize
            + report["duplicates"].as_u64().unwrap_or(0) as usize;
    }
    eprintln!(
        "seeded {waybills} waybills, {stored} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Request i asks about waybill `i % waybills` with `CreateTime = now - i / waybills`, and
/// `FromUserName` carries a per-invocation tag, so keys never repeat within a file nor
/// across invocations against the same database.
fn write_requests(
    wechat: &WechatArgs,
    waybills: usize,
    count: usize,
    threads: usize,
    out: &str,
) -> Result<()> {
    if waybills == 0 || threads == 0 {
        bail!("--waybills and --threads must be positive");
    }
    let crypto = wechat.crypto()?;
    let now = chrono::Utc::now().timestamp();
    let tag: u16 = rand::random();
    let started = std::time::Instant::now();
    let mut files = (1..=threads)
        .map(|t| {
            let path = format!("{out}.{t}");
            std::fs::File::create(&path)
                .with_context(|| format!("creating {path}"))
                .map(BufWriter::new)
        })
        .collect::<Result<Vec<_>>>()?;
    for i in 0..count {
        let w = i % waybills;
        let mut doc = Document::new();
        doc.insert("ToUserName".into(), json!(wechat.original_id));
        // Openids are 28 characters.
        doc.insert(
            "FromUserName".into(),
            json!(format!("oBENCH{tag:04x}{w:018}")),
        );
        doc.insert("CreateTime".into(), json!(now - (i / waybills) as i64));
        doc.insert("MsgType".into(), json!("event"));
        doc.insert("Event".into(), json!("waybill_notify_query"));
        doc.insert("WaybillId".into(), json!(waybill_id(w)));
        doc.insert("SenderPhone".into(), json!(sender_phone(w)));
        doc.insert("ReceiverPhone".into(), json!(receiver_phone(w)));
        let nonce = format!("{}", rand::random::<u32>());
        let (query, body) = seal_request(
            &crypto,
            MessageMode::Secure,
            MessageFormat::Json,
            &doc,
            now,
            &nonce,
        )
        .context("sealing a request")?;
        let f = &mut files[i % threads];
        writeln!(f, "{query}\t{body}")?;
    }
    for mut f in files {
        f.flush()?;
    }
    eprintln!(
        "wrote {count} requests to {out}.1..{threads} in {:.1} s (timestamp {now})",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn verify(wechat: &WechatArgs, nonce: &str, nodes: usize) -> Result<()> {
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body)?;
    let reply = open_reply(
        &wechat.crypto()?,
        MessageMode::Secure,
        MessageFormat::Json,
        &body,
        nonce,
    )
    .context("opening the reply")?;
    let path_len = reply
        .get("Path")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    println!("{}", serde_json::to_string_pretty(&reply)?);
    if reply.get("ResultCode") != Some(&json!(0)) || path_len != nodes {
        bail!(
            "expected ResultCode 0 and {nodes} path nodes, got {:?} and {path_len}",
            reply.get("ResultCode")
        );
    }
    Ok(())
}
